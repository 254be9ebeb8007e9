"""Score anyone's predictions: mask files from any tool (nnU-Net, MONAI, a second reader) against references,
with segarena's metrics (overlap + boundary), per case and aggregated — so external methods can join a comparison.

Files are matched by stem; predictions and references must be label maps of the same size (or 0/255 binary masks,
mapped with ``mask_values``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ._errors import DataError
from .data.adapters._common import list_images
from .data.io import map_values, read_gray
from .metrics.distance import case_surface_metrics
from .metrics.overlap import case_records, confusion, per_class, reduce


def _labels_of(values: set[int], labels: list[str] | None) -> list[str]:
    if labels:
        return list(labels)
    k = max(values) + 1 if values else 2
    return ["background"] + [f"class {i}" for i in range(1, max(k, 2))]


def evaluate_folders(pred: str | os.PathLike, ref: str | os.PathLike, *, labels: list[str] | None = None,
                     spacing: tuple[float, float] | None = None, tau: float = 2.0,
                     mask_values: dict[int, int] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-case, per-class records and the named reductions for two folders of masks."""
    preds, refs = list_images(Path(pred), "predictions"), list_images(Path(ref), "references")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise DataError(f"{len(missing)} reference(s) without prediction, e.g. {refs[missing[0]]}",
                        fix="predict every case, or evaluate on a folder holding only the predicted references")
    if not refs:
        raise DataError(f"no reference masks in {ref}", fix="point --ref at a folder of mask images")
    loaded = []
    for stem in sorted(refs):
        p, r = read_gray(preds[stem]), read_gray(refs[stem])
        if mask_values:
            p, r = map_values(p, mask_values, preds[stem]), map_values(r, mask_values, refs[stem])
        elif set(pd.unique(r.ravel())) <= {0, 255} and set(pd.unique(p.ravel())) <= {0, 255}:
            p, r = (p > 127).astype("uint8"), (r > 127).astype("uint8")
        if p.shape != r.shape:
            raise DataError(f"{preds[stem]}: size {p.shape[1]}x{p.shape[0]} differs from the reference "
                            f"{refs[stem]} {r.shape[1]}x{r.shape[0]}", fix="predict at the reference's resolution")
        loaded.append((stem, p, r))
    values = set()
    for _, p, r in loaded:
        values |= set(pd.unique(r.ravel()).tolist()) | set(pd.unique(p.ravel()).tolist())
    names = _labels_of(values, labels)
    if max(values) >= len(names):
        raise DataError(f"mask values up to {max(values)} but only {len(names)} labels given",
                        fix="pass every class name with --labels (background first) or map values with "
                            "--mask-values")
    records = []
    for stem, p, r in loaded:
        recs = case_records(stem, confusion(p, r, len(names)), names,
                            {"spacing_unit": "mm" if spacing else "px"})
        surf = case_surface_metrics(p, r, range(1, len(names)), spacing or (1.0, 1.0), tau)
        for rec, sm in zip(recs, surf):
            rec.update({k: sm[k] for k in ("hd", "hd95", "assd", "nsd", "nsd_tau")}, surface_empty=sm["empty"])
        records += recs
    df = pd.DataFrame.from_records(records)
    summary = {"cases": len(loaded), "labels": names, "metrics": reduce(df), "per_class": per_class(df),
               "empty_reference_cases": int(df.groupby("case_id")["ref_empty"].all().sum()),
               "surface_empty_cases": int((df["surface_empty"] != "none").sum())}
    return df, summary
