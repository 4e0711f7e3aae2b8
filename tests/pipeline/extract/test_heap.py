"""The extraction process caps glibc's malloc arenas from its start (pipeline/extract/heap.py), so
its RSS does not creep shard after shard; a user's MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.extract import heap

REPO = Path(__file__).resolve().parents[3]

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")


def _arenas_after_extract(entry: str, model: Path, data: Path, out: Path) -> int:
    """Run one extraction in a fresh process (through `entry`), then count its malloc arenas
    (glibc's malloc_stats prints one 'Arena N:' block per arena)."""
    run = {
        "cli": f"rc = main(['extract', '--model', {str(model)!r}, '--data', {str(data)!r}, '--out', {str(out)!r}, "
               "'--executor', 'local', '--no-progress', '--shard-tokens', '40', '--batch-tokens', '64'])\n",
        "library": f"run_extract(ExtractSpec(model={str(model)!r}, data={str(data)!r}, out={str(out)!r}, "
                   "shard_tokens=40, batch_tokens=64), executor='local', progress=False)\nrc = 0\n",
    }[entry]
    code = ("import ctypes, sys\n"
            "from pipeline.cli import main\n"
            "from pipeline.executors.extract_job import run_extract\n"
            "from schemas.job import ExtractSpec\n"
            + run +
            "assert rc == 0, rc\n"
            "sys.stderr.write('MALLOC_STATS\\n'); sys.stderr.flush()\n"
            "ctypes.CDLL(None).malloc_stats()\n")
    env = {k: v for k, v in os.environ.items() if k != heap.ARENA_ENV}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = proc.stderr.split("MALLOC_STATS\n", 1)[1]
    return len(re.findall(r"^Arena \d+:", stats, re.M))


@glibc_only
def test_the_extract_command_runs_with_at_most_two_malloc_arenas(tiny_gpt2, corpus, tmp_path):
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus * 3))
    assert _arenas_after_extract("cli", tiny_gpt2, data, tmp_path / "cli.zarr") <= heap.EXTRACT_ARENAS
    # The control: the same work called as a library, where nothing caps them, spreads over more
    # (the writer thread, torch's and the tokenizer's threads each take one).
    assert _arenas_after_extract("library", tiny_gpt2, data, tmp_path / "lib.zarr") > heap.EXTRACT_ARENAS


def test_a_users_malloc_arena_max_wins(monkeypatch):
    monkeypatch.setenv(heap.ARENA_ENV, "4")
    assert heap.limit_malloc_arenas() is False  # glibc read the user's value at start; left alone
    assert heap.arena_env() == {heap.ARENA_ENV: "4"}  # and Ray workers get the same
    monkeypatch.delenv(heap.ARENA_ENV)
    assert heap.arena_env() == {heap.ARENA_ENV: str(heap.EXTRACT_ARENAS)}
