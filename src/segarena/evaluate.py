"""Score anyone's predictions: mask files from any tool (nnU-Net, MONAI, a second reader) against references,
with segarena's metrics (overlap + boundary), per case and aggregated — so external methods can join a comparison.

Files are matched by stem (``case_0000.png`` predictions also match ``case.png`` references, nnU-Net's naming);
predictions and references must have the same size. Both are read with the one mask rule of
:mod:`segarena.data.masks`: label maps stay as they are, 0/255 and JPEG-compressed 0/255 masks become 0/1, an
explicit ``mask_values`` mapping (``--mask-values``) overrides it. So segarena's own 0/1 predictions score correctly
against 0/255 PNG or JPEG references such as Kvasir-SEG's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ._errors import DataError
from .data.adapters._common import list_images
from .data.io import read_gray
from .data.masks import MaskValues, to_labels
from .metrics.distance import case_surface_metrics
from .metrics.overlap import case_records, confusion, per_class, reduce


def _labels_of(values: set[int], labels: list[str] | None) -> list[str]:
    if labels:
        return list(labels)
    k = max(values) + 1 if values else 2
    return ["background"] + [f"class {i}" for i in range(1, max(k, 2))]


def evaluate_folders(pred: str | os.PathLike, ref: str | os.PathLike, *, labels: list[str] | None = None,
                     spacing: tuple[float, float] | None = None, tau: float = 2.0,
                     mask_values: MaskValues = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-case, per-class records and the named reductions for two folders of masks."""
    preds, refs = list_images(Path(pred), "predictions"), list_images(Path(ref), "references")
    preds = _nnunet_names(preds, refs)
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise DataError(f"{len(missing)} reference(s) without prediction, e.g. {refs[missing[0]]}",
                        fix="predict every case, or evaluate on a folder holding only the predicted references")
    if not refs:
        raise DataError(f"no reference masks in {ref}", fix="point --ref at a folder of mask images")
    loaded = []
    for stem in sorted(refs):
        k = len(labels) if labels else None
        p = to_labels(read_gray(preds[stem]), preds[stem], k, mask_values)
        r = to_labels(read_gray(refs[stem]), refs[stem], k, mask_values)
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


def _nnunet_names(preds: dict[str, Path], refs: dict[str, Path]) -> dict[str, Path]:
    """Predictions named after nnU-Net image files (``case_0000``) matched to references named ``case``."""
    if set(refs) <= set(preds):
        return preds
    out = dict(preds)
    for stem, p in preds.items():
        if len(stem) > 5 and stem[-5] == "_" and stem[-4:] == "0000" and stem[:-5] in refs and stem[:-5] not in out:
            out[stem[:-5]] = p
    return out
