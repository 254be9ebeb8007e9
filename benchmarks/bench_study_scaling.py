"""Study runner scaling: the same small study on 1 and 2 local workers, and on a local Ray instance.
Scaling efficiency = T(1 worker) / (2 x T(2 workers)). Target: >= 0.85 on 2 workers.

Each worker uses one torch thread (SEGARENA_THREADS_PER_WORKER=1), so 1 worker leaves a core idle on a 2-core
machine: that is the comparison a user with N GPUs (or cores) cares about.

    python benchmarks/bench_study_scaling.py --runs 8
"""
from __future__ import annotations

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


def wall(executor: str, workers: int, runs: int, tiny: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = run_study(study_from_dict(study(runs, tiny)), tmp, executor=executor, workers=workers, progress=False)
        assert not out.failed, out.failed
        return time.perf_counter() - t


def main() -> None:
    import os

    os.environ["SEGARENA_THREADS_PER_WORKER"] = "1"  # one core per worker in both configurations (see above)
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--ray", action="store_true", help="also time a local Ray instance with 2 CPUs")
    a = p.parse_args()
    runs = 2 if a.tiny else a.runs
    # prepare once so no timing includes decoding
    from segarena.data.prepare import prepare

    s = study(runs, a.tiny)
    prepare("kvasir-seg", s["protocol"]["input_size"], data_root(), limit=s["data"]["limit"])
    t1 = wall("local", 1, runs, a.tiny)
    t2 = wall("local", 2, runs, a.tiny)
    print(f"{runs} runs: 1 worker {t1:.1f} s, 2 workers {t2:.1f} s")
    print(f"scaling efficiency on 2 workers = {t1 / (2 * t2):.2f} (target >= 0.85)")
    if a.ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            tr = wall("ray", 2, runs, a.tiny)
        finally:
            ray.shutdown()
        print(f"local Ray instance, 2 CPUs: {tr:.1f} s; efficiency vs 1 local worker = {t1 / (2 * tr):.2f}")


if __name__ == "__main__":
    main()
