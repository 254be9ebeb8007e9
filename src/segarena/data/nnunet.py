"""Writing nnU-Net v2: any segarena dataset as an nnU-Net raw dataset, segarena's split as ``splits_final.json``.

So a user can train the real nnU-Net on exactly segarena's folds and bring its predictions back (``segarena
evaluate`` / ``add-method``). Reading nnU-Net data is the ``nnunet`` adapter (:mod:`.adapters.folder`).

Layout written under ``<out>/Dataset<ID>_<Name>/``:
  dataset.json        channel_names (R, G, B or one grey channel), labels, numTraining, file_ending ".png"
  imagesTr/<case>_0000.png   the decoded image, lossless (RGB in one file: nnU-Net's NaturalImage2DIO)
  labelsTr/<case>.png        the label map (uint8, 0..K-1) exactly as segarena trains on it
  splits_final.json   fold r: ``val`` = segarena's test fold of rotation r, ``train`` = every other case
                      (duplicates removed by ``duplicates=remove`` are left out); copy it to
                      ``$nnUNet_preprocessed/Dataset<ID>_<Name>/`` after ``nnUNetv2_plan_and_preprocess``.

nnU-Net has no separate validation fold, so its fold r trains on segarena's train + validation folds of rotation r
and its cross-validation predictions of fold r are exactly segarena's test cases of fold r.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError
from .._io import write_json

_SAFE = re.compile(r"[^A-Za-z0-9.-]+")


def nnunet_case_id(case_id: str) -> str:
    """A case id nnU-Net can carry in file names: no path characters, and never ending like a channel suffix."""
    cid = _SAFE.sub("-", case_id).strip("-.") or "case"
    return cid + "-" if re.search(r"_\d{4}$", cid) else cid


def splits_final(folds: dict[str, int], num_folds: int, rename: Callable[[str], str] = str) -> list[dict[str, list]]:
    """nnU-Net's ``splits_final.json`` for segarena's ``{case: fold}`` (fold -1: removed duplicate)."""
    out = []
    for r in range(num_folds):
        val = sorted(rename(c) for c, f in folds.items() if f == r)
        train = sorted(rename(c) for c, f in folds.items() if f >= 0 and f != r)
        out.append({"train": train, "val": val})
    return out


def export_nnunet(name: str, out: str | os.PathLike, *, root: str | os.PathLike | None = None,
                  options: dict[str, Any] | None = None, dataset_id: int = 500, num_folds: int = 5, seed: int = 0,
                  duplicates: str = "group", limit: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Write dataset ``name`` as ``<out>/Dataset<ID>_<Name>/`` (see the module docstring); returns that folder.

    The split is the one segarena trains on (same file, same seed, same duplicate handling)."""
    import imagehash
    from PIL import Image

    from . import DATASETS, discover
    from .splits import load_or_create

    if not 1 <= int(dataset_id) <= 999:
        raise DataError(f"--id {dataset_id}: nnU-Net dataset ids are 1..999", fix="e.g. --id 501")
    adapter = DATASETS.get(name)
    card, cases, _ = discover(name, root, options, limit=limit)
    title = re.sub(r"[^A-Za-z0-9]+", "", card.name.split("@")[0].title()) or "Data"
    target = Path(out).expanduser() / f"Dataset{int(dataset_id):03d}_{title}"
    if target.exists() and any(target.iterdir()):
        raise DataError(f"{target} already exists and is not empty", fix="choose another --out or --id")
    ids = {c.id: nnunet_case_id(c.id) for c in cases}
    if len(set(ids.values())) != len(ids):
        raise DataError(f"{name}: case ids collide after making them file-name safe for nnU-Net",
                        fix="rename the cases so that they differ in letters, digits, '.' or '-'")
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "imagesTr").mkdir(parents=True)
    (staging / "labelsTr").mkdir()
    sha, phash, groups = [], [], []
    try:
        for i, case in enumerate(cases):
            img = adapter.load_image(case, card.channels)
            mask = adapter.read_mask(case)
            if mask.shape != img.shape[:2]:
                raise DataError(f"{case.masks[0]}: mask {mask.shape} differs from image {img.shape[:2]}",
                                fix="fix or remove this case (`segarena datasets check` lists all)")
            pil = Image.fromarray(img[..., 0] if card.channels == 1 else img)
            pil.save(staging / "imagesTr" / f"{ids[case.id]}_0000.png")
            Image.fromarray(mask.astype(np.uint8)).save(staging / "labelsTr" / f"{ids[case.id]}.png")
            sha.append(hashlib.sha256(case.image.read_bytes()).hexdigest())
            phash.append(f"{int(str(imagehash.phash(pil.convert('L'))), 16):016x}")
            groups.append(case.group_id)
            if progress is not None:
                progress(i + 1, len(cases))
        rec = load_or_create(card.name, [c.id for c in cases], groups, sha, phash, num_folds, seed,
                             duplicates=duplicates, meta=[c.meta for c in cases])
        channel_names = {"0": "R", "1": "G", "2": "B"} if card.channels == 3 else {"0": "grey"}
        write_json(staging / "dataset.json", {
            "name": card.name, "description": f"{card.title}, exported by segarena", "channel_names": channel_names,
            "labels": {label: i for i, label in enumerate(card.labels)}, "numTraining": len(cases),
            "file_ending": ".png", "overwrite_image_reader_writer": "NaturalImage2DIO",
            "reference": card.citation, "licence": card.license,
            "segarena": {"dataset": name, "options": {k: v for k, v in (options or {}).items()},
                         "num_folds": num_folds, "seed": seed, "duplicates": duplicates,
                         "case_ids": {v: k for k, v in ids.items() if k != v}}})
        write_json(staging / "splits_final.json", splits_final(rec["folds"], num_folds, ids.__getitem__))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_splits_final(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """The folds of an nnU-Net ``splits_final.json``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
