"""``explain(run_dir)``: CAMs and their measures for selected test cases of a finished run, plus PNG galleries.

Borst & Kounev (2026) looked at Grad-CAMs of the 50 worst test cases of each fold, qualitatively. This measures
them: per case and foreground class, the CAM's energy share inside the reference and the deletion AUC (see
:mod:`segarena.xai.measures`), written to ``<run_dir>/xai/measures.parquet`` next to one PNG per case
(image | overlay | CAM heatmap, one row per foreground class).

Everything is computed at the run's network size on the prepared cache the run was trained from, with the
checkpoint the run selected on validation.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._errors import ConfigError, SegarenaError
from .._io import atomic_write
from .cam import check_method, compute_cam
from .measures import curve_auc, deletion_curve, energy_share, removal_baseline

if TYPE_CHECKING:
    import pandas as pd

_KEY = ["method", "case_id", "class_id"]


def select_cases(spec: str, case_dice: pd.Series) -> list[str]:
    """``"worst:N"``, ``"best:N"``, ``"all"`` or ``"id1,id2"`` -> case ids, from a Series case id -> mean Dice.

    Worst/best rank by the per-case Dice (mean over foreground classes) of the run's test records; ties keep
    the records' order.
    """
    text = str(spec).strip()
    m = re.fullmatch(r"(worst|best):(\d+)", text)
    if m:
        n = int(m.group(2))
        if n < 1:
            raise ConfigError(f"--cases {text}: N must be >= 1", fix="e.g. --cases worst:50")
        return list(case_dice.sort_values(ascending=m.group(1) == "worst", kind="stable").index[:n])
    if text == "all":
        return list(case_dice.index)
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids or text.startswith(("worst", "best")):
        raise ConfigError(f"--cases {text!r} is not understood",
                          fix="use worst:N, best:N, all, or a comma-separated list of test case ids")
    unknown = [i for i in ids if i not in case_dice.index]
    if unknown:
        raise ConfigError(f"case id(s) {unknown[:3]} are not in this run's test split",
                          fix=f"pick test cases, e.g. {', '.join(map(str, list(case_dice.index)[:3]))}")
    return ids


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise SegarenaError(f"{path} not found ({what})",
                            fix="pass the folder of a finished run (results/runs/<run_name>)")
    return path


def explain(run_dir: str | os.PathLike, cases: str = "worst:50", method: str = "gradcam",
            out: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None, *,
            steps: int = 20, baseline: str = "mean", random_order: bool = True, gallery: bool = True,
            device: str | torch.device | None = None) -> pd.DataFrame:
    """Explain the selected test cases of a finished run; returns the per-case measures as a DataFrame.

    Rows are (case, foreground class). ``out`` defaults to ``<run_dir>/xai``; ``measures.parquet`` there keeps
    rows of earlier calls with other methods or cases (rows with the same method, case and class are replaced).
    ``random_order`` adds the deletion AUC of a seeded random pixel order as each case's reference.
    """
    import pandas as pd

    from ..data.augment import normalize
    from ..data.prepare import prepare
    from ..protocol.checkpoint import build_from_checkpoint
    from ..protocol.precision import pick_device
    from ..store import RunStore

    method = check_method(method)
    removal_baseline(torch.zeros(1, 1, 4, 4), baseline)  # validates the name before any work
    run_dir = Path(run_dir).expanduser()
    for name, what in (("spec.json", "the run's spec"), ("split.json", "the run's split"),
                       ("records.parquet", "test records; is the run complete?"),
                       ("checkpoint/model.json", "the selected checkpoint")):
        _require(run_dir / name, what)
    store = RunStore(run_dir)
    spec = store.spec
    dev = pick_device(device)
    model, info = build_from_checkpoint(run_dir / "checkpoint", dev)
    records = store.records()
    test_ids = json.loads((run_dir / "split.json").read_text())["test"]
    case_dice = records.groupby("case_id", sort=False)["dice"].mean()
    case_dice = case_dice.reindex([c for c in test_ids if c in case_dice.index])
    chosen = select_cases(cases, case_dice)

    data = prepare(spec.data.name, int(info["input_size"]), data_root or spec.data.root, spec.data.options,
                   limit=spec.data.limit)
    where = {cid: i for i, cid in enumerate(data.ids)}
    missing = [c for c in chosen if c not in where]
    if missing:
        raise SegarenaError(f"test case(s) {missing[:3]} of {run_dir.name} are not in the dataset found under "
                            f"{data_root or spec.data.root or 'the default data root'}",
                            fix="pass --data-root pointing at the data the run was trained on")
    labels = list(info["labels"])
    classes = list(range(1, len(labels)))
    mean, std = tuple(info["mean"]), tuple(info["std"])
    rec = records.set_index(["case_id", "class_id"])
    folder = Path(out).expanduser() if out else run_dir / "xai"
    text = str(cases).strip()
    kind = text.split(":")[0] if re.fullmatch(r"(worst|best):\d+", text) else "all" if text == "all" else "case"

    rows: list[dict[str, Any]] = []
    for rank, cid in enumerate(chosen):
        i = where[cid]
        image = np.asarray(data.images[i])
        gt = np.asarray(data.masks[i])
        x = normalize(torch.from_numpy(image[None].copy()), mean, std).to(dev)
        res = compute_cam(model, x.repeat(len(classes), 1, 1, 1), classes, method)
        seed = zlib.crc32(str(cid).encode())
        for j, c in enumerate(classes):
            cam, region = res.cam[j], res.region[j]
            curve = deletion_curve(model, x, cam, c, region, steps, baseline, seed=seed)
            row = {
                "run_id": spec.run_id, "model": spec.model.name, "dataset": data.card.name, "fold": spec.data.fold,
                "seed": spec.protocol.seed, "method": method, "case_id": cid, "class_id": c,
                "class_name": labels[c], "dice": _dice(rec, cid, c), "ref_empty": not (gt == c).any(),
                "pred_empty": not region.any(), "energy_share": energy_share(cam, gt == c),
                "ref_fraction": float((gt == c).mean()), "score0": float(curve[0]),
                "deletion_auc": curve_auc(curve) if region.any() else float("nan"),
                "deletion_auc_random": float("nan"), "baseline": baseline, "steps": steps,
                "input_size": int(info["input_size"]),
            }
            if random_order and region.any():
                noise = np.random.default_rng(seed + 1).random(cam.shape)
                row["deletion_auc_random"] = curve_auc(deletion_curve(model, x, noise, c, region, steps, baseline,
                                                                      seed=seed))
            rows.append(row)
        if gallery:
            _save_panel(folder / f"{method}_{kind}{rank:03d}_{_safe(cid)}.png", image, gt, res, classes)
    df = pd.DataFrame(rows)
    _write_measures(folder / "measures.parquet", df)
    return df


def _dice(rec: Any, cid: str, c: int) -> float:
    try:
        return float(rec.loc[(cid, c), "dice"])
    except KeyError:
        return float("nan")


def _safe(cid: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(cid))[:80]


def _write_measures(path: Path, df: Any) -> None:
    """Merge into an existing measures file (same method/case/class replaced), then write atomically."""
    import pandas as pd

    if path.is_file():
        old = pd.read_parquet(path)
        if set(_KEY) <= set(old.columns) and len(old):
            keep = ~old.set_index(_KEY).index.isin(df.set_index(_KEY).index)
            df = pd.concat([old[keep], df], ignore_index=True)
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False), suffix=".parquet")


def heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """CAM [H, W] in [0, 1] as a jet heatmap blended over ``image`` uint8 [H, W, C] -> uint8 RGB."""
    from matplotlib import colormaps

    rgb = _rgb(image).astype(np.float32)
    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255.0
    return np.clip((1 - alpha) * rgb + alpha * heat, 0, 255).astype(np.uint8)


def _rgb(image: np.ndarray) -> np.ndarray:
    img = image if image.ndim == 3 else image[..., None]
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def _save_panel(path: Path, image: np.ndarray, gt: np.ndarray, res: Any, classes: list[int]) -> None:
    """One row per class: image | overlay (reference outline green, prediction red) | CAM heatmap."""
    from PIL import Image

    from ..data.overlay import overlay

    h = image.shape[0]
    gap = np.full((h, 4, 3), 255, np.uint8)
    rows = []
    for j, c in enumerate(classes):
        rows.append(np.concatenate([_rgb(image), gap, overlay(image, (gt == c).astype(np.uint8),
                                                             res.region[j].astype(np.uint8)),
                                    gap, heatmap(image, res.cam[j])], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    panel = np.concatenate(rows[:-1], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Image.fromarray(panel).save(tmp, format="PNG"), suffix=".png")


__all__ = ["explain", "heatmap", "select_cases"]
