"""Executors run single runs somewhere and report back; the study scheduler (``study_runner``) decides what runs.

- ``local``: N worker processes (``spawn``), each pinned to one GPU through ``CUDA_VISIBLE_DEVICES`` when GPUs
  exist, else CPU. A worker that dies (SIGKILL, segfault, OOM killer) is replaced and its run retried. Workers
  die with the study process (Linux parent-death signal), so a killed study leaves none behind; the
  multiprocessing resource tracker then sees its last client gone and exits too.
- ``ray``: one Ray task per run with its resource request (``num_gpus``/``num_cpus``), on a running cluster
  (``address``) or a local Ray instance. The results folder must be on a file system every node sees.
Nothing here schedules a cluster: Ray (or the local process pool) does.
"""
from __future__ import annotations

import os
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .._errors import SegarenaError


def execute_one(spec_dict: dict[str, Any], results: str, data_root: str | None, time_limit_s: float | None,
                device: str | None = None) -> dict[str, Any]:
    """Run one spec and describe the outcome as plain data (never raises: a failure is a result)."""
    import torch

    from .._errors import RunFailed
    from ..config import spec_from_dict
    from ..protocol import run

    spec = spec_from_dict(spec_dict)
    torch.set_num_threads(run_threads())  # the same count whatever the number of workers (see run_threads)
    try:
        res = run(spec, results, data_root=data_root, device=device, time_limit_s=time_limit_s)
        return {"run_id": spec.run_id, "state": "skipped" if res.skipped else "complete", "summary": res.summary,
                "threads": torch.get_num_threads()}
    except torch.cuda.OutOfMemoryError:
        return {"run_id": spec.run_id, "state": "failed", "kind": "oom",
                "error": "CUDA out of memory: lower protocol.batch_size or protocol.input_size"}
    except (SegarenaError, RunFailed) as exc:
        return {"run_id": spec.run_id, "state": "failed", "kind": type(exc).__name__, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - fail soft across a study
        return {"run_id": spec.run_id, "state": "failed", "kind": type(exc).__name__,
                "error": f"{type(exc).__name__}: {exc}".splitlines()[0], "traceback": traceback.format_exc()}


def run_threads() -> int:
    """Intra-op torch threads of every run a study executes: ``$SEGARENA_THREADS_PER_RUN``, else 1.

    The count is fixed per run and never derived from the number of workers: CPU kernels split their reductions
    (convolution weight gradients, matmul accumulations) by thread, so the same spec trained with 1 and with 2
    threads ends with different weights. With one thread per run, ``--workers N`` changes only the wall time, and
    N workers on N cores use the machine fully. The count is recorded in each run's ``device`` field. Setting
    ``SEGARENA_THREADS_PER_RUN`` (the old name ``SEGARENA_THREADS_PER_WORKER`` is still read) trades that for
    speed with few workers; runs made with different values may then differ in the last bits of the weights
    and hence the metrics.
    """
    raw = os.environ.get("SEGARENA_THREADS_PER_RUN") or os.environ.get("SEGARENA_THREADS_PER_WORKER") or "1"
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise SegarenaError(f"SEGARENA_THREADS_PER_RUN must be a whole number >= 1, got {raw!r}")
    return threads




def die_with_parent(parent_pid: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux ``PR_SET_PDEATHSIG``), so a killed
    study leaves no worker behind holding memory or a GPU; exits at once if the parent is already gone. Returns
    False where the platform has no such signal (the pool's own shutdown then is the only cleanup)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    return True


def _init_worker(gpu_queue, parent_pid: int | None = None) -> None:
    die_with_parent(parent_pid)
    gpu = gpu_queue.get() if gpu_queue is not None else None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    # Each run gets run_threads() intra-op threads, whatever the number of workers (results must not depend on
    # it). Set both ways: torch may already be imported here (spawn re-imports the parent's main module), and
    # oversubscribed OpenMP threads spin instead of sleeping, which made 2 workers ~30x slower than 1.
    threads = run_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class LocalExecutor:
    def __init__(self, workers: int = 1, gpus: list[int] | None = None) -> None:
        import multiprocessing as mp

        self.workers = max(1, workers)
        self.gpus = gpus
        run_threads()  # a bad $SEGARENA_THREADS_PER_RUN is a clean error here, not a failure in every worker
        self._ctx = mp.get_context("spawn")
        self._pool = self._new_pool()
        self._futures: dict[Future, Any] = {}
        self._args: dict[Future, tuple] = {}

    def _new_pool(self) -> ProcessPoolExecutor:
        queue = None
        if self.gpus:
            queue = self._ctx.Queue()
            for i in range(self.workers):
                queue.put(self.gpus[i % len(self.gpus)])
        return ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_init_worker,
                                   initargs=(queue, os.getpid()))

    def submit(self, key: Any, *args: Any) -> None:
        fut = self._pool.submit(execute_one, *args)
        self._futures[fut] = key
        self._args[fut] = args

    def pending(self) -> int:
        return len(self._futures)

    def wait(self) -> list[tuple[Any, dict[str, Any]]]:
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        out, broken = [], False
        for fut in done:
            key = self._futures.pop(fut)
            args = self._args.pop(fut)
            try:
                out.append((key, fut.result()))
            except BrokenProcessPool:
                broken = True
                out.append((key, {"state": "failed", "kind": "worker_died",
                                  "error": "the worker process died (killed, or crashed)"}))
            except Exception as exc:  # noqa: BLE001
                out.append((key, {"state": "failed", "kind": type(exc).__name__, "error": str(exc)}))
            del args
        if broken:  # every other in-flight run died with the pool: report them too, and start a new pool
            for fut in list(self._futures):
                key = self._futures.pop(fut)
                self._args.pop(fut)
                out.append((key, {"state": "failed", "kind": "worker_died",
                                  "error": "the worker pool broke while this run was in flight"}))
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        return out

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_run: float = 1.0,
                 gpus_per_run: float | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise SegarenaError("the Ray executor needs Ray", fix="pip install 'segarena[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                                      "log_to_driver": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        if gpus_per_run is None:
            gpus_per_run = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        self._remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(execute_one)
        self._refs: dict[Any, Any] = {}

    def submit(self, key: Any, *args: Any) -> None:
        self._refs[self._remote.remote(*args)] = key

    def pending(self) -> int:
        return len(self._refs)

    def wait(self) -> list[tuple[Any, dict[str, Any]]]:
        ready, _ = self.ray.wait(list(self._refs), num_returns=1)
        out = []
        for ref in ready:
            key = self._refs.pop(ref)
            try:
                out.append((key, self.ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a lost node or a killed worker is a failed attempt
                out.append((key, {"state": "failed", "kind": type(exc).__name__,
                                  "error": f"Ray task failed: {str(exc).splitlines()[0]}"}))
        return out

    def shutdown(self) -> None:
        pass  # the Ray instance belongs to the user (or ends with the process)


def make_executor(kind: str, workers: int = 1, address: str | None = None):
    if kind == "local":
        import torch

        gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else None
        return LocalExecutor(workers, gpus)
    if kind == "ray":
        return RayExecutor(address=address, num_cpus=None if address else workers)
    raise SegarenaError(f"unknown executor {kind!r}", fix="use local or ray")
