"""`layerprobe probe {wic,polar,linear}`: argparse wiring. `add_probe_parsers(subparsers)` adds the
`probe` command to the main CLI; `main(argv)` runs it standalone (python -m jobs.cli probe ...)."""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import LayerprobeError


def _cmd_wic(args) -> int:
    from jobs.wic import run_wic

    run_wic(store=args.store, out=args.out, fit=args.fit, eval=args.eval, standardize=args.standardize,
            threshold_grid=args.threshold_grid, seed=args.seed)
    return 0


def _cmd_polar(args) -> int:
    from jobs.polar import run_polar

    run_polar(store=args.store, out=args.out, fit=args.fit, eval=args.eval, rank=args.rank, epochs=args.epochs,
              lambda_angle=args.lambda_angle, beta_root=args.beta_root, seed=args.seed,
              relations="full" if args.full_relations else "universal")
    return 0


def _cmd_linear(args) -> int:
    from jobs.linear import run_linear

    run_linear(store=args.store, out=args.out, label=args.label, fit=args.fit, eval=args.eval,
               control=args.control, seed=args.seed)
    return 0


def run_probe_by_name(name: str, *, store, out: str, **options) -> list[dict]:
    """Run one probe with keyword options (as listed under `probes:` in a batch job spec)."""
    if name == "wic":
        from jobs.wic import run_wic as run
    elif name == "polar":
        from jobs.polar import run_polar as run
    elif name == "linear":
        from jobs.linear import run_linear as run
    else:
        raise LayerprobeError(f"unknown probe {name!r}: expected wic, polar or linear")
    try:
        return run(store=store, out=out, **options)
    except TypeError as exc:  # an option the probe doesn't take
        raise LayerprobeError(f"probe {name}: {exc}") from None


def _common(p: argparse.ArgumentParser, fit: str, eval_: str | None) -> None:
    p.add_argument("--store", required=True, help="store path or URL")
    p.add_argument("--fit", default=fit, help=f"split to fit on: a name or a slice like 'dev[:80%%]' (default {fit})")
    p.add_argument("--eval", default=eval_,
                   help="comma-separated splits to score, e.g. 'dev,test' or 'dev[80%%:]' (default: "
                        + (eval_ or "every other labelled split") + ")")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder for <probe>.csv/.json/.png")


def add_probe_parsers(subparsers) -> argparse.ArgumentParser:
    """Add `probe` with sub-commands wic, polar, linear to an argparse subparsers object."""
    probe = subparsers.add_parser("probe", help="run a probe on a store (never loads the model)",
                                  description="Probe every stored layer; writes DIR/<probe>.csv, .json, .png.")
    sub = probe.add_subparsers(dest="probe", metavar="{wic,polar,linear}")
    sub.required = True

    p = sub.add_parser("wic", help="Word-in-Context: cosine of target vectors, threshold fit per layer")
    _common(p, "train", None)
    p.add_argument("--standardize", choices=["global", "batch", "none"], default="global",
                   help="anisotropy removal: global (fit statistics), batch (per 30 pairs, as in "
                        "'Fantastic Semantics'), none")
    p.add_argument("--threshold-grid", type=float, default=None, metavar="STEP",
                   help="search the threshold on a grid of this step in [-1, 1] (default: observed midpoints)")
    p.set_defaults(func=_cmd_wic)

    p = sub.add_parser("polar", help="polar probe (and the structural-probe baseline) on dependency trees")
    _common(p, "dev", "test")
    p.add_argument("--rank", type=int, default=128)
    p.add_argument("--epochs", type=int, default=100, help="at most; training stops early when the fit loss stalls")
    p.add_argument("--lambda-angle", type=float, default=0.01)
    p.add_argument("--beta-root", type=float, default=0.01)
    p.add_argument("--full-relations", action="store_true",
                   help="keep relation subtypes (nmod:poss) instead of the universal part")
    p.set_defaults(func=_cmd_polar)

    p = sub.add_parser("linear", help="logistic-regression probe of word or example labels")
    _common(p, "dev", "test")
    p.add_argument("--label", required=True, help="upos, deprel, or another label column of the examples")
    p.add_argument("--control", action="store_true", help="also run the Hewitt & Liang control task")
    p.set_defaults(func=_cmd_linear)
    return probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="layerprobe")
    add_probe_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LayerprobeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
