"""glibc heap settings for an extraction process, so its RSS does not creep with the data.

Measured on MiniLM, 20 equal 8.5k-token shards through `layerprobe extract` (benchmarks/README.md,
fifth round):
- glibc gives every thread that allocates its own arena, up to 8 per core (16 here), and each
  arena keeps its own freed pages. Shard after shard the transient blocks land in different
  arenas and fragment each of them: RSS at shard start crept 614 -> 796 MB and the shard peaks
  rose from 931-981 to 998-1039 MB, even with the heap trimmed after every shard.
- Capped at 2 arenas from process start, RSS at shard start stays at 641-697 MB and the shard
  peaks at 873-990 MB with no trend. Extraction / bare forward in A/B runs: 0.878 vs 0.889 without
  the cap (means of five), inside the run-to-run noise.
- The cap must come before the process starts its threads (the driver's tokenizer, pyarrow and
  Ray threads all take arenas): set at the first shard, 8 arenas already existed and RSS still
  crept. Hence the CLI sets it first thing, and Ray workers get it in their environment.

Everything here is a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os

ARENA_ENV = "MALLOC_ARENA_MAX"  # glibc reads it at process start; a user's own value wins
EXTRACT_ARENAS = 2  # one for the forward pass's thread, one shared by the writer and the rest
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


def _glibc_function(name: str):
    try:
        return getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError, TypeError):  # not glibc (musl, macOS, Windows)
        return None


def arena_env() -> dict[str, str]:
    """The environment a worker process should start with (Ray's runtime_env env_vars)."""
    return {ARENA_ENV: os.environ.get(ARENA_ENV, str(EXTRACT_ARENAS))}


def limit_malloc_arenas(n: int = EXTRACT_ARENAS) -> bool:
    """Cap this process's malloc arenas at `n`, unless MALLOC_ARENA_MAX already set them.

    Call it before the process starts threads: arenas that exist already stay in use. Returns
    whether the cap was applied."""
    if ARENA_ENV in os.environ:
        return False
    mallopt = _glibc_function("mallopt")
    return bool(mallopt is not None and mallopt(_M_ARENA_MAX, n))


def return_free_heap() -> None:
    """Hand the heap's free pages back to the OS (after each shard).

    glibc keeps freed pages for reuse, which keeps the forward fast (trimming after every batch cost
    2-3% on MiniLM), but then a worker's RSS creeps shard after shard with fragmentation (1206 ->
    1257 -> 1286 MB over three 64k-token shards); trimmed once per shard it returns to ~725 MB."""
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim(0)
