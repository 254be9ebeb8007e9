"""The test step of a run: once, with the checkpoint chosen on validation, per-case records (overlap and surface
metrics), the predictions, the best/worst gallery, and the model's cost measured on this device."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_write
from ..data.prepare import PreparedDataset
from ..metrics.distance import case_surface_metrics
from ..metrics.overlap import case_records, confusion
from ..store import RunStore
from .checkpoint import load_weights
from .context import RunContext, batches, to_device
from .losses import to_labels
from .precision import predict_logits


def evaluate(ctx: RunContext) -> tuple[Any, float]:
    """Test once, with the checkpoint chosen on validation: records, predictions and the gallery are written.
    Returns the records table and when the test began (the test time counts until the summary)."""
    import pandas as pd

    started = time.time()
    spec, store, data = ctx.spec, ctx.store, ctx.data
    load_weights(ctx.model, store.dir / "checkpoint")
    extra = {"run_id": spec.run_id, "model": spec.model.name, "dataset": data.card.name, "fold": spec.data.fold,
             "seed": spec.protocol.seed}
    records, preds = evaluate_test(ctx, extra)
    df = pd.DataFrame.from_records(records)
    atomic_write(store.path("records.parquet"), lambda tmp: df.to_parquet(tmp, index=False), suffix=".parquet")
    atomic_write(store.path("predictions.npz"),
                 lambda tmp: np.savez_compressed(tmp, ids=np.array([data.ids[i] for i in ctx.split.test]), labels=preds),
                 suffix=".npz")
    save_gallery(store, data, ctx.split.test, preds, df)
    return df, started


def evaluate_test(ctx: RunContext, extra: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Per-case records (overlap and surface metrics) and network-resolution label maps of the test split."""
    from ..progress import progress_bar

    spec, data, idx, feed = ctx.spec, ctx.data, ctx.split.test, ctx.feed
    labels = data.card.labels
    k = len(labels)
    records: list[dict[str, Any]] = []
    preds = np.zeros((len(idx), data.size, data.size), np.uint8)
    pos = {c: i for i, c in enumerate(idx)}
    for b in progress_bar(batches(idx, feed.batch_size), desc=f"test ({len(idx)} cases)",
                          enabled=ctx.progress, unit="batch"):
        x, _, order = to_device(data, b, feed)
        logits = predict_logits(ctx.model, x, feed.device, feed.amp)
        for j, case in enumerate(order):
            preds[pos[case]] = to_labels(logits[j:j + 1])[0].cpu().numpy().astype(np.uint8)
            if spec.protocol.eval_resolution == "native":
                h, w = data.native_shape(case)
                up = F.interpolate(logits[j:j + 1], size=(h, w), mode="bilinear", align_corners=False)
                pred = to_labels(up)[0].cpu().numpy()
                ref = data.native_mask(case)
            else:
                pred = preds[pos[case]]
                ref = np.asarray(data.masks[case])
                h, w = ref.shape
            counts = confusion(pred, ref, k)
            spacing = data.meta(case).get("spacing_mm")
            if spacing and spec.protocol.eval_resolution == "network":  # pixels were resized: rescale spacing
                nh, nw = data.native_shape(case)
                spacing = (spacing[0] * nh / h, spacing[1] * nw / w)
            recs = case_records(data.ids[case], counts, labels,
                                {**extra, "height": h, "width": w, "spacing_unit": "mm" if spacing else "px",
                                 "spacing_y": float(spacing[0]) if spacing else 1.0,
                                 "spacing_x": float(spacing[1]) if spacing else 1.0})
            surf = case_surface_metrics(pred, ref, range(1, k), spacing or (1.0, 1.0), spec.protocol.nsd_tau)
            for r, sm in zip(recs, surf):
                r.update({key: sm[key] for key in ("hd", "hd95", "assd", "nsd", "nsd_tau")}, surface_empty=sm["empty"])
            records += recs
    return records, preds


def save_gallery(store: RunStore, data: PreparedDataset, test_idx: list[int], preds: np.ndarray, df,
                  n: int = 3) -> None:
    """Best and worst test cases (by per-case Dice) as image | overlay PNGs, for the report."""
    from PIL import Image

    from .._paths import file_part
    from ..data.overlay import side_by_side

    case_dice = df.groupby("case_id")["dice"].mean().sort_values(kind="stable")
    pos = {data.ids[i]: (j, i) for j, i in enumerate(test_idx)}
    folder = store.dir / "gallery"
    folder.mkdir(exist_ok=True)
    picks = [("worst", c) for c in case_dice.index[:n]] + [("best", c) for c in case_dice.index[::-1][:n]]
    for rank, (kind, cid) in enumerate(picks):
        j, i = pos[cid]
        strip = side_by_side(np.asarray(data.images[i]), np.asarray(data.masks[i]), preds[j])
        name = f"{kind}_{rank % n}_{file_part(cid)}_dice{case_dice[cid]:.3f}.png"  # case ids may hold '/'
        atomic_write(folder / name, lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"), suffix=".png")


def efficiency(model, p, in_channels: int, device: torch.device) -> dict[str, Any]:
    """Parameters, FLOPs/MACs, latency (batch 1) and throughput at the protocol's input size on this device."""
    from ..metrics.efficiency import cached_efficiency

    try:  # measured once per (model, size, batch, device, precision), then reused by every run (the cache)
        eff, hit = cached_efficiency(model, p.input_size, in_channels=in_channels, device=device,
                                     batch_size=p.batch_size, warmup=1, repeats=3 if device.type == "cpu" else 20,
                                     dtype=torch.bfloat16 if p.amp and device.type == "cuda" else torch.float32,
                                     name=model.card.name)
        return {**eff.to_dict(), "cached": hit}
    except Exception as exc:  # noqa: BLE001 - a cost measurement must never lose a finished run's results
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


__all__ = ["efficiency", "evaluate", "evaluate_test", "save_gallery"]
