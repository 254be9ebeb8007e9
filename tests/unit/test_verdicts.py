"""The verdict rule on per-case tables built by hand: the metric that decides, the direction of a significant
difference, ties for first, qualified language, and strict JSON. Expected values are computed here with numpy and
scipy (never ``segarena.stats``)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from segarena.report.verdicts import build_verdicts, to_json


def _cases(per_model: dict[str, list[tuple[float, float, float]]], folds: int = 2) -> pd.DataFrame:
    """(dice, num, den) per case for each model -> the per-case table the report builds from records."""
    rows = []
    for m, vals in per_model.items():
        for i, (dice, num, den) in enumerate(vals):
            rows.append({"model": m, "dataset": "d", "fold": i % folds, "seed": 0, "case_id": f"c{i:02d}",
                         "dice": dice, "num": num, "den": den, "ref_empty": False})
    return pd.DataFrame(rows)


def test_verdict_follows_per_case_dice_and_the_sign(tmp_path):
    """Pooled mDSC favours A (big lesions), per-case Dice favours B significantly: B is the anchor, A is worse,
    and the report says that pooled mDSC disagrees. (The bug: B was called 'significantly worse'.)"""
    rng = np.random.default_rng(0)
    big, small = 10, 20
    a = [(0.99, 0.99 * 1e4, 1e4)] * big + [(0.3 + 0.01 * rng.random(), 30.0, 100.0) for _ in range(small)]
    b = [(0.90, 0.90 * 1e4, 1e4)] * big + [(0.8 + 0.01 * rng.random(), 80.0, 100.0) for _ in range(small)]
    rep = build_verdicts(_cases({"A": a, "B": b}), pd.DataFrame(), pd.DataFrame(), n_boot=300)
    d = rep["datasets"]["d"]
    da, db = np.array([v[0] for v in a]), np.array([v[0] for v in b])
    pooled_a = sum(v[1] for v in a) / sum(v[2] for v in a)
    pooled_b = sum(v[1] for v in b) / sum(v[2] for v in b)
    assert pooled_a > pooled_b and db.mean() > da.mean()  # the planted disagreement
    assert d["anchor"] == "B" and d["models"]["A"]["relation"] == "worse"
    assert d["models"]["A"]["difference"] == pytest.approx(da.mean() - db.mean())
    assert d["models"]["A"]["p_holm"] == pytest.approx(sst.wilcoxon(da - db).pvalue)  # one pair: Holm = p
    assert d["pooled_mdsc"]["A"]["estimate"] == pytest.approx(pooled_a)
    line = rep["summary"][0]
    assert line.startswith(f"On d, B has the highest mean per-case Dice: {db.mean() * 100:.1f}%")
    assert "Significantly worse on per-case Dice: A (" in line and "On pooled mDSC" in line
    assert "B" not in line.split("Significantly worse on per-case Dice: ")[1].split(")")[0]


def test_significant_but_opposite_directions_is_not_a_verdict():
    """27 cases where A is slightly higher, 3 where it is far lower: the mean says B, the ranks say A. The Wilcoxon
    test is significant, but no 'better' or 'worse' is claimed."""
    b = [(0.8, 0.8, 1.0)] * 30
    a = [(0.81, 0.81, 1.0)] * 27 + [(0.1, 0.1, 1.0)] * 3
    rep = build_verdicts(_cases({"A": a, "B": b}), pd.DataFrame(), pd.DataFrame(), n_boot=200)
    d = rep["datasets"]["d"]
    diff = np.array([v[0] for v in a]) - 0.8
    assert sst.wilcoxon(diff).pvalue < 0.05 and diff.mean() < 0  # the planted contradiction
    assert d["anchor"] == "B" and d["models"]["A"]["relation"] == "tied" and "opposite" in d["models"]["A"]["note"]
    line = rep["summary"][0]
    assert "No verdict (the test is significant, but the mean difference and the ranks disagree" in line
    assert "tied" not in line and "worse" not in line
    assert rep["pairwise"][0].startswith("A has no verdict against B on per-case Dice on d (")


def test_one_model_only():
    rep = build_verdicts(_cases({"A": [(0.5, 1.0, 2.0)] * 25}), pd.DataFrame(), pd.DataFrame(), n_boot=50)
    d = rep["datasets"]["d"]
    assert d["anchor"] == "A" and d["models"] == {} and rep["pairwise"] == []
    assert rep["summary"][0].startswith("On d, only A was evaluated: per-case Dice 50.0% (95% CI 50.0–50.0%), "
                                        "25 test cases, 2 folds.")


def test_few_cases_qualify_the_language_and_json_is_strict():
    rng = np.random.default_rng(1)
    good = [(0.9 + 0.01 * rng.random(), 1.0, 1.0) for _ in range(10)]
    bad = [(0.2 + 0.01 * rng.random(), 1.0, 1.0) for _ in range(10)]
    rep = build_verdicts(_cases({"good": good, "bad": bad}), pd.DataFrame(), pd.DataFrame(), n_boot=100)
    d = rep["datasets"]["d"]
    assert d["n_cases"] == 10 and d["qualified"] and d["models"]["bad"]["relation"] == "worse"
    text = " ".join(rep["summary"] + rep["pairwise"])
    assert "significantly" not in text.lower() and "indicative only" in text
    assert any("only 10 paired test cases (fewer than 20)" in c for c in rep["caveats"])
    js = to_json(rep)
    assert "NaN" not in js and json.loads(js)["datasets"]["d"]["anchor"] == "good"


def test_common_cases_only_and_missing_runs_listed():
    full = [(0.8, 0.8, 1.0)] * 20
    half = [(0.7, 0.7, 1.0)] * 20
    cases = _cases({"A": full, "B": half})
    cases = cases[~((cases.model == "B") & (cases.fold == 1))]  # B's fold-1 run failed
    failed = pd.DataFrame([{"run": "B__d__f1", "model": "B", "dataset": "d", "fold": 1, "state": "failed",
                            "error": "boom"}])
    rep = build_verdicts(cases, pd.DataFrame(), failed, n_boot=100)
    d = rep["datasets"]["d"]
    assert d["n_cases"] == 10 and d["folds"] == [0] and d["excluded"] == {"A": 10}
    assert d["estimates"]["A"]["n_cases"] == 10
    assert any("B on d fold 1 (failed)" in c for c in rep["caveats"])
    assert rep["missing_runs"][0]["run"] == "B__d__f1"


def _flat(d, prefix=""):
    """A nested dict of numbers and strings as one flat dict (for comparing with a tolerance)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out.update({f"{prefix}{k}.{i}": x for i, x in enumerate(v)})
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_seeds_of_a_case_are_one_unit():
    """Three seeds of the same 24 cases must not look like 72 independent cases: the CI is that of 24 cases."""
    rng = np.random.default_rng(3)
    a = [(0.7 + 0.2 * rng.random(), 1.0, 1.0) for _ in range(24)]
    b = [(0.6 + 0.2 * rng.random(), 1.0, 1.0) for _ in range(24)]
    one = _cases({"A": a, "B": b})
    three = pd.concat([one.assign(seed=s) for s in range(3)], ignore_index=True)
    r1 = build_verdicts(one, pd.DataFrame(), pd.DataFrame(), n_boot=300)["datasets"]["d"]
    r3 = build_verdicts(three, pd.DataFrame(), pd.DataFrame(), n_boot=300)["datasets"]["d"]
    assert r3["n_cases"] == 24 and r3["n_seeds"] == 3
    # equal up to rounding: a case's three seeds are averaged first, which can move the last bit of its value
    for part in ("estimates", "models"):
        f3, f1 = _flat(r3[part]), _flat(r1[part])
        assert f3.keys() == f1.keys()
        for k in f1:
            assert f3[k] == (pytest.approx(f1[k], rel=1e-12) if isinstance(f1[k], float) else f1[k]), k
