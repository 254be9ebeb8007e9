"""Your own data: an ``images/`` + ``masks/`` folder pair, or an nnU-Net v2 2D raw dataset.

``folder`` options (``--set data.options.KEY=VALUE`` or a study file):
  path         folder holding ``images/`` and ``masks/`` (required)
  images/masks sub-folder names (default ``images``/``masks``)
  mask_suffix  suffix of a mask's stem, e.g. ``_mask`` for ``a.png`` -> ``a_mask.png`` (default none)
  mask_values  raw mask value -> class index, e.g. ``{255: 1}``; default: ``{0: 0, 255: 1}`` when the masks are
               0/255, else the values must already be 0..K-1
  labels       class names including background (default ``[background, foreground]``)
  channels     1 or 3 (default 3)

``nnunet``: ``path`` points at ``DatasetXXX_Name/`` with ``imagesTr/<case>_0000.<ext>``, ``labelsTr/<case>.<ext>``
and ``dataset.json`` (``labels``, ``file_ending``, ``channel_names``). PNG/BMP/TIFF/JPEG file endings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..io import map_values, read_gray
from ._common import pair_by_stem


def _card(name: str, labels: list[str] | tuple[str, ...] = ("background", "foreground"), channels: int = 3,
          path: str = "", **_: Any) -> DatasetCard:
    return DatasetCard(name=name, title=f"user dataset at {path}" if path else "user dataset",
                       modality="user-provided", labels=tuple(labels), channels=int(channels),
                       license="the user's", citation="", url="", folder="", grouping="case")


FOLDER_CARD = _card("folder")
NNUNET_CARD = DatasetCard(name="nnunet", title="nnU-Net v2 raw dataset (2D)", modality="user-provided",
                          labels=("background", "foreground"), channels=3, license="the user's", citation="",
                          url="https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/dataset_format.md",
                          folder="")


def _parse_mapping(raw: Any) -> dict[int, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DataError(f"data.options.mask_values must be a mapping like {{255: 1}}, got {raw!r}",
                        fix="e.g. --set 'data.options.mask_values={255: 1}'")
    try:
        return {int(k): int(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f"data.options.mask_values: keys and values must be integers, got {raw!r}") from None


def read_mask(case: Case) -> np.ndarray:
    raw = read_gray(case.masks[0])
    mapping = case.meta.get("mask_values")
    if mapping is None:
        values = set(np.unique(raw).tolist())
        if values <= {0, 255}:
            mapping = {0: 0, 255: 1}
        else:
            mapping = {v: v for v in range(case.meta.get("num_classes", 2))}
    return map_values(raw, mapping, case.masks[0])


def _require_path(options: dict[str, Any], adapter: str) -> Path:
    if not options.get("path"):
        raise DataError(f"dataset {adapter!r} needs a folder",
                        fix=f"pass --set data.options.path=/path/to/folder (or `--data-root` for {adapter})")
    return Path(options["path"]).expanduser()


@register_dataset(FOLDER_CARD, read_mask=read_mask, card_for=lambda **o: _card("folder", **o))
def find_folder(root: Path | None = None, **options: Any) -> list[Case]:
    base = _require_path(options, "folder") if options.get("path") or root is None else Path(root)
    mapping = _parse_mapping(options.get("mask_values"))
    labels = options.get("labels") or ["background", "foreground"]
    pairs = pair_by_stem(base / options.get("images", "images"), base / options.get("masks", "masks"),
                         what=f"folder dataset {base}", mask_suffix=options.get("mask_suffix", ""))
    meta = {"mask_values": mapping, "num_classes": len(labels)}
    return [Case(id=stem, image=img, masks=(msk,), meta=dict(meta)) for stem, img, msk in pairs]


def _nnunet_card(path: str = "", **_: Any) -> DatasetCard:
    info = _dataset_json(Path(path)) if path else {}
    labels = _nnunet_labels(info, Path(path) / "dataset.json") if info else ("background", "foreground")
    channels = len(info.get("channel_names", {"0": "R", "1": "G", "2": "B"}))
    return DatasetCard(name="nnunet", title=info.get("name", f"nnU-Net dataset {path}"), modality="user-provided",
                       labels=labels, channels=3 if channels == 3 else 1, license=info.get("licence", "the user's"),
                       citation=info.get("reference", ""), url="", folder="")


def _dataset_json(base: Path) -> dict[str, Any]:
    p = base / "dataset.json"
    if not p.is_file():
        raise DataError(f"nnU-Net dataset: {p} not found", fix="point data.options.path at DatasetXXX_Name/")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: invalid JSON ({exc.msg} at line {exc.lineno})", fix="fix dataset.json") from None


def _nnunet_labels(info: dict[str, Any], where: Path) -> tuple[str, ...]:
    labels = info.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{where}: 'labels' must map names to integers", fix='e.g. "labels": {"background": 0, '
                                                                              '"lesion": 1}')
    by_value = {int(v): k for k, v in labels.items() if not isinstance(v, list)}
    if sorted(by_value) != list(range(len(by_value))):
        raise DataError(f"{where}: label values must be 0..K-1, got {sorted(by_value)}", fix="renumber the labels")
    return tuple(by_value[i] for i in range(len(by_value)))


@register_dataset(NNUNET_CARD, read_mask=read_mask, card_for=_nnunet_card)
def find_nnunet(root: Path | None = None, **options: Any) -> list[Case]:
    base = _require_path(options, "nnunet") if options.get("path") or root is None else Path(root)
    info = _dataset_json(base)
    ending = info.get("file_ending", ".png")
    labels = _nnunet_labels(info, base / "dataset.json")
    n_channels = len(info.get("channel_names", {"0": "x"}))
    img_dir, lab_dir = base / "imagesTr", base / "labelsTr"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise DataError(f"nnU-Net dataset {base}: imagesTr/ or labelsTr/ missing", fix="use the nnU-Net v2 layout")
    if ending not in (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg"):
        raise DataError(f"{base / 'dataset.json'}: file_ending {ending!r} is not a 2D image format segarena reads",
                        fix="convert the dataset to .png (nnU-Net's NaturalImage2DIO format)")
    cases = []
    identity = {v: v for v in range(len(labels))}
    for lab in sorted(lab_dir.glob(f"*{ending}")):
        cid = lab.name[: -len(ending)]
        img = img_dir / f"{cid}_0000{ending}"
        if not img.is_file():
            raise DataError(f"nnU-Net dataset: {img} missing for label {lab}", fix="restore it or remove the label")
        # RGB PNGs hold all three channels in _0000 (nnU-Net's NaturalImage2DIO); one file per channel otherwise
        meta = {"mask_values": identity, "num_classes": len(labels), "nnunet_channels": n_channels}
        cases.append(Case(id=cid, image=img, masks=(lab,), meta=meta))
    if not cases:
        raise DataError(f"nnU-Net dataset {base}: no labels in {lab_dir}", fix="check the dataset path")
    return cases
