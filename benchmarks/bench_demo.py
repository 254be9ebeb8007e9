"""`segarena demo` end to end: its wall time, CPU time, and each model's test Dice -- the README's numbers.

    python benchmarks/bench_demo.py              # the real demo (run on a quiet machine with 2 cores for the README)
    python benchmarks/bench_demo.py --threads 2  # pin torch to 2 threads (taskset -c 0,1 to pin the cores too)
    python benchmarks/bench_demo.py --tiny       # seconds: the demo's configuration at a tiny size (CI)

The demo runs as a child process with a fresh results folder and a fresh segarena cache (so the one-off dataset
preparation is counted, as on a new machine). On a busy machine wall time is inflated: (user + sys) / cores is
printed next to it as an estimate of the quiet wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import data_root

TINY = ["--set", "protocol.input_size=32", "--set", "protocol.epochs=1", "--set", "protocol.max_steps_per_epoch=1",
        "--set", "protocol.batch_size=2", "--set", "data.limit=25"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    ap.add_argument("--threads", type=int, help="OMP/torch threads of the demo process (default: torch's choice)")
    ap.add_argument("--cores", type=int, default=2, help="cores to divide CPU time by (default 2)")
    ap.add_argument("--keep", help="results folder to keep (default: a temporary one)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_demo_")
    results = a.keep or os.path.join(tmp, "results")
    env = {**os.environ, "SEGARENA_CACHE": os.path.join(tmp, "cache"), "HF_HUB_OFFLINE": "1",
           "SEGARENA_OFFLINE": "1"}
    if data_root():
        env["SEGARENA_DATA_ROOT"] = data_root()
    if a.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(a.threads)
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "segarena", "demo", "--results", results, "--device", "cpu", *(TINY if a.tiny else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        print(f"demo failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    print("command: " + " ".join(cmd[2:]))
    print(f"demo wall time: {wall:.0f} s ({wall / 60:.1f} min); CPU time (user+sys) {cpu:.0f} s; "
          f"CPU/wall ratio {cpu / max(wall, 1e-9):.2f}; quiet-machine estimate (CPU / {a.cores} cores) "
          f"{cpu / a.cores / 60:.1f} min")
    print(f"{'model':<16}{'case Dice':>10}{'mDSC':>8}{'epochs':>8}{'train s':>9}{'test s':>8}")
    for summary in sorted(Path(results, "runs").glob("*/summary.json")):
        s = json.loads(summary.read_text())
        m = s["metrics"]
        print(f"{s['model']:<16}{m['dice_case_mean']:>10.3f}{m['mdsc']:>8.3f}{s['epochs_run']:>8}"
              f"{s['train_seconds']:>9.0f}{s['test_seconds']:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
