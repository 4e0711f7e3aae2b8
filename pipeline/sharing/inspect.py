"""`layerprobe inspect`: what a store holds and whether every shard is committed."""

from __future__ import annotations

from pipeline.sharing.common import human_bytes, open_store_checked, store_errors


def _size(fs, base: str) -> int | None:
    try:
        size = int(fs.du(base, total=True))
    except Exception:  # noqa: BLE001 - e.g. HTTP without listings
        return None
    return size or None  # a store is never 0 bytes: a host without listings reports nothing as 0


def inspect_store(path: str, storage_options: dict | None = None) -> dict:
    st = open_store_checked(path, storage_options, allow_incomplete=True)
    m = st.manifest
    with store_errors(path, "inspect"):
        size = _size(st.fs, st.base)
    shards = [{"shard_id": s.shard_id, "examples": [s.example_start, s.example_end],
               "rows": [s.row_start, s.row_start + s.n_rows_padded], "n_tokens": s.n_tokens,
               "committed": s.shard_id in st.committed} for s in st.plan.shards]
    n_ok = sum(s["committed"] for s in shards)
    return {
        "path": path,
        "format": m.get("format"), "format_version": m.get("format_version"),
        "model": m.get("model", {}), "tokenizer": m.get("tokenizer", {}), "source": m.get("source", {}),
        "variant": m.get("variant"), "keep": m.get("keep"), "layers": m.get("layers"),
        "dtype": m.get("dtype"), "codec": m.get("codec"), "chunk_rows": m.get("chunk_rows"),
        "max_length": m.get("max_length"), "stats": m.get("stats", {}),
        "limit": (m.get("settings") or {}).get("limit"),
        "config_fingerprint": m.get("config_fingerprint"),
        "created_at": m.get("created_at"), "completed_at": m.get("completed_at"),
        "written_with": m.get("written_with") if isinstance(m.get("written_with"), dict) else {},
        "manifest_complete": bool(m.get("complete")),
        "complete": st.complete,
        "n_committed": n_ok, "static_committed": st.static_committed,
        "bytes": size, "shards": shards,
    }


def _completed(info: dict) -> str:
    if info["complete"] or not info["completed_at"]:
        return str(info["completed_at"])
    # The manifest says complete, but commit records are missing (damage, or a hand edit).
    return f"{info['completed_at']} per the manifest, but commit records are missing (run validate)"


def format_written_with(summary: dict[str, dict[str, int]]) -> str:
    """`batch_tokens 4096, device cpu, ...`; a setting a resume changed shows each value's shards."""
    parts = []
    for key, counts in summary.items():
        if not isinstance(counts, dict) or not counts:  # a hand-edited manifest: show it as it is
            parts.append(f"{key} {counts!r}")
        elif len(counts) == 1:
            parts.append(f"{key} {next(iter(counts))}")
        else:
            parts.append(f"{key} " + " / ".join(f"{v} ({n} shard{'s' * (n != 1)})" for v, n in counts.items())
                         + " [MIXED: values agree to float rounding, not bit for bit]")
    return ", ".join(parts)


def format_inspect(info: dict, *, all_shards: bool = False) -> str:
    mo, src, stats = info["model"], info["source"], info["stats"]
    lines = [
        f"store:      {info['path']}  ({info['format']} v{info['format_version']})",
        f"model:      {mo.get('name')}  ({mo.get('architecture')}, {mo.get('n_layers')} layers, "
        f"d_model {mo.get('d_model')}, vocab {mo.get('vocab_size')}, ran in {mo.get('dtype')})",
        f"dataset:    {src.get('path')}  ({src.get('format')}, {src.get('n_examples')} examples"
        + (f" (--limit {info['limit']}: the first of the source)" if info.get("limit") else "")
        + f", columns {src.get('columns')})",
        f"variant:    {info['variant']}  keep: {info['keep']}  max_length: {info['max_length']}",
        f"layers:     {info['layers']}  (HF hidden_states index; 0 = embedding output)",
        f"storage:    {info['dtype']}, codec {info['codec']}, chunk_rows {info['chunk_rows']}",
        f"tokens:     {stats.get('n_tokens')} token rows of {stats.get('n_examples')} examples "
        f"({stats.get('n_rows')} array rows incl. padding, {stats.get('n_truncated')} truncated"
        + (f", {stats['n_targets_lost']} targets lost to the cut" if stats.get('n_targets_lost') else "") + ")",
        f"bytes:      {human_bytes(info['bytes'])}" + ("" if info["bytes"] is None else f" ({info['bytes']:,})"),
        f"created:    {info['created_at']}  completed: " + _completed(info),
        f"fingerprint:{' ' if info['config_fingerprint'] else ''}{info['config_fingerprint']}",
    ]
    if info["written_with"]:
        lines.append("written:    " + format_written_with(info["written_with"]))
    n = len(info["shards"])
    state = "complete" if info["complete"] else "INCOMPLETE"
    lines.append(f"status:     {state}: {info['n_committed']}/{n} shards committed, static embeddings "
                 f"{'committed' if info['static_committed'] else 'missing'}")
    if all_shards or n <= 20:
        for s in info["shards"]:
            lines.append(f"  shard {s['shard_id']:>5}: examples {s['examples'][0]}-{s['examples'][1] - 1}, "
                         f"rows {s['rows'][0]}-{s['rows'][1] - 1}, {s['n_tokens']} tokens, "
                         f"{'committed' if s['committed'] else 'NOT committed'}")
    else:
        missing = [s["shard_id"] for s in info["shards"] if not s["committed"]]
        if missing:
            lines.append(f"  not committed: {missing[:50]}{' ...' if len(missing) > 50 else ''}")
    return "\n".join(lines)
