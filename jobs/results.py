"""Writing a probe's results: DIR/<probe>.csv, .json and .png, plus a plain-text table."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

ROUND = 6


def clean_value(v: Any) -> Any:
    """Rounded floats (so reruns compare equal as text), numpy scalars as Python values, NaN -> None."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
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


def plot_metric(path: Path, rows: list[dict], metrics: list[str], title: str, ylabel: str) -> None:
    """One line per (metric, eval split) against layer; the static row as a dashed horizontal line."""
    # Figure + the Agg canvas directly: no pyplot global state, no GUI backend, whatever is configured.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    splits = list(dict.fromkeys(r["split"] for r in rows))
    styles = ["-", "--", ":", "-."]
    color_i = 0
    for mi, metric in enumerate(metrics):
        for split in splits:
            color = f"C{color_i % 10}"
            color_i += 1
            pts = sorted(
                (int(r["layer"]), r[metric]) for r in rows
                if r["split"] == split and r["layer"] != "static" and r.get(metric) is not None
            )
            label = split if len(metrics) == 1 else f"{metric} ({split})"
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, styles[mi % len(styles)], marker="o", ms=3.5, color=color, label=label)
            static = [r[metric] for r in rows if r["split"] == split and r["layer"] == "static" and r.get(metric) is not None]
            if static:
                ax.axhline(static[0], color=color, ls=(0, (4, 3)), lw=1.1, alpha=0.8, label=f"{label}, static")
                ax.plot([pts[0][0] - 0.6 if pts else 0], [static[0]], marker="s", color=color, ms=5)
    ax.set_xlabel("layer (hidden_states index; 0 = embedding output)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_results(out_dir: str | os.PathLike, probe: str, rows: list[dict], settings: dict[str, Any],
                  plot_metrics: list[str], ylabel: str, model: str, variant: str,
                  extra: dict[str, Any] | None = None, echo: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = clean_rows(rows)
    paths = {"csv": out / f"{probe}.csv", "json": out / f"{probe}.json", "png": out / f"{probe}.png"}
    write_csv(paths["csv"], rows)
    doc = {"probe": probe, "model": model, "variant": variant, "settings": settings}
    if extra:
        doc.update({k: clean_value(v) if not isinstance(v, (dict, list)) else v for k, v in extra.items()})
    doc["columns"] = columns_of(rows)
    doc["results"] = rows
    with open(paths["json"], "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    plot_metric(paths["png"], rows, plot_metrics, f"{probe}: {model} ({variant})", ylabel)
    if echo:
        print(format_table(rows))
    return paths
