"""In-process executor: the same per-shard step as the Ray executor, without Ray (debugging, tests,
single-process runs)."""

from __future__ import annotations

from pipeline.executors.progress import Progress
from pipeline.extract.forward import ShardExtractor, StoreTarget
from schemas.job import ExtractSpec


class LocalWorker:
    """The Ray executor's RayWorkers, in this process: built with the model already loaded, so a
    model that cannot load refuses the run before --out is touched."""

    def __init__(self, spec: ExtractSpec, target: StoreTarget):
        self.worker = ShardExtractor(spec, target)
        self.worker.setup()

    def stop(self) -> None:
        pass

    def run(self, work, *, write_static: bool, progress: bool = True) -> list[dict]:
        if write_static:
            self.worker.write_static()
        bar = Progress(sum(w[2] for w in work), len(work), progress)
        results = []
        try:
            for shard, examples, n_input in work:
                results.append(self.worker.run_shard(shard, examples))
                bar.shard_done(n_input)
        finally:
            bar.close()
        return results
