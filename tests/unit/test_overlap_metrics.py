"""Golden values for the overlap metrics and the named reductions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segarena.metrics.overlap import REDUCTIONS, case_records, confusion, per_class, reduce


def test_confusion_golden():
    ref = np.array([[0, 1, 1], [0, 2, 2], [0, 0, 1]])
    pred = np.array([[0, 1, 0], [1, 2, 0], [0, 0, 1]])
    c = confusion(pred, ref, 3)
    # class 1: ref at (0,1),(0,2),(2,2); pred at (0,1),(1,0),(2,2) -> tp 2, fp 1, fn 1
    assert c[1].tolist() == [2, 1, 1, 5]
    # class 2: ref (1,1),(1,2); pred (1,1) -> tp 1, fp 0, fn 1
    assert c[2].tolist() == [1, 0, 1, 7]
    assert c[:, :3].sum() > 0 and (c.sum(1) == 9).all()


def test_confusion_matches_direct_count():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 5))
        ref, pred = rng.integers(0, k, (17, 23)), rng.integers(0, k, (17, 23))
        c = confusion(pred, ref, k)
        for cls in range(k):
            tp = np.sum((pred == cls) & (ref == cls))
            fp = np.sum((pred == cls) & (ref != cls))
            fn = np.sum((pred != cls) & (ref == cls))
            assert c[cls, :3].tolist() == [tp, fp, fn]


def test_case_records_and_empty_policy():
    labels = ("background", "a")
    both_empty = case_records("x", confusion(np.zeros((4, 4)), np.zeros((4, 4)), 2), labels)[0]
    assert both_empty["dice"] == 1.0 and both_empty["iou"] == 1.0 and both_empty["ref_empty"]
    miss = case_records("y", confusion(np.zeros((4, 4)), np.ones((4, 4)), 2), labels)[0]
    assert miss["dice"] == 0.0 and miss["recall"] == 0.0 and np.isnan(miss["precision"])
    false_alarm = case_records("z", confusion(np.ones((4, 4)), np.zeros((4, 4)), 2), labels)[0]
    assert false_alarm["dice"] == 0.0 and np.isnan(false_alarm["recall"])


def _df():
    # two cases, two foreground classes, hand-made counts
    rows = [
        dict(case_id="c1", class_name="a", tp=10, fp=2, fn=3, dice=20 / 25, iou=10 / 15),
        dict(case_id="c1", class_name="b", tp=0, fp=0, fn=0, dice=1.0, iou=1.0),
        dict(case_id="c2", class_name="a", tp=5, fp=5, fn=0, dice=10 / 15, iou=5 / 10),
        dict(case_id="c2", class_name="b", tp=1, fp=0, fn=4, dice=2 / 7, iou=1 / 5),
    ]
    return pd.DataFrame(rows)


def test_pooled_mdsc_is_one_dice_over_all_foreground_pixels():
    r = reduce(_df())
    tp, fp, fn = 16, 7, 7
    assert r["mdsc"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert r["miou"] == pytest.approx(tp / (tp + fp + fn))
    assert r["precision"] == pytest.approx(16 / 23) and r["recall"] == pytest.approx(16 / 23)
    # per-case mean: case means first, then over cases
    assert r["dice_case_mean"] == pytest.approx(((20 / 25 + 1.0) / 2 + (10 / 15 + 2 / 7) / 2) / 2)
    assert set(r) == set(REDUCTIONS)


def test_per_class_pooled():
    pc = per_class(_df())
    assert pc["a"] == pytest.approx(2 * 15 / (2 * 15 + 7 + 3))
    assert pc["b"] == pytest.approx(2 * 1 / (2 + 0 + 4))
