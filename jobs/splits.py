"""Split selectors: `train`, `dev[:80%]`, `dev[80%:]`, `dev[10:50]`, `train+dev`, `all`.

A selector picks *units* (examples, or WiC pairs so a pair is never separated) by the split name
of each unit, in unit order; a bracketed slice follows the `datasets` syntax (percent boundaries
rounded to the closest unit, as `datasets` does by default; negative boundaries count from the
end). `all` means every unit (the only choice for stores without a `split` column). The parts of
`A+B` must be disjoint: a selector picking a unit twice (`train+train`, `dev[:60%]+dev[40%:]`,
`all+dev`) is refused rather than counting it twice, and so is an eval list naming one selection
twice (`dev,dev`: the same rows scored and written twice).

Fit and eval selections must not share units: `select_fit_eval` (or `check_disjoint`, for probes
that select themselves) refuses an eval selection that overlaps the fit selection, naming both
selectors and the number of shared units; `default_evals` lists the splits a fit selector does not
touch (by parsed split name, so `train[:80%]` excludes all of `train`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.errors import LayerprobeError

_PART = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[\s*([^\]:]*)\s*:\s*([^\]:]*)\s*\])?\s*$")
_BOUND = re.compile(r"^(-?\d+)(%?)$")


@dataclass(frozen=True)
class SplitPart:
    name: str
    start: str = ""   # '' | '80%' | '-10' ...
    stop: str = ""

    def bounds(self, n: int) -> tuple[int, int]:
        return _bound(self.start, n, 0), _bound(self.stop, n, n)

    def __str__(self) -> str:
        return f"{self.name}[{self.start}:{self.stop}]" if self.start or self.stop else self.name


def _bound(text: str, n: int, default: int) -> int:
    if text == "":
        return default
    m = _BOUND.match(text.strip())
    if not m:
        raise LayerprobeError(f"bad slice boundary {text!r}: use an integer or a percentage like 80%")
    val = int(m.group(1))
    if m.group(2):
        if not -100 <= val <= 100:
            raise LayerprobeError(f"bad slice boundary {text!r}: percentages lie in [-100%, 100%]")
        val = int(round(val * n / 100.0))
    if val < 0:
        val += n
    return min(max(val, 0), n)


def parse_selector(text: str) -> list[SplitPart]:
    """'dev[:80%]+test' -> [SplitPart('dev', '', '80%'), SplitPart('test')]."""
    if not text or not text.strip():
        raise LayerprobeError("empty split selector")
    parts = []
    for piece in text.split("+"):
        m = _PART.match(piece)
        if not m:
            raise LayerprobeError(
                f"bad split selector {text!r}: expected NAME, NAME[START:STOP] (e.g. dev[:80%]) or A+B"
            )
        parts.append(SplitPart(m.group(1), (m.group(2) or "").strip(), (m.group(3) or "").strip()))
    for i, a in enumerate(parts):
        for b in parts[:i]:
            if _certainly_overlap(a, b):
                _refuse_repeat(text, b, a)
    return parts


def _refuse_repeat(text: str, a: SplitPart, b: SplitPart, n_shared: int | None = None) -> None:
    what = "units" if n_shared is None else f"{n_shared:,} unit{'s' if n_shared != 1 else ''}"
    why = f"it names {str(a)!r} twice" if a == b else f"its parts {str(a)!r} and {str(b)!r} overlap"
    raise LayerprobeError(
        f"split selector {text!r} picks {what} twice ({why}): '+' joins disjoint parts, and a unit picked "
        "twice would be counted twice; drop the repeat or make the slices disjoint (e.g. dev[:50%]+dev[50%:])")


def parse_selector_list(text: str) -> list[str]:
    """'dev,test' -> ['dev', 'test'] (each checked by parse_selector)."""
    sels = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not sels:
        raise LayerprobeError("no split given")
    seen: dict[tuple, str] = {}
    for s in sels:
        key = tuple(parse_selector(s))
        if key in seen:
            _refuse_duplicate_eval(seen[key], s)
        seen[key] = s
    return sels


def _refuse_duplicate_eval(a: str, b: str, n: int | None = None, unit: str = "units") -> None:
    same = f"{a!r} twice" if a == b else f"{a!r} and {b!r}, the same selection" + (
        f" ({n:,} {unit})" if n is not None else "")
    raise LayerprobeError(f"eval selections name {same}: each would be scored and written twice; drop the repeat")


def select_units(unit_splits: Sequence[str | None], selector: str) -> np.ndarray:
    """Indices (ascending within each part, parts concatenated) of the units the selector picks.

    unit_splits[i] is the split name of unit i (None everywhere when the store has no split column:
    then only `all` works)."""
    arr = np.asarray([("" if x is None else str(x)) for x in unit_splits], dtype=object)
    available = sorted(set(arr.tolist()) - {""})
    out = []
    for part in parse_selector(selector):
        if part.name == "all" and "all" not in available:
            idx = np.arange(len(arr))
        elif part.name in available:
            idx = np.flatnonzero(arr == part.name)
        elif not available:
            raise LayerprobeError(
                f"unknown split {part.name!r}: this store has no split column; use 'all' "
                "(optionally sliced, e.g. all[:80%])"
            )
        else:
            raise LayerprobeError(
                f"unknown split {part.name!r}; the store has: {', '.join(available)} (or 'all')"
            )
        a, b = part.bounds(len(idx))
        out.append(idx[a:b])
    for i in range(1, len(out)):  # parts that overlap only in this store's units (dev[:200]+dev[-150:])
        for j in range(i):
            shared = np.intersect1d(out[i], out[j])
            if len(shared):
                parts = parse_selector(selector)
                _refuse_repeat(selector, parts[j], parts[i], len(shared))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def example_splits(examples) -> list[str | None]:
    """The split name of each example (all None if the store has no split column)."""
    if "split" not in examples.column_names:
        return [None] * examples.num_rows
    return examples.column("split").to_pylist()


def _fraction_interval(part: SplitPart) -> tuple[float, float] | None:
    """The slice as fractions of its split, or None when a bound is a unit count (unknown here)."""
    out = []
    for text, default in ((part.start, 0.0), (part.stop, 1.0)):
        if text == "":
            out.append(default)
            continue
        m = _BOUND.match(text.strip())
        if not m or not m.group(2):
            return None
        val = int(m.group(1)) / 100.0
        out.append(min(max(val + 1.0 if val < 0 else val, 0.0), 1.0))
    return out[0], out[1]


def _certainly_overlap(a: SplitPart, b: SplitPart) -> bool:
    """Whether two parts share units whatever the store holds: the same split (or `all`) with
    overlapping whole or percentage slices (unit-count slices, dev[:100], are not known here)."""
    if a.name != b.name and "all" not in (a.name, b.name):
        return False
    ia, ib = _fraction_interval(a), _fraction_interval(b)
    if a.name != b.name:  # a whole `all` holds every unit of any non-empty slice
        whole, other = (ia, ib) if a.name == "all" else (ib, ia)
        return whole == (0.0, 1.0) and other is not None and other[1] - other[0] > 1e-9
    if a == b:
        return True  # the same part twice, even a unit-count slice
    return ia is not None and ib is not None and min(ia[1], ib[1]) - max(ia[0], ib[0]) > 1e-9


def certain_overlaps(fit: str, evals: Sequence[str]) -> list[str]:
    """The eval selectors that share units with the fit selector whatever the store holds: the same
    split (or `all`) with overlapping whole or percentage slices. Lets a job refuse a leaking probe
    before extracting anything; unit-count slices (dev[:100]) are left to check_disjoint."""
    fit_parts = parse_selector(fit)
    return [sel for sel in evals if any(_certainly_overlap(a, b) for a in fit_parts for b in parse_selector(sel))]


def split_names(selector: str) -> list[str]:
    """The split names a selector draws from: 'train[:80%]+dev' -> ['train', 'dev']."""
    return list(dict.fromkeys(p.name for p in parse_selector(selector)))


def default_evals(available: Sequence[str], fit: str,
                  preferred: Sequence[str] = ("train", "dev", "validation", "test")) -> list[str]:
    """The splits of `available` that the fit selector does not draw from at all (by parsed split
    name: a fit of `train[:80%]` excludes the whole of `train`; a fit of `all` excludes everything),
    the usual names first in `preferred` order, then the others sorted."""
    used = set(split_names(fit))
    if "all" in used and "all" not in available:
        return []
    avail = [a for a in dict.fromkeys(available) if a and a not in used]
    return [a for a in preferred if a in avail] + sorted(a for a in avail if a not in preferred)


def check_eval_splits_exist(unit_splits: Sequence[str | None], fit: str, evals: Sequence[str]) -> None:
    """Refuse an eval selection naming a split the store lacks, saying what to pass instead (polar
    and linear default to --eval test, which e.g. the bundled dev-only treebank sample has not)."""
    available = sorted({str(s) for s in unit_splits if s is not None})
    def absent(sel: str) -> list[str]:
        return [n for n in split_names(sel) if n not in available and n != "all"]

    missing = [n for sel in evals for n in absent(sel)]
    if not missing or not available or absent(fit):
        return  # select_units says it: use 'all' (no split column), or the fit split is unknown
    others = default_evals(available, fit)
    name = split_names(fit)[0]
    hint = f"--eval {','.join(others)}" if others else f"--fit '{name}[:80%]' --eval '{name}[80%:]'"
    raise LayerprobeError(f"no {missing[0]!r} split to evaluate on; the store has: {', '.join(available)}; "
                          f"pass e.g. {hint}")


def check_disjoint(unit_splits: Sequence[str | None], fit: str, evals: Sequence[str],
                   unit: str = "units") -> None:
    """Raise LayerprobeError if any eval selector picks a unit that the fit selector picks.

    A unit is whatever the probe keeps together (a WiC pair, a sentence); the message names both
    selectors and the number of shared units."""
    fit_idx = select_units(unit_splits, fit)
    _refuse_overlap(fit, fit_idx, [(sel, select_units(unit_splits, sel)) for sel in evals], unit)


def select_fit_eval(unit_splits: Sequence[str | None], fit: str, evals: Sequence[str],
                    unit: str = "units") -> tuple[np.ndarray, list[np.ndarray]]:
    """(fit indices, [indices of each eval selector]), refusing eval selections that share units
    with the fit selection (see check_disjoint)."""
    fit_idx = select_units(unit_splits, fit)
    eval_idx = [(sel, select_units(unit_splits, sel)) for sel in evals]
    _refuse_overlap(fit, fit_idx, eval_idx, unit)
    return fit_idx, [idx for _, idx in eval_idx]


def refuse_shared_groups(fit: str, fit_groups: np.ndarray, evals: list[tuple[str, np.ndarray]],
                         unit: str) -> None:
    """select_fit_eval's refusal for groups of the selected units, given as one group id per
    selected unit (a WiC pair's two examples, selected by example: a slice can cut a pair)."""
    _refuse_overlap(fit, np.asarray(fit_groups), [(sel, np.asarray(g)) for sel, g in evals], unit)


def _refuse_overlap(fit: str, fit_idx: np.ndarray, evals: list[tuple[str, np.ndarray]], unit: str) -> None:
    # An empty selection (dev[:0%], a slice past the end) would print a table of dashes and exit 0.
    for sel, idx in [(fit, fit_idx), *evals]:
        if len(idx) == 0:
            raise LayerprobeError(f"selection {sel!r} picks no {unit}: check its split name and slice")
    for i, (sel, idx) in enumerate(evals):
        for prev, pidx in evals[:i]:
            if np.array_equal(np.sort(idx), np.sort(pidx)):
                _refuse_duplicate_eval(prev, sel, len(np.unique(idx)), unit)
    for sel, idx in evals:
        shared = np.intersect1d(fit_idx, idx)
        if len(shared):
            raise LayerprobeError(
                f"eval selection {sel!r} shares {len(shared):,} of its {len(np.unique(idx)):,} {unit} with "
                f"fit selection {fit!r}: scoring on what was fitted would inflate the result; pick disjoint "
                f"selections, e.g. --fit '{split_names(fit)[0]}[:80%]' --eval '{split_names(fit)[0]}[80%:]'"
            )
