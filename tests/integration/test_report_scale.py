"""The report at scale, by contract: `segarena report` never imports torch, reads a paper-shaped store (LR-search
runs, seeds, cross-dataset records) in a fresh interpreter, and its numbers follow from the per-case records.

The store comes from ``benchmarks/bench_report.py``'s generator (written file by file in segarena's layout, so
the report reads it as it reads a real one); the timings themselves live in that benchmark, not here.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "bench_report.py")
bench_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_report)

_PROBE = """
import json, sys
from segarena.cli import main
rc = main(["report", sys.argv[1]])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm")
               or m.startswith(("segarena.models.", "segarena.protocol", "segarena.runner.crossdata")))
print(json.dumps({"rc": rc, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_shaped")
    counts = bench_report.make_store(root, bench_report.PAPER_MODELS[:4],
                                     dict(list(bench_report.PAPER_DATASETS.items())[:2]), folds=3, cases=30,
                                     extra_seeds=2, lr_search=True, crossdata=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(root)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return root, counts, json.loads(out.stdout.strip().splitlines()[-1])


def test_report_imports_no_torch_and_succeeds(store):
    root, counts, probe = store
    assert probe["rc"] == 0
    assert probe["heavy"] == [], probe["heavy"]
    assert counts["runs"] == 2 * 4 * (3 + 2 + 3)  # 3 folds + 2 extra seeds of fold 0 + 3 LR-search runs
    assert (root / "report" / "report.json").is_file() and (root / "report" / "report.html").is_file()


def test_report_numbers_follow_from_the_records(store):
    """Every estimate of report.json is the mean per-case Dice over the common cases, seeds of a case averaged
    first, recomputed here from the raw records with pandas; the LR-search runs never enter."""
    root, _, _ = store
    rep = json.loads((root / "report" / "report.json").read_text())
    rec = pd.concat([pd.read_parquet(p) for p in sorted((root / "runs").glob("*/records.parquet"))])
    for ds, d in rep["datasets"].items():
        r = rec[rec["dataset"] == ds]
        per_case = r.groupby(["model", "fold", "seed", "case_id"])["dice"].mean()  # mean over classes
        per_case = per_case.groupby(["model", "fold", "case_id"]).mean()  # seeds of a case: one unit
        for m, e in d["estimates"].items():
            assert e["estimate"] == pytest.approx(per_case.loc[m].mean(), rel=1e-12)
            assert e["n_cases"] == 3 * 30
        anchor = max(d["estimates"], key=lambda m: d["estimates"][m]["estimate"])
        assert d["anchor"] == anchor
    lb = {(r["dataset"], r["model"]): r for r in rep["leaderboard"]}
    assert all(r["runs"] == 5 for r in lb.values())  # 3 folds + 2 seeds, no LR-search run among them


def test_pairwise_cost_is_linear_in_models():
    """The pairwise tests draw one bootstrap per dataset: with k models the replicates are drawn once, not
    k (k - 1) / 2 times (counted by wrapping the one Resample class)."""
    from segarena import stats
    from segarena.stats import tests as st_tests

    rng = np.random.default_rng(0)
    df = pd.DataFrame([{"dataset": "d", "model": f"m{j}", "case_id": f"c{i}", "value": rng.random()}
                       for j in range(8) for i in range(30)])
    made = []

    class Counting(stats.Resample):
        def __init__(self, *a, **k):
            made.append(1)
            super().__init__(*a, **k)

    orig = st_tests.Resample
    st_tests.Resample = Counting
    try:
        res = stats.pairwise_comparisons(df, "value", n_boot=50)
    finally:
        st_tests.Resample = orig
    assert len(res) == 28 and len(made) == 1
