"""In-process executor: the same per-shard step as the Ray executor, without Ray (debugging, tests,
single-process runs)."""

from __future__ import annotations

from pipeline.executors.progress import Progress
from pipeline.extract.forward import ShardExtractor, StoreTarget
from schemas.job import ExtractSpec


def run_local(spec: ExtractSpec, target: StoreTarget, work, *, write_static: bool, progress: bool = True) -> list[dict]:
    worker = ShardExtractor(spec, target)
    if write_static:
        worker.write_static()
    bar = Progress(sum(w[2] for w in work), len(work), progress)
    results = []
    try:
        for shard, examples, n_input in work:
            results.append(worker.run_shard(shard, examples))
            bar.shard_done(n_input)
    finally:
        bar.close()
    return results
