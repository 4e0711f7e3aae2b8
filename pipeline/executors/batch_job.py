"""`layerprobe run JOB.yaml`: extract every model x dataset x variant into
ROOT/<model>/<dataset>/<variant>.zarr (names from the last path component), skipping finished
stores, then run the listed probes on each. A failed combination doesn't stop the others."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline.errors import LayerprobeError
from schemas.job import BatchJobSpec, ExtractSpec

log = logging.getLogger(__name__)


def load_job(path: str) -> BatchJobSpec:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise LayerprobeError(f"job spec not found: {path}") from None
    except yaml.YAMLError as exc:
        raise LayerprobeError(f"job spec {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise LayerprobeError(f"job spec {path} must be a mapping with output, models, datasets")
    try:
        return BatchJobSpec.model_validate(raw)
    except ValidationError as exc:
        from pipeline.cli import format_validation_error

        raise LayerprobeError(f"job spec {path}: {format_validation_error(exc)}") from None


def component_name(path: str) -> str:
    """The last path component without its suffix: models/llama-3 -> llama-3, data/wic -> wic."""
    name = Path(path.rstrip("/")).name
    for suffix in (".gguf", ".jsonl", ".json", ".csv", ".parquet", ".conllu"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_root(job: BatchJobSpec) -> str:
    """URLs stay as they are; a local output becomes absolute on the driver, so Ray workers on other
    machines (or a `ray job submit` working dir) write to the same shared path."""
    if "://" in job.output:
        return job.output.rstrip("/")
    return str(Path(job.output).expanduser().resolve())


def store_path(job: BatchJobSpec, model: str, dataset: str, variant: str) -> str:
    # String joins, not Path: Path("s3://b/x") would collapse the scheme's double slash.
    return "/".join([output_root(job), component_name(model), component_name(dataset), f"{variant}.zarr"])


# Which stores each probe reads: WiC pairs, or CoNLL-U trees/labels. Other combinations are skipped
# (a job may list both WiC and UD datasets with both probes).
PROBE_SOURCES = {"wic": {"wic"}, "polar": {"conllu"}, "linear": {"conllu", "text"}}


def run_batch_job(job_path: str, *, ray_address: str | None = None, executor: str = "ray",
                  progress: bool = True) -> list[str]:
    """Run every combination; returns the names of the failed ones (also printed in the summary)."""
    from pipeline.executors.extract_job import run_extract

    job = load_job(job_path)
    base_dir = Path(job_path).resolve().parent
    combos = [(m, d, v) for m in job.models for d in job.datasets for v in job.variants]
    names = [f"{component_name(m)}/{component_name(d)}/{v}" for m, d, v in combos]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise LayerprobeError(f"job spec {job_path}: two entries map to the same store {clashes[0]!r} "
                              "(store names come from the last path component); rename or move one")
    if executor == "ray":
        from pipeline.executors.ray_executor import ensure_ray

        ensure_ray(ray_address)  # one Ray session for every combination
    lines, failures = [], []
    for model, dataset, variant in combos:
        name = f"{component_name(model)}/{component_name(dataset)}/{variant}"
        out = store_path(job, model, dataset, variant)
        try:
            spec = ExtractSpec(
                model=_resolve(model, base_dir), data=_resolve(dataset, base_dir), out=out, variant=variant,
                layers=job.layers, dtype=job.dtype, keep=job.keep, format=job.format,
                text_column=job.text_column, batch_tokens=job.batch_tokens, shard_tokens=job.shard_tokens,
                max_length=job.max_length, model_dtype=job.model_dtype, device=job.device, codec=job.codec,
                trust_remote_code=job.trust_remote_code, limit=job.limit,
            )
            result = run_extract(spec, executor=executor, workers=job.workers, ray_address=ray_address,
                                 progress=progress)
            lines.append(f"ok      {name}: {result.summary()}")
            source_format = _source_format(out)
            for probe in job.probes:
                if source_format not in PROBE_SOURCES[probe.name]:
                    lines.append(f"skipped {name}: probe {probe.name} (needs a "
                                 f"{'/'.join(sorted(PROBE_SOURCES[probe.name]))} store, this is {source_format})")
                    continue
                probe_out = out[: -len(".zarr")] + f"-probes/{probe.name}"
                _run_probe(probe, out, probe_out)
                lines.append(f"ok      {name}: probe {probe.name} -> {probe_out}")
        except (LayerprobeError, ValidationError) as exc:
            msg = str(exc).splitlines()[0] if isinstance(exc, LayerprobeError) else exc.errors()[0]["msg"]
            failures.append(name)
            lines.append(f"FAILED  {name}: {msg}")
            log.error("%s failed: %s", name, msg)
    print(f"batch job {job_path}: {len(combos) - len(failures)} of {len(combos)} combinations succeeded")
    print("\n".join(lines))
    return failures


def _resolve(path: str, base_dir: Path) -> str:
    """Relative paths in a job spec are relative to the spec's folder, unless they exist from the
    current directory (or are not paths: `default`, hub names)."""
    if path == "default" or Path(path).is_absolute() or Path(path).exists():
        return path
    candidate = base_dir / path
    return str(candidate) if candidate.exists() else path


def _source_format(store: str) -> str:
    from pipeline.store import open_store

    return open_store(store).manifest["source"]["format"]


def _run_probe(probe, store: str, out_dir: str) -> None:
    from jobs.cli import run_probe_by_name

    run_probe_by_name(probe.name, store=store, out=out_dir, **probe.options)
