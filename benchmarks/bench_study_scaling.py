"""Study runner scaling: the same small study on 1 worker using every core, and on N workers (one core each).

Like with like: both configurations get the whole machine. The baseline is one worker whose runs use all
``os.cpu_count()`` = N torch threads (``SEGARENA_THREADS_PER_RUN=N``); the parallel configuration is N workers
whose runs use one thread each (the default rule, which keeps results independent of the worker count). Both use
the same N cores, so the figure is the speed-up T(1 worker, N threads) / T(N workers, 1 thread each): 1.0 means
the same wall time, above 1.0 that independent runs use the cores better than intra-op threads do. Timed in
interleaved repeats (1, N, 1, N, ...); min / median / max of the per-repeat ratio.

    python benchmarks/bench_study_scaling.py --runs 8 --repeats 3
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

from _common import data_root, parser

from segarena.runner.study import study_from_dict
from segarena.runner.study_runner import run_study


def study(runs: int, tiny: bool) -> dict:
    return {"name": "scaling", "models": ["tiny-unet"], "datasets": ["kvasir-seg"], "folds": [0],
            "seeds": list(range(runs)), "data": {"limit": 40 if tiny else 200, "root": data_root()},
            "protocol": {"input_size": 32 if tiny else 96, "epochs": 1 if tiny else 4, "batch_size": 8,
                         "patience": None, "amp": False, "augmentation": "paper"}}


def wall(executor: str, workers: int, threads: int, runs: int, tiny: bool) -> float:
    os.environ["SEGARENA_THREADS_PER_RUN"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = run_study(study_from_dict(study(runs, tiny)), tmp, executor=executor, workers=workers, progress=False)
        assert not out.failed, out.failed
        return time.perf_counter() - t


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of (1 worker, N workers)")
    p.add_argument("--ray", action="store_true", help="also time a local Ray instance with N CPUs")
    a = p.parse_args()
    cores = os.cpu_count() or 1
    runs, repeats = (2, 1) if a.tiny else (a.runs, a.repeats)
    from segarena.data.prepare import prepare  # prepare once so no timing includes decoding

    s = study(runs, a.tiny)
    prepare("kvasir-seg", s["protocol"]["input_size"], data_root(), limit=s["data"]["limit"])
    t1, tn = [], []
    for _ in range(repeats):
        t1.append(wall("local", 1, cores, runs, a.tiny))
        tn.append(wall("local", cores, 1, runs, a.tiny))
    ratio = sorted(x / y for x, y in zip(t1, tn))
    print(f"{runs} runs, {cores} cores, {repeats} interleaved repeats: 1 worker x {cores} threads "
          f"{statistics.median(t1):.1f} s (median), {cores} workers x 1 thread {statistics.median(tn):.1f} s")
    print(f"speed-up of {cores} workers over 1 worker with all cores (same cores): min {ratio[0]:.2f}, "
          f"median {statistics.median(ratio):.2f}, max {ratio[-1]:.2f}")
    if a.ray:
        import ray

        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        try:
            tr = wall("ray", cores, 1, runs, a.tiny)
        finally:
            ray.shutdown()
        print(f"local Ray instance, {cores} CPUs: {tr:.1f} s; speed-up over 1 local worker with all cores = "
              f"{statistics.median(t1) / tr:.2f}")


if __name__ == "__main__":
    main()
