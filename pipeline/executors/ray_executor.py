"""Ray executor: one actor per GPU (or CPU workers), each holding the model and writing its shards
straight into the store. Only small per-shard metadata comes back through Ray.

Failures: actors restart and retry their in-flight task (Ray: max_restarts / max_task_retries);
a shard whose task still fails is re-queued on any live worker, up to MAX_ATTEMPTS. Writes are
idempotent, so a redone shard ends identical. A user error (LayerprobeError) stops the run.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from urllib.parse import urlsplit

from pipeline.errors import LayerprobeError, one_line
from pipeline.executors.progress import Progress
from pipeline.extract.forward import MAX_WRITE_THREADS, ShardExtractor, StoreTarget
from pipeline.extract.heap import arena_env
from schemas.job import ExtractSpec

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
IN_FLIGHT_PER_WORKER = 2  # one running, one queued: an actor never idles waiting for the driver
RAY_CLIENT_PORT = 10001  # Ray's default client server port (ray start --head --ray-client-server-port)
RAY_GCS_PORT = 6379      # Ray's default head (GCS) port (ray start --head --port): a `host:port` address
# A reachable head answers a TCP connect in well under a second, even over a VPN; 5 s still lets a
# lossy link retransmit the SYN twice (Linux resends it after 1 s and 3 s). Ray's own client retries
# for ~40 s before giving up, so this answers an unreachable address 8x sooner (and a `host:port`
# one, where Ray waited ~14 minutes, 160x sooner).
RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_reachable(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """One TCP connect, closed at once, to the port an address names: a `ray://host[:port]`
    client server (10001 when no port is given) or a `host[:port]` cluster head (its GCS, 6379);
    raise LayerprobeError, one line, when it fails. None, "auto" and "local" are Ray's to resolve."""
    if not address or address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    if "://" in address and not client:
        return  # not an address ray.init takes: Ray's own error says so
    try:
        parts = urlsplit(address if client else f"//{address}")
        host, port = parts.hostname, parts.port or (RAY_CLIENT_PORT if client else RAY_GCS_PORT)
    except ValueError as exc:  # a port that is not a number, or out of range
        raise LayerprobeError(f"malformed Ray address {address}: {exc}; expected "
                              f"{'ray://host:port' if client else 'host:port'}") from None
    if not host:
        raise LayerprobeError(f"malformed Ray address {address}: no host; expected "
                              f"{'ray://host:port' if client else 'host:port'}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = (f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError)
                  else exc.strerror or str(exc) or type(exc).__name__)
        what, flag = (("the Ray client server", "--ray-client-server-port") if client
                      else ("the Ray head (GCS)", "--port"))
        raise LayerprobeError(f"cannot reach {what} at {address} ({host}:{port}): {reason}; check the address, "
                              f"and that `ray start --head` runs there listening on port {port} ({flag}), or use "
                              "--executor local") from None


def ensure_ray(ray_address: str | None, num_cpus: int | None = None):
    import ray

    if not ray.is_initialized():
        # No --ray-address: join the cluster named by RAY_ADDRESS (set inside `ray job submit`), or
        # start a local one.
        address = ray_address or os.environ.get("RAY_ADDRESS")
        # An unreachable address answers here, in seconds, not after Ray's retries.
        check_ray_reachable(address)
        kwargs = {"address": address} if address else {"num_cpus": num_cpus}
        # Workers import the project from the driver's environment; silence Ray's usage prompt.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(log_to_driver=True, include_dashboard=False, **kwargs)
        except (ConnectionError, TimeoutError, ValueError) as exc:
            # No cluster at `auto`, a ray:// port that takes the connection but is no Ray client
            # server (Ray's client gives up after ~40 s of retries), a malformed address: the
            # user's to fix, so one line.
            where = f"Ray at {address}" if address else "a local Ray"
            raise LayerprobeError(f"cannot connect to {where}: {one_line(exc).rstrip('.')}; check the address and "
                                  "that the cluster is running, or use --executor local") from None
    return ray


def connect_ray(ray_address: str | None, device: str = "auto"):
    """Join (or start) Ray and check the cluster can run `device`: the driver calls this before it
    creates or replaces a store, so a missing cluster or GPU refuses the run with --out untouched."""
    joined = bool(ray_address or os.environ.get("RAY_ADDRESS"))  # else ensure_ray starts a local Ray
    ray = ensure_ray(ray_address)
    if device == "cuda" and not ray.cluster_resources().get("GPU", 0):
        if not joined:  # a local Ray has no autoscaler: GPU workers would wait forever
            raise LayerprobeError("--device cuda was requested but the Ray cluster has no GPU; use "
                                  "--device cpu (or auto), or a cluster with GPU nodes")
        # A cluster's GPU workers may be scaled to zero: each worker asks for a GPU and waits for
        # the autoscaler (device auto would run on the CPUs that are up instead).
        log.warning("no GPU in the Ray cluster yet: the workers ask for one each and wait for the "
                    "autoscaler to add GPU nodes (a cluster without GPU nodes to add waits forever: "
                    "stop it with Ctrl-C)")
    return ray


def _worker_error(exc, what: str) -> LayerprobeError:
    """A worker's exception as the driver's error. A LayerprobeError raised in the worker is the
    user's to fix: it comes back as itself, with its own message (RayTaskError.cause is the
    original exception; str() of the RayTaskError is a coloured remote traceback). Anything else
    becomes one line naming the work and the exception."""
    cause = getattr(exc, "cause", None)  # RayActorError's is a context record, not an exception
    if isinstance(cause, LayerprobeError):
        return cause
    return LayerprobeError(f"{what} failed in a Ray worker: "
                           f"{one_line(cause if isinstance(cause, BaseException) else exc)}")


def gpu_worker_cpus(nodes: list[dict]) -> int | None:
    """CPUs a GPU worker asks Ray for, and its writer's threads: the CPU share per GPU of the live
    GPU node with the fewest cores per GPU (so a worker fits on every GPU node), at most
    MAX_WRITE_THREADS; None while no GPU node is up (the autoscaler's nodes are unknown until they
    come). `nodes` is `ray.nodes()`."""
    shares = [int(n["Resources"].get("CPU", 0) // n["Resources"]["GPU"])
              for n in nodes if n.get("Alive") and n.get("Resources", {}).get("GPU")]
    return max(1, min([MAX_WRITE_THREADS, *shares])) if shares else None


def _worker_resources(ray, workers: int | None, device: str = "auto") -> tuple[int, dict, int, int | None]:
    """(workers, Ray resources per worker, torch threads (0: leave torch's), writer threads (None:
    the worker's own choice))."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device == "cuda" or (gpus and device != "cpu"):  # cuda with none up yet: wait for the autoscaler
        # Ray counts the writer's threads: several GPU workers on a node then never take more
        # cores than it has, and the CPUs the writer uses are not handed to other work. With no
        # GPU node up, 1 CPU (any GPU node has one) and the worker sizes its writer to its node.
        share = gpu_worker_cpus(ray.nodes())
        return (workers or max(gpus, 1)), {"num_gpus": 1, "num_cpus": share or 1}, 0, share
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = workers or 1
    # Split the CPUs between workers so torch threads don't oversubscribe the machine; a CPU
    # worker's writer takes 1 thread.
    per_worker = max(1, cpus // n)
    return n, {"num_gpus": 0, "num_cpus": per_worker}, per_worker, None


class RayWorkers:
    """Started shard workers (Ray actors), at least one with its model loaded: `start_ray` returns
    only once a worker could load the model, so a model that cannot load refuses the run before
    --out is created or an old store deleted. `run` extracts; `stop` kills the actors."""

    def __init__(self, ray, actors: list):
        self.ray, self.actors = ray, actors

    def stop(self) -> None:
        for a in self.actors:
            self.ray.kill(a)

    def run(self, work, *, write_static: bool, progress: bool = True) -> list[dict]:
        ray, actors = self.ray, self.actors
        n_workers = len(actors)
        bar = Progress(sum(w[2] for w in work), len(work), progress)
        pending = deque(range(len(work)))
        attempts = [0] * len(work)
        in_flight: dict = {}  # ObjectRef -> (work index, actor)
        load = {i: 0 for i in range(n_workers)}
        results: list[dict] = []

        def submit(actor_i: int) -> None:
            while pending and load[actor_i] < IN_FLIGHT_PER_WORKER:
                wi = pending.popleft()
                shard, examples, _ = work[wi]
                attempts[wi] += 1
                ref = actors[actor_i].run_shard.remote(shard, examples)
                in_flight[ref] = (wi, actor_i)
                load[actor_i] += 1

        try:
            if write_static:
                try:
                    ray.get(actors[0].write_static.remote())
                except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
                    # e.g. a float16 overflow in the embedding table: one line, like a shard's error
                    raise _worker_error(exc, "the static embeddings") from None
            for a in range(n_workers):
                submit(a)
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1)
                ref = done[0]
                wi, actor_i = in_flight.pop(ref)
                load[actor_i] -= 1
                try:
                    results.append(ray.get(ref))
                    bar.shard_done(work[wi][2])
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, LayerprobeError):
                        raise exc.cause from None  # the same input fails the same way on any worker
                    _retry_or_fail(wi, attempts, pending, exc, work[wi][0].shard_id)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    log.warning("worker for shard %d died (%s); re-queueing", work[wi][0].shard_id,
                                type(exc).__name__)
                    _retry_or_fail(wi, attempts, pending, exc, work[wi][0].shard_id)
                submit(actor_i)
                if pending and not in_flight:
                    for a in range(n_workers):
                        submit(a)
        finally:
            bar.close()
        return results


def start_ray(spec: ExtractSpec, target: StoreTarget, *, n_shards: int, workers: int | None,
              ray_address: str | None) -> RayWorkers:
    """Start the workers (at most one per shard to do) and wait until the first has loaded the
    model; the others load theirs while it works."""
    ray = ensure_ray(ray_address)

    n_workers, resources, threads, write_threads = _worker_resources(ray, workers, spec.device)
    n_workers = max(1, min(n_workers, n_shards or 1))

    @ray.remote(max_restarts=2, max_task_retries=2)
    class ShardWorker(ShardExtractor):
        def __init__(self, spec, target, threads, write_threads):
            super().__init__(spec, target, write_threads=write_threads)
            if threads:
                import torch

                torch.set_num_threads(threads)

        def pid(self) -> int:
            return os.getpid()

    # Workers start with capped malloc arenas, as the CLI caps its own: it only works from process
    # start (pipeline/extract/heap.py).
    runtime_env = {"env_vars": arena_env()}
    actors = [ShardWorker.options(runtime_env=runtime_env, **resources).remote(spec, target, threads, write_threads)
              for _ in range(n_workers)]
    pool = RayWorkers(ray, actors)
    try:
        first, _ = ray.wait([a.setup.remote() for a in actors], num_returns=1)
        ray.get(first[0])
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
        pool.stop()
        raise _worker_error(exc, "loading the model") from None
    except BaseException:
        pool.stop()
        raise
    return pool


def _retry_or_fail(wi, attempts, pending, exc, shard_id) -> None:
    if attempts[wi] >= MAX_ATTEMPTS:
        raise _worker_error(exc, f"shard {shard_id} (tried {attempts[wi]} times)") from None
    pending.appendleft(wi)
