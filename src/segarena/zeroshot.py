"""Zero-shot LiteMedSAM with **oracle** box prompts: the upper bound an interactive user drawing boxes would get.

MedSAM segments what a box points at. Here each box is the tight bounding box of one connected component of the
*reference* mask (per foreground class), so the result uses the answer to place the prompt: it is labelled
``oracle-prompted`` everywhere (model name ``litemedsam-oracle-box``, ``"prompt": "oracle"`` in its summary) and
is written to its own folder, never into a results folder that a ranking reads. No training happens.

Procedure (as MedSAM's inference): the image is resized to 256x256 (the prepared cache at 256), scaled to
[0, 1]; each component's box is scaled to those coordinates; LiteMedSAM's single-mask logits for each box are
resized to the image's native size and thresholded at 0 (probability 0.5); a case's prediction is the union of
its boxes' masks (per class, later classes drawn over earlier ones). Metrics are those of every run, at native
resolution, on the same test fold the protocol uses.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._io import atomic_write, write_json
from .progress import progress_bar

MODEL_NAME = "litemedsam-oracle-box"
SIZE = 256


def oracle_boxes(mask: np.ndarray, label: int = 1) -> list[tuple[float, float, float, float]]:
    """Tight ``(x0, y0, x1, y1)`` pixel boxes, one per 8-connected component of ``mask == label``."""
    from scipy import ndimage

    comp, n = ndimage.label(mask == label, structure=np.ones((3, 3), bool))
    boxes = []
    for sl in ndimage.find_objects(comp):
        if sl is not None:
            ys, xs = sl
            boxes.append((float(xs.start), float(ys.start), float(xs.stop - 1), float(ys.stop - 1)))
    return boxes


@torch.no_grad()
def predict_with_boxes(net: torch.nn.Module, image_u8: np.ndarray, native_ref: np.ndarray,
                       num_classes: int, device: torch.device | str = "cpu") -> np.ndarray:
    """Label map at the reference's native size from oracle boxes of ``native_ref`` on a 256² ``image_u8``."""
    h, w = native_ref.shape
    x = torch.from_numpy(np.ascontiguousarray(image_u8)).permute(2, 0, 1).float().div(255.0)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    x = x.unsqueeze(0).to(device)
    pred = np.zeros((h, w), np.uint8)
    emb = None
    sx, sy = x.shape[-1] / w, x.shape[-2] / h
    for c in range(1, num_classes):
        boxes = oracle_boxes(native_ref, c)
        if not boxes:
            continue
        if emb is None:
            emb = net.image_encoder(x)
        b = torch.tensor([[x0 * sx, y0 * sy, x1 * sx, y1 * sy] for x0, y0, x1, y1 in boxes], device=x.device)
        sparse = net.prompt_encoder.embed_boxes(b, tuple(x.shape[-2:]))
        logits = net.decode(emb.expand(len(boxes), -1, -1, -1), sparse)
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        pred[(logits[:, 0] > 0).any(0).cpu().numpy()] = c
    return pred


def zeroshot_oracle(dataset: str = "kvasir-seg", fold: int = 0, *, out: str | os.PathLike = "results/zeroshot",
                    data_root: str | os.PathLike | None = None, num_folds: int = 5, split_seed: int = 0,
                    limit: int | None = None, max_cases: int | None = None, device: str | None = None,
                    progress: bool = False, duplicates: str = "group", split: str = "kfold",
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score oracle-box LiteMedSAM on ``dataset``'s test fold; writes records.parquet and summary.json under
    ``out/<model>__<dataset>__f<fold>`` and returns the summary. ``max_cases``: the first N test cases only.

    The fold is made exactly as a training run's (the same ``load_or_create`` with the same data settings:
    folds, seed, duplicate policy, split kind, adapter options), so its test cases are those of the runs it is
    set beside."""
    import pandas as pd

    from ._errors import SegarenaError
    from .data.prepare import prepare
    from .data.splits import load_or_create, rotation
    from .metrics.distance import case_surface_metrics
    from .metrics.overlap import case_records, confusion, per_class, reduce
    from .models.zoo.litemedsam import load_litemedsam
    from .protocol.precision import pick_device

    dev = pick_device(device)
    data = prepare(dataset, SIZE, data_root, options or {}, limit=limit, progress=progress)
    rec = load_or_create(dataset, data.ids, data.groups, data.index["sha256"], data.index["phash"], num_folds,
                         split_seed, duplicates=duplicates, split=split, meta=data.index["meta"])
    test = rotation(rec["folds"], data.ids, num_folds, fold).test[:max_cases]
    if not test:
        raise SegarenaError(f"fold {fold} of {dataset}: no test cases", fix="use more cases or fewer folds")
    net = load_litemedsam(3).to(dev)
    labels = data.card.labels
    records: list[dict[str, Any]] = []
    for i in progress_bar(test, desc="zero-shot (oracle boxes)", enabled=progress, unit="case"):
        ref = data.native_mask(i)
        pred = predict_with_boxes(net, np.asarray(data.images[i]), ref, len(labels), dev)
        recs = case_records(data.ids[i], confusion(pred, ref, len(labels)), labels,
                            {"model": MODEL_NAME, "dataset": dataset, "fold": fold, "prompt": "oracle",
                             "height": ref.shape[0], "width": ref.shape[1], "spacing_unit": "px"})
        for r, sm in zip(recs, case_surface_metrics(pred, ref, range(1, len(labels)), (1.0, 1.0), 2.0)):
            r.update({k: sm[k] for k in ("hd", "hd95", "assd", "nsd", "nsd_tau")}, surface_empty=sm["empty"])
        records += recs
    df = pd.DataFrame.from_records(records)
    folder = Path(out) / f"{MODEL_NAME}__{dataset}__f{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "records.parquet", lambda tmp: df.to_parquet(tmp, index=False), suffix=".parquet")
    summary = {"model": MODEL_NAME, "prompt": "oracle",
               "note": "oracle-prompted: boxes from the reference masks (an upper bound for interactive use); "
                       "not comparable with automatic models and never ranked with them",
               "dataset": dataset, "fold": fold, "n_test": len(test), "input_size": SIZE,
               "split": {"num_folds": num_folds, "split_seed": split_seed, "duplicates": duplicates, "split": split,
                         "limit": limit, "options": options or {}},
               "metrics": reduce(df), "per_class": per_class(df)}
    write_json(folder / "summary.json", summary)
    summary["folder"] = str(folder)
    return summary


__all__ = ["MODEL_NAME", "oracle_boxes", "predict_with_boxes", "zeroshot_oracle"]
