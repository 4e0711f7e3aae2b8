"""argparse sub-commands: inspect, validate, copy, export. Added to `layerprobe` by pipeline/cli.py."""

from __future__ import annotations

import argparse
import json
import sys


_SO_HELP = ("fsspec storage option for remote URLs, key=value, repeatable (values parse as JSON when "
            "they can; dotted keys nest). For S3-compatible servers: endpoint_url=http://host:9000 "
            "(moved under client_kwargs for s3fs). Credentials come from the usual env vars/config.")


def _opts(args, attr: str = "storage_option") -> dict:
    from pipeline.sharing.common import parse_storage_options

    return parse_storage_options(getattr(args, attr, None))


def _inspect(args) -> int:
    from pipeline.sharing.inspect import format_inspect, inspect_store

    info = inspect_store(args.store, _opts(args))
    print(json.dumps(info, indent=1, default=str) if args.json else format_inspect(info, all_shards=args.all_shards))
    return 0


def _print_report(rep, limit: int) -> None:
    for p in rep.problems[:limit]:
        print(f"  {p}")
    if len(rep.problems) > limit:
        print(f"  ... and {len(rep.problems) - limit} more")
    print(rep.summary())


def _validate(args) -> int:
    from pipeline.sharing.validate import validate_store

    rep = validate_store(args.store, _opts(args), check_static=not args.skip_static)
    _print_report(rep, args.max_problems)
    return 0 if rep.ok else 1


def _copy(args) -> int:
    from pipeline.sharing.copy import copy_store

    common = _opts(args)
    src_o = {**common, **_opts(args, "src_storage_option")}
    dst_o = {**common, **_opts(args, "dst_storage_option")}
    res = copy_store(args.src, args.dst, src_options=src_o, dst_options=dst_o, overwrite=args.overwrite)
    if not res.report.ok:
        _print_report(res.report, 20)
        after = ("the existing store there was left unchanged" if res.kept_existing else
                 "the damaged copy was removed" if res.removed_copy else "")
        if res.source_damaged:
            head = (f"the source {args.src} is damaged ({len(res.report.problems)} problem(s) above; "
                    f"`layerprobe validate {args.src}` lists them): a copy cannot repair it")
        else:
            head = f"copy to {args.dst} failed verification ({len(res.report.problems)} problem(s))"
        print(f"layerprobe: error: {head}{'; ' + after if after else ''}", file=sys.stderr)
        return 1
    print(f"copied {res.n_keys} keys ({res.n_bytes:,} bytes) {args.src} -> {args.dst}; verified: "
          f"{res.report.summary()}")
    return 0


def _export(args) -> int:
    from pipeline.sharing.export import export_layer

    res = export_layer(args.store, args.layer, args.to, rows=args.rows, overwrite=args.overwrite,
                       storage_options=_opts(args))
    print(f"exported layer {args.layer}: {res.n_rows} rows x {res.d_model} ({res.dtype}) -> {res.out} ({res.kind})")
    return 0


def _count_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return n


def _export_layer_arg(value: str):
    if value == "static":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected an HF hidden_states index (0 = embeddings) or 'static'") from None


def add_sharing_parsers(sub) -> None:
    def so(p):
        p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", help=_SO_HELP)

    p = sub.add_parser("inspect", help="what a store holds: model, dataset, layers, size, completeness")
    p.add_argument("store", help="store path or URL (file://, http(s)://, s3://)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all-shards", action="store_true", help="list every shard even when there are many")
    so(p)
    p.set_defaults(func=_inspect)

    p = sub.add_parser("validate", help="re-hash every chunk and table against the commit records")
    p.add_argument("store", help="store path or URL (file://, http(s)://, s3://)")
    p.add_argument("--skip-static", action="store_true", help="don't check the static embeddings")
    p.add_argument("--max-problems", type=_count_arg, default=50, help="problems to print (all are counted)")
    so(p)
    p.set_defaults(func=_validate)

    p = sub.add_parser("copy", help="copy a store between local paths and URLs, then validate the copy")
    p.add_argument("src", help="store path or URL to copy")
    p.add_argument("dst", help="local path or object store URL (s3://, gs://, ...) to copy to")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing layerprobe store at DST (anything else there is refused)")
    so(p)
    p.add_argument("--src-storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="like --storage-option, for SRC only")
    p.add_argument("--dst-storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="like --storage-option, for DST only")
    p.set_defaults(func=_copy)

    p = sub.add_parser("export", help="one layer's vectors + token metadata -> Parquet or a datasets dir")
    p.add_argument("store", help="store path or URL (file://, http(s)://, s3://)")
    p.add_argument("--layer", type=_export_layer_arg, required=True,
                   help="HF hidden_states index (0 = embeddings), or 'static': each token's row of "
                        "static_embeddings (the input-embedding table), as the probes' layer 'static'")
    p.add_argument("--to", required=True,
                   help="FILE.parquet, or a directory (no file extension, or ending in /) for "
                        "datasets.save_to_disk; other extensions (.csv, .json, ...) are refused")
    p.add_argument("--rows", default="all", choices=["all", "targets"], help="all tokens, or only is_target ones")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous export at --to (a .parquet file or a datasets export "
                        "directory; anything else is refused)")
    so(p)
    p.set_defaults(func=_export)


