"""`layerprobe run JOB.yaml`: extract every model x dataset x variant into
ROOT/<model>/<dataset>/<variant>.zarr (names from the last path component), skipping finished
stores, then run the listed probes on each. A failed combination doesn't stop the others."""

from __future__ import annotations

import codecs
import importlib
import inspect
import logging
import re
import typing
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline.errors import LayerprobeError, OutTaken, StoreError, one_line
from schemas.job import BatchJobSpec, ExtractSpec

log = logging.getLogger(__name__)

# Byte order marks a Windows editor may write ("Unicode" = UTF-16 LE). UTF-32 LE's mark starts with
# UTF-16 LE's, so it is tried first; the utf-16/utf-32 codecs read the mark and drop it.
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def _read_text(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise LayerprobeError(f"job spec not found: {path}") from None
    except OSError as exc:  # a directory, no permission
        raise LayerprobeError(f"cannot read job spec {path}: {exc.strerror or exc}") from None
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise LayerprobeError(f"job spec {path} is not {encoding.upper().replace('-SIG', '')} text (byte "
                              f"0x{exc.object[exc.start]:02x} at offset {exc.start}): save it as UTF-8") from None
    if "\0" in text:  # ASCII saved as UTF-16/32 without a byte order mark decodes as UTF-8 with NULs
        raise LayerprobeError(f"job spec {path} contains NUL bytes (UTF-16 without a byte order mark?): "
                              "save it as UTF-8")
    return text


def _yaml_error(exc: yaml.YAMLError, text: str) -> str:
    """One line that says where: yaml's own str() spreads the problem, its context and their marks
    over several lines, and its first line alone ("while parsing a flow sequence") says neither."""
    def at(mark) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        msg = f"{at(mark)}: " if mark else ""
        msg += exc.problem or exc.context or type(exc).__name__
        if exc.problem and exc.context:
            msg += f" ({exc.context}" + (f" at {at(exc.context_mark)})" if exc.context_mark else ")")
    elif isinstance(exc, yaml.reader.ReaderError):  # a control character; it knows only its offset
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        msg = f"line {line}, column {column}: {str(exc).splitlines()[0]}"
    else:
        msg = str(exc)
    return " ".join(msg.split())


def load_job(path: str) -> BatchJobSpec:
    text = _read_text(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LayerprobeError(f"job spec {path} is not valid YAML: {_yaml_error(exc, text)}") from None
    if not isinstance(raw, dict):
        raise LayerprobeError(f"job spec {path} must be a mapping with output, models, datasets")
    try:
        job = BatchJobSpec.model_validate(raw)
    except ValidationError as exc:
        from pipeline.cli import format_validation_error

        raise LayerprobeError(f"job spec {path}: {format_validation_error(exc)}") from None
    for probe in job.probes:
        problem = probe_option_problem(probe.name, probe.options) or probe_split_problem(probe.name, probe.options)
        if problem:
            raise LayerprobeError(f"job spec {path}: {problem}")
    return job


# The function each probe name runs. Imported only to read its signature or run it: the jobs modules
# import numpy/scipy at most at import time (torch, sklearn and the store readers load inside the
# functions), so checking options costs well under a second.
PROBE_FUNCTIONS = {"wic": ("jobs.wic", "run_wic"), "polar": ("jobs.polar", "run_polar"),
                   "linear": ("jobs.linear", "run_linear")}
# Set by the job for each store, not by the user.
_SET_BY_JOB = ("store", "out")


def probe_function(name: str):
    module, func = PROBE_FUNCTIONS[name]
    return getattr(importlib.import_module(module), func)


def probe_option_problem(name: str, options: dict) -> str | None:
    """What is wrong with a probe's options, judged by the keyword arguments its function takes, or
    None. Checked before any extraction: a typo would otherwise surface only once every store is
    written, and from inside the probe as a TypeError indistinguishable from a bug."""
    params = inspect.signature(probe_function(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None  # takes anything: the function does its own checking
    accepted = [n for n, p in params.items() if n not in _SET_BY_JOB
                and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    set_by_job = [k for k in options if k in _SET_BY_JOB]
    if set_by_job:
        return (f"probe {name}: option {set_by_job[0]!r} is set by the job (each store's "
                "<variant>-probes/<probe> folder); remove it")
    unknown = [k for k in options if k not in accepted]
    if unknown:
        return (f"probe {name} has no option {', '.join(repr(k) for k in unknown)} "
                f"(valid options: {', '.join(accepted)})")
    missing = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in options]
    if missing:
        return f"probe {name} needs option {', '.join(repr(k) for k in missing)}"
    return _option_type_problem(name, options) or _option_value_problem(name, options)


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _option_type_problem(name: str, options: dict) -> str | None:
    """An option whose YAML value is not of the type the probe function declares (`epochs: ten`,
    `layers: "0,3"`), or None. Strict: YAML's `yes` is not an int and "10" is not a number."""
    from pydantic import TypeAdapter

    hints = typing.get_type_hints(probe_function(name))
    for key, value in options.items():
        try:
            TypeAdapter(hints.get(key, typing.Any)).validate_python(value, strict=True)
        except ValidationError:
            return (f"probe {name}: option {key!r} must be {_type_name(hints[key])}, got {value!r}"
                    + _yaml_hint(value))
    return None


def _yaml_hint(value) -> str:
    """YAML's own readings that look like the user's mistake but are not."""
    if isinstance(value, bool):
        return " (YAML reads yes/no/on/off/true/false as booleans: quote the value for text)"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads quoted numbers, and 1e-3 without a dot, as text: write it unquoted, e.g. 1.0e-3)"
    return ""


def _option_value_problem(name: str, options: dict) -> str | None:
    """A value the probe would refuse once it starts (`rank: 0`, `standardize: zscore`), judged by the
    probe module's own pure `check_settings` on the job's options over the function's defaults."""
    check = getattr(importlib.import_module(PROBE_FUNCTIONS[name][0]), "check_settings", None)
    if check is None:
        return None
    params = inspect.signature(probe_function(name)).parameters
    settings = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    settings.update(options)
    takes = inspect.signature(check).parameters
    try:
        check(**{k: v for k, v in settings.items() if k in takes})
    except LayerprobeError as exc:
        return f"probe {name}: {exc}"
    return None


def probe_split_problem(name: str, options: dict) -> str | None:
    """An eval selection that shares units with the fit selection whatever the data (the probe
    itself refuses every overlap, but only after the stores are extracted), or None."""
    from jobs.splits import certain_overlaps, parse_selector_list

    params = inspect.signature(probe_function(name)).parameters
    fit = options.get("fit", params["fit"].default)
    evals = options.get("eval", params["eval"].default)
    if evals is None:
        return None  # the probe's default: every split the fit selection does not draw from
    try:
        leaking = certain_overlaps(fit, parse_selector_list(evals) if isinstance(evals, str) else list(evals))
    except LayerprobeError as exc:
        return f"probe {name}: {exc}"
    if leaking:
        return (f"probe {name}: eval selection {leaking[0]!r} shares units with fit selection {fit!r}: scoring "
                "on what was fitted would inflate the result; pick disjoint selections")
    return None


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
                model=_resolve(model, base_dir), data=_resolve_data(dataset, base_dir), out=out, variant=variant,
                layers=job.layers, dtype=job.dtype, keep=job.keep, format=job.format,
                text_column=job.text_column, batch_tokens=job.batch_tokens, shard_tokens=job.shard_tokens,
                max_length=job.max_length, model_dtype=job.model_dtype, device=job.device, codec=job.codec,
                trust_remote_code=job.trust_remote_code, limit=job.limit,
            )
            try:
                result = run_extract(spec, executor=executor, workers=job.workers, ray_address=ray_address,
                                     progress=progress)
            except OutTaken as exc:
                raise _for_run(exc, out) from None
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
        except Exception as exc:  # noqa: BLE001 - a bug in one combination: the others still run
            # (an overnight job over several models must not lose them to one), and its traceback
            # is logged in full: it is a defect to report, not a user error.
            failures.append(name)
            lines.append(f"FAILED  {name}: unexpected {one_line(exc)} (a defect: its traceback is in the log above)")
            log.exception("%s failed with an unexpected error", name)
    print(f"batch job {job_path}: {len(combos) - len(failures)} of {len(combos)} combinations succeeded")
    print("\n".join(lines))
    return failures


def _resolve(path: str, base_dir: Path) -> str:
    """Relative paths in a job spec are relative to the spec's folder, unless they exist from the
    current directory (or are not paths: `default`, hub names)."""
    if path == "default" or Path(path).is_absolute() or Path(path).exists():
        return path
    candidate = base_dir / path
    return str(candidate.resolve()) if candidate.exists() else path


def _resolve_data(path: str, base_dir: Path) -> str:
    """A dataset path as _resolve finds it; one that is in neither place names both."""
    found = _resolve(path, base_dir)
    if found == path and not Path(path).exists():
        raise LayerprobeError(f"dataset {path!r} not found: neither {Path.cwd() / path} nor {base_dir / path} "
                              "exists (relative dataset paths are looked up from the current directory, "
                              "then from the job file's folder)")
    return found


def _for_run(exc: OutTaken, out: str) -> StoreError:
    """extract's refusal to reuse an existing path gives advice in its own flags (a new --out, or
    --overwrite), which a job has neither of. A job deliberately has no `overwrite` field: it resumes
    and skips its own stores, so overwriting would re-extract every store on every re-run."""
    if exc.kind == "not_a_store":
        return StoreError(f"{out} already exists and is not a layerprobe store; a job never replaces it: "
                          f"set the job's output to another folder, or move {out} away")
    return StoreError(f"{out} holds a store from another configuration ({exc.detail}); a job never replaces "
                      "a store: set the job's output to another folder, or delete that store to extract it again")


def _source_format(store: str) -> str:
    from pipeline.store import open_store

    return open_store(store).manifest["source"]["format"]


def _run_probe(probe, store: str, out_dir: str) -> None:
    # Called directly, not through jobs.cli.run_probe_by_name: that turns every TypeError into a
    # "bad option" message, hiding real bugs; the options were already checked by load_job, so a
    # TypeError here is a bug and keeps its traceback.
    try:
        probe_function(probe.name)(store=store, out=out_dir, **probe.options)
    except LayerprobeError as exc:
        # A probe's advice names its CLI flags (pass --eval ...); a job sets them as options.
        raise LayerprobeError(_flags_as_options(str(exc), probe.name)) from None


def _flags_as_options(message: str, probe: str) -> str:
    """'pass --eval, e.g. --fit X --eval Y' -> 'set the eval option, e.g. fit: X, eval: Y' for a job's probe."""
    message = message.replace("pass e.g. --", "set e.g. --")
    message = re.sub(r"\bpass --([a-z][a-z-]*)", lambda m: f"set the {probe} probe's {m.group(1).replace('-', '_')} option",
                     message)
    return re.sub(r"--([a-z][a-z-]*) ", lambda m: f"{m.group(1).replace('-', '_')}: ", message)
