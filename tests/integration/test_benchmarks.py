"""Every benchmark script runs in its tiny mode, so none can rot. The numbers are printed, never asserted."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("bench_*.py"))


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_tiny_mode(script, real_data_root, tmp_path):
    env = {**os.environ, "SEGARENA_DATA_ROOT": str(real_data_root), "SEGARENA_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, str(BENCH / script), "--tiny"], capture_output=True, text=True, env=env,
                         cwd=BENCH, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ratio" in out.stdout or "speed-up" in out.stdout or "efficiency" in out.stdout, out.stdout
