"""Writing a probe's results: DIR/<probe>.csv, .json and .png, plus a plain-text table.

`prepare_out_dir(out)` checks (and creates) the output folder before a probe does any work.
`write_results(..., plot_metrics=...)` takes column names, `(column, legend name)` pairs or `Series`
(column, legend name, line style, panel, interval columns): one line per (series, eval split)
against layer, panels stacked with a shared layer axis, the static row at its own `static` tick.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import LayerprobeError

ROUND = 6
TITLE_WIDTH = 80   # characters per title line: about what a 7.5-inch figure shows at font size 10


def clean_value(v: Any) -> Any:
    """Rounded floats (so reruns compare equal as text), numpy scalars/arrays as Python values,
    NaN/inf -> None, recursively through dicts, lists and tuples (JSON has no NaN)."""
    if isinstance(v, dict):
        return {(k if k is None or isinstance(k, (str, int, float, bool)) else str(k)): clean_value(x)
                for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean_value(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):   # numpy scalar or array
        v = v.tolist()
        if isinstance(v, list):
            return clean_value(v)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None
        return round(v, ROUND)
    return v


def clean_rows(rows: list[dict]) -> list[dict]:
    return [{k: clean_value(v) for k, v in r.items()} for r in rows]


def columns_of(rows: list[dict]) -> list[str]:
    cols = ["layer", "split"]
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no results)"
    cols = columns_of(rows)

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    cols = columns_of(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})


@dataclass(frozen=True)
class Series:
    """One plotted metric: `column` of the rows, drawn as `label` in the legend, with line style
    `style`, on panel `panel` (0 = top); `ci` names the rows' lower/upper bound columns, drawn as
    error bars."""

    column: str
    label: str | None = None
    style: Any = None
    panel: int = 0
    ci: tuple[str, str] | None = None
    marker: str | None = "o"  # None for a flat baseline drawn as a series


SERIES_STYLES = ["-", "--", "-.", (0, (5, 1, 1, 1, 1, 1))]   # ':' is kept for reference lines
STATIC_STYLE = ":"
STATIC_MARKERS = ["s", "D", "^", "v", "P", "X"]                 # one per series of a panel


def as_series(metrics: Sequence) -> list[Series]:
    """Column names, (column, legend name) pairs or Series -> Series, styles filled in per panel."""
    out, used = [], {}
    for m in metrics:
        if isinstance(m, str):
            m = Series(m)
        elif isinstance(m, (tuple, list)):
            m = Series(*m)
        elif not isinstance(m, Series):
            raise TypeError(f"plot metric must be a column name, (column, label) or Series, not {m!r}")
        k = used.get(m.panel, 0)
        used[m.panel] = k + 1
        style = m.style if m.style is not None else SERIES_STYLES[k % len(SERIES_STYLES)]
        out.append(Series(m.column, m.label or m.column, style, m.panel, m.ci))
    return out


def short_model_name(model: str) -> str:
    """A model given as a local file or folder path by its last component (the full path stays in the
    JSON); a hub id like 'org/name' (relative, not starting with '.') as it is."""
    m = str(model)
    if os.path.isabs(m) or m.startswith((".", "~")):
        return os.path.basename(m.rstrip("/" + os.sep)) or m
    return m


def plot_title(probe: str, model: str, variant: str, settings: dict[str, Any] | None,
               title_keys: Sequence[str] = ("fit",)) -> str:
    """'wic: MODEL, base input' then 'fit train, eval dev, standardize global' (keys missing from
    settings left out), the model by its short name, each line wrapped at TITLE_WIDTH characters so
    that it fits the figure."""
    head = f"{probe}: {short_model_name(model)}, {variant} input"
    parts = []
    for k in title_keys:
        v = (settings or {}).get(k)
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = ",".join(map(str, v))
        parts.append(f"{k} {v}")
    lines = [head] + ([", ".join(parts)] if parts else [])
    return "\n".join(textwrap.fill(line, TITLE_WIDTH) for line in lines)


def plot_metric(path: Path, rows: list[dict], metrics: Sequence, title: str, ylabel: str | Sequence[str],
                hlines: Sequence[tuple[float, str]] = (), note: str | None = None, hollow: str | None = None):
    """One line per (series, eval split) against layer; the static row as a square marker at its
    own x tick labelled 'static' (left of the layers) plus a dotted horizontal reference line.
    Colour = eval split, line style = series; series with `ci` get error bars. `ylabel` is one
    label, or one per panel. `hlines`: (y, legend name) reference lines on the top panel (e.g. a
    baseline), drawn grey and dotted, or (y, legend name, split): drawn in that split's colour.
    `note` is printed under the axes. `hollow`: a row column; rows where it is true (e.g. WiC's
    one-class rows, which measure nothing) get hollow markers, so they stand out without the note."""
    # Figure + the Agg canvas directly: no pyplot global state, no GUI backend, whatever is configured.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = as_series(metrics)
    n_panels = max([s.panel for s in series], default=0) + 1
    ylabels = [ylabel] * n_panels if isinstance(ylabel, str) else list(ylabel) + [""] * n_panels
    fig = Figure(figsize=(7.5, 3.2 + 2.4 * n_panels))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(n_panels, 1, 1)]
    for i in range(1, n_panels):
        axes.append(fig.add_subplot(n_panels, 1, i + 1, sharex=axes[0]))
    splits = list(dict.fromkeys(r["split"] for r in rows))
    layers = sorted({int(r["layer"]) for r in rows if r["layer"] != "static"})
    has_static = any(r["layer"] == "static" for r in rows)
    # Past 16 layers only every `step`-th layer is labelled; the static tick stands one such step left
    # of the first layer, so its label gets a label's width of room ('static' ran into '0' at step 1).
    step = 1 if len(layers) <= 16 else max(1, len(layers) // 12)
    static_x = (layers[0] if layers else 0) - step
    color_of = {sp: f"C{i % 10}" for i, sp in enumerate(splits)}

    def _bounds(r, ci):
        lo, hi = (r.get(ci[0]), r.get(ci[1])) if ci else (None, None)
        return (lo, hi) if lo is not None and hi is not None else (None, None)

    marker_of, per_panel = {}, {}
    for s in series:
        k = per_panel.get(s.panel, 0)
        per_panel[s.panel] = k + 1
        marker_of[s.column] = STATIC_MARKERS[k % len(STATIC_MARKERS)]
    for s in series:
        ax = axes[s.panel]
        for split in splits:
            color = color_of[split]
            label = s.label if len(splits) == 1 else f"{s.label} ({split})"
            pts = sorted((int(r["layer"]), r[s.column], *_bounds(r, s.ci)) for r in rows
                         if r["split"] == split and r["layer"] != "static" and r.get(s.column) is not None)
            if pts:
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                ax.plot(xs, ys, linestyle=s.style, marker=s.marker, ms=3.5, color=color, label=label)
                flagged = [(int(r["layer"]), r[s.column]) for r in rows if hollow and r.get(hollow)
                           and r["split"] == split and r["layer"] != "static" and r.get(s.column) is not None]
                if flagged and s.marker:
                    ax.plot(*zip(*flagged), linestyle="none", marker=s.marker, ms=4.5, color=color,
                            markerfacecolor="white", zorder=3)
                if s.ci and all(p[2] is not None for p in pts):
                    ax.errorbar(xs, ys, yerr=[[y - p[2] for y, p in zip(ys, pts)], [p[3] - y for y, p in zip(ys, pts)]],
                                fmt="none", ecolor=color, elinewidth=0.9, capsize=2.5, alpha=0.8)
            static = [r for r in rows if r["split"] == split and r["layer"] == "static" and r.get(s.column) is not None]
            if static:
                # the static row: a marker (one shape per series) at the 'static' tick, and a dotted
                # reference line across the layers; the legend entry shows both
                y = static[0][s.column]
                m = marker_of[s.column]
                ax.axhline(y, color=color, ls=STATIC_STYLE, lw=1.0, alpha=0.7)
                lo, hi = _bounds(static[0], s.ci)
                if lo is not None:
                    ax.errorbar([static_x], [y], yerr=[[y - lo], [hi - y]], fmt="none", ecolor=color,
                                elinewidth=0.9, capsize=2.5)
                ax.plot([static_x], [y], marker=m, color=color, ms=5, linestyle=STATIC_STYLE, lw=1.0,
                        label=f"static embedding: {label}",
                        **({"markerfacecolor": "white"} if hollow and static[0].get(hollow) else {}))
    for y, name, *split in hlines:
        if split and split[0] in color_of:   # loosely dotted: the split's static line is ':' already
            axes[0].axhline(y, color=color_of[split[0]], ls=(0, (1, 4)), lw=1.6, label=name)
        else:
            axes[0].axhline(y, color="0.35", ls=STATIC_STYLE, lw=1.3, label=name)
    ticks = ([static_x] if has_static else []) + layers[::step]
    labels = (["static"] if has_static else []) + [str(x) for x in ticks[1 if has_static else 0:]]
    for i, ax in enumerate(axes):
        ax.set_ylabel(ylabels[i])
        ax.grid(alpha=0.3)
        if has_static and layers:
            ax.axvline(static_x + step / 2, color="0.6", lw=0.8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best", handlelength=3.5)
        if i < len(axes) - 1:
            ax.tick_params(labelbottom=False)
    axes[-1].set_xticks(ticks)
    axes[-1].set_xticklabels(labels)
    axes[-1].set_xlabel("layer (hidden_states index; 0 = embedding output)")
    axes[0].set_title(title, fontsize=10)
    if note:
        fig.text(0.01, 0.005, note, fontsize=7, color="0.3", va="bottom", ha="left", wrap=True)
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    fig.savefig(path, dpi=110)
    return fig


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Check the output folder before any work: create it (with parents) and make sure a file can be
    written in it. One LayerprobeError naming the folder and the reason otherwise."""
    from pipeline.store.fs import enclosing_store

    out = Path(out_dir)
    store = enclosing_store(os.fspath(out))
    if store:
        raise LayerprobeError(f"--out {os.fspath(out)!r} is inside the store {store}: results there would "
                              "become part of the store (and go with it when it is replaced); choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise LayerprobeError(f"--out {os.fspath(out)!r} exists and is not a folder: give a folder path "
                              "(the probe writes <probe>.csv/.json/.png into it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LayerprobeError(f"cannot write results to --out {os.fspath(out)!r}: "
                              f"{exc.strerror or exc.__class__.__name__}") from None
    return out


def write_results(out_dir: str | os.PathLike, probe: str, rows: list[dict], settings: dict[str, Any],
                  plot_metrics: Sequence, ylabel: str | Sequence[str], model: str, variant: str,
                  extra: dict[str, Any] | None = None, echo: bool = True, *,
                  title_keys: Sequence[str] = ("fit",), hlines: Sequence[tuple] = (),
                  plot_note: str | None = None, column_docs: dict[str, str] | None = None,
                  hollow: str | None = None) -> dict[str, Path]:
    """Write DIR/<probe>.csv/.json/.png (and print the table). `plot_metrics`: column names,
    (column, legend name) pairs or Series (see plot_metric); `ylabel`: one, or one per panel;
    `title_keys`: settings shown in the plot title; `hlines`, `hollow`: see plot_metric;
    `column_docs`: what each column means, written to the JSON as `column_glossary` (the columns
    present, in their order), so the CSV can be read without the code."""
    out = prepare_out_dir(out_dir)
    rows = clean_rows(rows)
    paths = {"csv": out / f"{probe}.csv", "json": out / f"{probe}.json", "png": out / f"{probe}.png"}
    write_csv(paths["csv"], rows)
    doc = {"probe": probe, "model": model, "variant": variant, "settings": clean_value(settings)}
    if extra:
        doc.update(clean_value(extra))
    doc["columns"] = columns_of(rows)
    if column_docs:  # keys may be patterns ('structural_*') standing for several columns
        doc["column_glossary"] = {k: v for k, v in column_docs.items()
                                  if any(fnmatch.fnmatchcase(c, k) for c in doc["columns"])}
    doc["results"] = rows
    with open(paths["json"], "w") as f:
        # allow_nan=False: a NaN that slipped past clean_value is an error here, never invalid JSON.
        json.dump(doc, f, indent=2, sort_keys=False, default=str, allow_nan=False)
        f.write("\n")
    plot_metric(paths["png"], rows, plot_metrics, plot_title(probe, model, variant, settings, title_keys),
                ylabel, hlines=hlines, note=plot_note, hollow=hollow)
    if echo:
        print(format_table(rows))
    return paths
