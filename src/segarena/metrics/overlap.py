"""Overlap metrics from per-case, per-class confusion counts, and the named reductions over them.

The unit of evaluation is one record per (case, foreground class) with its counts (tp, fp, fn, tn). Every number
in a table is a *named* reduction of these records:

- ``mdsc`` — Borst & Kounev's mDSC: foreground pixels pooled over the whole split *and* over all foreground
  classes, then one Dice ``2ΣTP / (2ΣTP + ΣFP + ΣFN)``. Background is excluded. (``miou``, ``precision``,
  ``recall`` likewise pooled.)
- ``dice_case_mean`` — the mean over cases of each case's Dice (itself the mean over its foreground classes).
- ``dice_class_pooled`` — one pooled Dice per class (the paper's per-class table).

Empty-mask policy (stated once, Metrics Reloaded style): per case and class, when reference and prediction are
both empty, Dice = IoU = 1 (a correct "nothing here"); when exactly one is empty, Dice = IoU = 0 (a miss or a false
alarm is penalized, never dropped). Precision is undefined (NaN) without predicted pixels and recall without
reference pixels, except both-empty which counts as 1. Pooled metrics need no such rule.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

COUNT_COLUMNS = ("tp", "fp", "fn", "tn")


def confusion(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[K, 4]`` (tp, fp, fn, tn) of each class for one case, from two label maps of equal shape."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    k = num_classes
    cm = np.bincount(ref.astype(np.int64).ravel() * k + pred.astype(np.int64).ravel(), minlength=k * k)
    cm = cm[: k * k].reshape(k, k)  # rows: reference, columns: prediction
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1)


def _safe(num: np.ndarray, den: np.ndarray, both_empty: np.ndarray, empty_value: float = np.nan) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.maximum(den, 1), empty_value)
    return np.where(both_empty, 1.0, out)


def case_records(case_id: str, counts: np.ndarray, labels: tuple[str, ...] | list[str],
                 extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One record per foreground class of one case, with counts and the per-case metrics."""
    recs = []
    for k in range(1, len(labels)):
        tp, fp, fn, tn = (int(v) for v in counts[k])
        ref_empty, pred_empty = tp + fn == 0, tp + fp == 0
        both = ref_empty and pred_empty
        rec = {
            "case_id": case_id, "class_id": k, "class_name": labels[k], "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "ref_empty": ref_empty, "pred_empty": pred_empty,
            "dice": 1.0 if both else 2 * tp / (2 * tp + fp + fn),
            "iou": 1.0 if both else tp / (tp + fp + fn),
            "precision": 1.0 if both else (tp / (tp + fp) if tp + fp else float("nan")),
            "recall": 1.0 if both else (tp / (tp + fn) if tp + fn else float("nan")),
        }
        if extra:
            rec.update(extra)
        recs.append(rec)
    return recs


# ---- named reductions ---------------------------------------------------------------------------------------
def _pooled(df: pd.DataFrame) -> tuple[float, float, float]:
    return float(df["tp"].sum()), float(df["fp"].sum()), float(df["fn"].sum())


def mdsc(df: pd.DataFrame) -> float:
    tp, fp, fn = _pooled(df)
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0


def miou(df: pd.DataFrame) -> float:
    tp, fp, fn = _pooled(df)
    return tp / (tp + fp + fn) if (tp + fp + fn) else 1.0


def precision(df: pd.DataFrame) -> float:
    tp, fp, _ = _pooled(df)
    return tp / (tp + fp) if (tp + fp) else float("nan")


def recall(df: pd.DataFrame) -> float:
    tp, _, fn = _pooled(df)
    return tp / (tp + fn) if (tp + fn) else float("nan")


def dice_case_mean(df: pd.DataFrame) -> float:
    return float(df.groupby("case_id")["dice"].mean().mean())


def iou_case_mean(df: pd.DataFrame) -> float:
    return float(df.groupby("case_id")["iou"].mean().mean())


def _mean_of(column: str) -> Callable[[pd.DataFrame], float]:
    def f(df: pd.DataFrame) -> float:
        return float(df[column].mean()) if column in df else float("nan")

    f.__name__ = f"{column}_mean"
    return f


REDUCTIONS: dict[str, Callable[[pd.DataFrame], float]] = {
    "mdsc": mdsc, "miou": miou, "precision": precision, "recall": recall,
    "dice_case_mean": dice_case_mean, "iou_case_mean": iou_case_mean,
    # boundary metrics: mean over (case, class) records; empty masks enter with the penalty of the policy in
    # segarena.metrics.distance (the image diagonal for HD/ASSD, 0 for NSD), never dropped
    "hd95_mean": _mean_of("hd95"), "assd_mean": _mean_of("assd"), "nsd_mean": _mean_of("nsd"),
}

#: plain-language description of each reduction (shown in reports)
DESCRIPTIONS = {
    "mdsc": "Dice of foreground pixels pooled over all test cases and classes (Borst & Kounev's mDSC)",
    "miou": "IoU of pooled foreground pixels",
    "precision": "pooled foreground precision",
    "recall": "pooled foreground recall",
    "dice_case_mean": "mean over cases of the per-case Dice (empty-mask policy applies)",
    "iou_case_mean": "mean over cases of the per-case IoU",
    "hd95_mean": "mean 95th-percentile Hausdorff distance (mm where the pixel size is known, else pixels)",
    "assd_mean": "mean average symmetric surface distance (mm or pixels)",
    "nsd_mean": "mean normalized surface Dice at tolerance tau",
}


def reduce(df: pd.DataFrame, names: list[str] | tuple[str, ...] = tuple(REDUCTIONS)) -> dict[str, float]:
    return {n: REDUCTIONS[n](df) for n in names}


def per_class(df: pd.DataFrame) -> dict[str, float]:
    """Pooled Dice per class (``dice_class_pooled``)."""
    return {str(name): mdsc(g) for name, g in df.groupby("class_name", sort=False)}
