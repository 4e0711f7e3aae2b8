"""`layerprobe probe {wic,polar,linear}`: argparse wiring. `add_probe_parsers(subparsers)` adds the
`probe` command to the main CLI; `main(argv)` runs it standalone (python -m jobs.cli probe ...)."""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.errors import LayerprobeError


def _run(probe, out: str, **options) -> int:
    """Run a probe into --out. The probe creates --out first (to fail fast on an unwritable one);
    a run refused after that leaves no empty folder of its making behind."""
    existed = os.path.lexists(out)
    try:
        probe(out=out, **options)
    except LayerprobeError:
        if not existed and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
        raise
    return 0


def _cmd_wic(args) -> int:
    from jobs.wic import run_wic

    return _run(run_wic, args.out, store=args.store, fit=args.fit, eval=args.eval, standardize=args.standardize,
                threshold_grid=args.threshold_grid, seed=args.seed)


def _cmd_polar(args) -> int:
    from jobs.polar import run_polar

    return _run(run_polar, args.out, store=args.store, fit=args.fit, eval=args.eval, rank=args.rank,
                epochs=args.epochs, lambda_angle=args.lambda_angle, beta_root=args.beta_root, seed=args.seed,
                relations="full" if args.full_relations else "universal", include_punct=args.include_punct)


def _cmd_linear(args) -> int:
    from jobs.linear import run_linear

    return _run(run_linear, args.out, store=args.store, label=args.label, fit=args.fit, eval=args.eval,
                control=args.control, seed=args.seed)


def _common(p: argparse.ArgumentParser, fit: str, eval_: str | None) -> None:
    p.add_argument("--store", required=True, help="store path or URL")
    p.add_argument("--fit", default=fit, help=f"split to fit on: a name or a slice like 'dev[:80%%]' (default {fit})")
    p.add_argument("--eval", default=eval_,
                   help="comma-separated splits to score, e.g. 'dev,test' or 'dev[80%%:]' (default: "
                        + (eval_ or "every labelled split the fit selection does not draw from") + "); an eval "
                        "selection sharing units with the fit selection is refused")
    p.add_argument("--seed", type=int, default=0, help="random seed, an integer in [0, 2**32 - 1] (default 0)")
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
                   help="anisotropy removal: global (z-score with the fit split's per-dimension mean/std), "
                        "batch (as the 'Fantastic Semantics' reference code: consecutive batches of 30 pairs, "
                        "each side's 30 vectors z-scored with their own statistics, not both sides pooled; a "
                        "final batch under 15 pairs joins the previous one), none")
    p.add_argument("--threshold-grid", type=float, default=None, metavar="STEP",
                   help="search the threshold on a grid of this step (1e-6 to 2) in [-1, 1] (default: observed "
                        "midpoints, the exact best threshold)")
    p.set_defaults(func=_cmd_wic)

    p = sub.add_parser("polar", help="polar probe (and the structural-probe baseline) on dependency trees")
    _common(p, "dev", "test")
    # defaults live in jobs.polar (imported lazily there: torch); these mirror them
    p.add_argument("--rank", type=int, default=128, help="probe rank >= 1, capped at the model width (default 128)")
    p.add_argument("--epochs", type=int, default=100,
                   help="at most this many (>= 1; default 100); training stops when the loss on a held-out "
                        "10%% of the fit sentences stalls")
    p.add_argument("--lambda-angle", type=float, default=1.0,
                   help="weight of the angle term, both terms divided by their value at initialisation; "
                        "0 = structural probe only (default 1.0, chosen on held-out EWT dev)")
    p.add_argument("--beta-root", type=float, default=0.01, help="weight of the depth term (default 0.01)")
    p.add_argument("--full-relations", action="store_true",
                   help="keep relation subtypes (nmod:poss) instead of the universal part")
    p.add_argument("--include-punct", action="store_true",
                   help="score punctuation words too (default: words with UPOS PUNCT are left out of UUAS, "
                        "UAS, LAS and label accuracy, as Hewitt & Manning do; DSpr and training always use "
                        "every word, as their evaluation code does)")
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
