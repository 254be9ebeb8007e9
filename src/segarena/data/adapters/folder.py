"""Your own data: an ``images/`` + ``masks/`` folder pair, or an nnU-Net v2 2D raw dataset.

``folder`` options (``--set data.options.KEY=VALUE`` or a study file):
  path         folder holding ``images/`` and ``masks/`` (required)
  images/masks sub-folder names (default ``images``/``masks``)
  mask_suffix  suffix of a mask's stem, e.g. ``_mask`` for ``a.png`` -> ``a_mask.png`` (default none)
  mask_values  raw mask value -> class index, e.g. ``{255: 1}`` (0 stays background), or ``binary`` / ``labels``;
               default: the shared rule of :mod:`segarena.data.masks` (0/1 and 0/255 and JPEG 0/255 all work)
  labels       class names including background (default ``[background, foreground]``)
  channels     1 or 3 (default 3)
  name         the dataset's name in run names, leaderboards and reports (default: the folder's name)
  harmonized   label groups for ``crossval``, e.g. ``{polyp: [1]}`` (default: a binary dataset whose foreground
               label is a group name, e.g. ``labels=[background, polyp]``, joins that group)

``nnunet``: ``path`` points at ``DatasetXXX_Name/`` with ``dataset.json`` (``labels``, ``file_ending``,
``channel_names``), ``imagesTr/<case>_<k:04d><ending>`` (one file per channel; a natural-image PNG holds RGB in
``_0000``), ``labelsTr/<case><ending>`` and optionally ``imagesTs/`` and ``splits_final.json``. File endings:
``.png .bmp .tif .tiff .jpg .jpeg .nii.gz .nii`` (2-D). Options: ``path``, ``name``, ``mask_values``,
``harmonized``, ``splits_final`` (default true: use ``splits_final.json`` as segarena's split when present).

A user dataset's identity is its name plus a hash of its content list (case ids, file names, sizes and a hash of
each file's first and last 4 KiB): the card
is named ``<name>@<hash6>``, so two different folders are two datasets in every leaderboard, statistic and report.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..io import is_nifti, read_gray, read_image
from ..masks import parse_mask_values, to_labels
from ._common import pair_by_stem

#: valid option keys per user adapter (anything else is rejected with these choices)
FOLDER_OPTIONS = ("path", "images", "masks", "mask_suffix", "mask_values", "labels", "channels", "name",
                  "harmonized")
NNUNET_OPTIONS = ("path", "name", "mask_values", "harmonized", "splits_final")
NNUNET_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".nii.gz", ".nii")


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        edge = fh.read(4096)
        if size > 8192:  # the tail holds pixel data even when the head is a shared header (JPEG/EXIF)
            fh.seek(-4096, os.SEEK_END)
        edge += fh.read(4096)
    return f"{path.name}:{size}:{hashlib.sha256(edge).hexdigest()[:16]}"


def content_hash(cases: list[Case]) -> str:
    """SHA-256 (hex) of the sorted content list: per case its id and, for each image and mask file, its name, byte
    size and a hash of its first and last 4 KiB (cheap enough for every run, different for different data)."""
    h = hashlib.sha256()
    for c in sorted(cases, key=lambda c: c.id):
        files = [*c.meta.get("channel_files", [str(c.image)]), *map(str, c.masks)]
        h.update(f"{c.id}|{'|'.join(_file_digest(Path(f)) for f in files)}\n".encode())
    return h.hexdigest()


def _harmonized(raw: Any, labels: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    if raw is None:
        return {labels[1]: (1,)} if len(labels) == 2 and labels[1] not in ("foreground", "object") else {}
    if not isinstance(raw, dict):
        raise DataError(f"data.options.harmonized must map group names to class indices, got {raw!r}",
                        fix="e.g. --set 'data.options.harmonized={polyp: [1]}'")
    out = {}
    for group, classes in raw.items():
        classes = classes if isinstance(classes, (list, tuple)) else [classes]
        try:
            idx = tuple(int(c) for c in classes)
        except (TypeError, ValueError):
            raise DataError(f"data.options.harmonized[{group!r}]: class indices must be integers, got {classes!r}",
                            fix="e.g. {polyp: [1]}") from None
        if any(not 1 <= i < len(labels) for i in idx):
            raise DataError(f"data.options.harmonized[{group!r}]: classes {list(idx)} outside 1..{len(labels) - 1}",
                            fix=f"the labels are {', '.join(labels)}")
        out[str(group)] = idx
    return out


def read_mask(case: Case) -> np.ndarray:
    return to_labels(read_gray(case.masks[0]), case.masks[0], case.meta.get("num_classes"),
                     case.meta.get("mask_values"))


def _require_path(options: dict[str, Any], adapter: str) -> Path:
    if not options.get("path"):
        raise DataError(f"dataset {adapter!r} needs a folder",
                        fix="pass --path /path/to/folder or --set data.options.path=/path/to/folder")
    base = Path(str(options["path"])).expanduser()
    if not base.is_dir():
        raise DataError(f"dataset {adapter!r}: folder {base} does not exist", fix="check data.options.path / --path")
    return base


def _labels(options: dict[str, Any]) -> tuple[str, ...]:
    labels = options.get("labels") or ["background", "foreground"]
    if not isinstance(labels, (list, tuple)) or len(labels) < 2:
        raise DataError(f"data.options.labels must list at least background and one class, got {labels!r}",
                        fix="e.g. --set 'data.options.labels=[background, lesion]'")
    return tuple(str(x) for x in labels)


def _folder_cases(options: dict[str, Any]) -> list[Case]:
    base = _require_path(options, "folder")
    mapping = parse_mask_values(options.get("mask_values"))
    labels = _labels(options)
    pairs = pair_by_stem(base / options.get("images", "images"), base / options.get("masks", "masks"),
                         what=f"folder dataset {base}", mask_suffix=options.get("mask_suffix", ""))
    meta = {"mask_values": mapping, "num_classes": len(labels)}
    return [Case(id=stem, image=img, masks=(msk,), meta=dict(meta)) for stem, img, msk in pairs]


def _folder_card(**options: Any) -> DatasetCard:
    base = _require_path(options, "folder")
    labels = _labels(options)
    channels = int(options.get("channels", 3))
    if channels not in (1, 3):
        raise DataError(f"data.options.channels={channels}: segarena reads 1 or 3 channels", fix="use 1 or 3")
    name = str(options.get("name") or base.resolve().name)
    digest = content_hash(_folder_cases(options))
    return DatasetCard(name=f"{name}@{digest[:6]}", title=f"user dataset {name} at {base}",
                       modality="user-provided", labels=labels, channels=channels, license="the user's",
                       citation="", url="", folder="", grouping="case",
                       harmonized=_harmonized(options.get("harmonized"), labels), content_hash=digest)


FOLDER_CARD = DatasetCard(name="folder", title="user dataset (images/ + masks/)", modality="user-provided",
                          labels=("background", "foreground"), channels=3, license="the user's", citation="",
                          url="", folder="", grouping="case")
NNUNET_CARD = DatasetCard(name="nnunet", title="nnU-Net v2 raw dataset (2D)", modality="user-provided",
                          labels=("background", "foreground"), channels=3, license="the user's", citation="",
                          url="https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/dataset_format.md",
                          folder="")


@register_dataset(FOLDER_CARD, read_mask=read_mask, card_for=_folder_card, options=FOLDER_OPTIONS)
def find_folder(root: Path | None = None, **options: Any) -> list[Case]:
    if not options.get("path") and root is not None:
        options["path"] = str(root)
    return _folder_cases(options)


# ---- nnU-Net v2 ------------------------------------------------------------------------------------------------
def dataset_json(base: Path) -> dict[str, Any]:
    p = base / "dataset.json"
    if not p.is_file():
        raise DataError(f"nnU-Net dataset: {p} not found", fix="point data.options.path at DatasetXXX_Name/")
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: invalid JSON ({exc.msg} at line {exc.lineno})", fix="fix dataset.json") from None
    if not isinstance(info, dict):
        raise DataError(f"{p}: expected a JSON object", fix="use nnU-Net v2's dataset.json format")
    return info


def nnunet_labels(info: dict[str, Any], where: Path) -> tuple[str, ...]:
    labels = info.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{where}: 'labels' must map names to integers", fix='e.g. "labels": {"background": 0, '
                                                                              '"lesion": 1}')
    if any(isinstance(v, list) for v in labels.values()):
        raise DataError(f"{where}: region-based labels (lists) are not supported",
                        fix="use one integer per label (segarena trains label maps, not regions)")
    by_value = {int(v): k for k, v in labels.items()}
    if sorted(by_value) != list(range(len(by_value))):
        raise DataError(f"{where}: label values must be 0..K-1, got {sorted(by_value)}", fix="renumber the labels")
    return tuple(by_value[i] for i in range(len(by_value)))


def _ending(info: dict[str, Any], base: Path) -> str:
    ending = str(info.get("file_ending", ".png")).lower()
    if ending not in NNUNET_ENDINGS:
        raise DataError(f"{base / 'dataset.json'}: file_ending {ending!r} is not a 2-D format segarena reads",
                        fix=f"convert the dataset to one of {', '.join(NNUNET_ENDINGS)}")
    return ending


def _channel_files(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """``{case: {channel: file}}`` for ``<case>_<kkkk><ending>`` files of an nnU-Net images folder."""
    out: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        name = p.name
        if not p.is_file() or name.startswith(".") or not name.lower().endswith(ending):
            continue
        stem = name[: -len(ending)]
        if len(stem) < 6 or stem[-5] != "_" or not stem[-4:].isdigit():
            raise DataError(f"nnU-Net dataset: {p} is not named <case>_<channel:04d>{ending}",
                            fix="rename it, e.g. case_0000" + ending)
        out.setdefault(stem[:-5], {})[int(stem[-4:])] = p
    return out


def _nnunet_cases(folder: Path, lab_dir: Path | None, ending: str, n_channels: int, meta: dict[str, Any]
                  ) -> list[Case]:
    cases = []
    for cid, chans in sorted(_channel_files(folder, ending).items()):
        extra = sorted(k for k in chans if k >= n_channels)
        if extra:
            raise DataError(f"nnU-Net dataset: {chans[extra[0]]} is channel {extra[0]}, but dataset.json declares "
                            f"{n_channels} channel(s)", fix="add it to channel_names or remove the file")
        missing = [k for k in range(n_channels) if k not in chans]
        rgb_in_one = n_channels == 3 and missing == [1, 2]  # NaturalImage2DIO: RGB PNG in _0000
        if missing and not rgb_in_one:
            raise DataError(f"nnU-Net dataset: {folder / f'{cid}_{missing[0]:04d}{ending}'} missing (dataset.json "
                            f"declares {n_channels} channels)", fix="restore it or remove the case")
        files = [str(chans[0])] if rgb_in_one else [str(chans[k]) for k in range(n_channels)]
        masks: tuple[Path, ...] = ()
        if lab_dir is not None:
            lab = lab_dir / f"{cid}{ending}"
            if not lab.is_file():
                raise DataError(f"nnU-Net dataset: {lab} missing for image {chans[0]}",
                                fix="restore the label or remove the image")
            masks = (lab,)
        cases.append(Case(id=cid, image=chans[0], masks=masks, meta={**meta, "channel_files": files}))
    return cases


def _splits_final(base: Path, ids: list[str]) -> dict[str, int] | None:
    """``splits_final.json`` (a list of ``{"train": [...], "val": [...]}``) as ``{case: fold}`` where the fold is
    the nnU-Net fold whose ``val`` holds the case; None when absent."""
    p = base / "splits_final.json"
    if not p.is_file():
        return None
    try:
        folds = json.loads(p.read_text(encoding="utf-8"))
        out: dict[str, int] = {}
        for k, f in enumerate(folds):
            for cid in f["val"]:
                if cid in out:
                    raise DataError(f"{p}: case {cid!r} is in the val list of folds {out[cid]} and {k}",
                                    fix="each case must be validated in exactly one fold")
                out[str(cid)] = k
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise DataError(f"{p}: not an nnU-Net splits file ({exc})",
                        fix='a JSON list of {"train": [...], "val": [...]}, one per fold') from None
    unknown = sorted(set(out) - set(ids))
    missing = sorted(set(ids) - set(out))
    if unknown or missing:
        what = f"{len(missing)} case(s) in no val list, e.g. {missing[0]!r}" if missing else \
            f"{len(unknown)} unknown case(s), e.g. {unknown[0]!r}"
        raise DataError(f"{p}: {what}", fix="regenerate it for this dataset, or set data.options.splits_final=false")
    return out


def _nnunet_meta(options: dict[str, Any]) -> tuple[Path, dict[str, Any], str, tuple[str, ...], int]:
    base = _require_path(options, "nnunet")
    info = dataset_json(base)
    labels = nnunet_labels(info, base / "dataset.json")
    n_channels = len(info.get("channel_names") or {"0": "x"})
    if n_channels not in (1, 3):
        raise DataError(f"{base / 'dataset.json'}: {n_channels} channels; segarena's models take 1 or 3",
                        fix="keep 1 (grey) or 3 (RGB) channels in channel_names")
    return base, info, _ending(info, base), labels, n_channels


def find_nnunet_cases(options: dict[str, Any], subset: str = "Tr") -> list[Case]:
    """Labelled training cases (``imagesTr`` + ``labelsTr``) or, with ``subset="Ts"``, the unlabelled
    ``imagesTs`` cases (for ``predict``)."""
    base, info, ending, labels, n_channels = _nnunet_meta(options)
    img_dir = base / f"images{subset}"
    lab_dir = base / "labelsTr" if subset == "Tr" else None
    if not img_dir.is_dir() or (lab_dir is not None and not lab_dir.is_dir()):
        raise DataError(f"nnU-Net dataset {base}: images{subset}/" + (" or labelsTr/" if lab_dir else "")
                        + " missing", fix="use the nnU-Net v2 layout")
    meta = {"mask_values": parse_mask_values(options.get("mask_values")), "num_classes": len(labels),
            "nnunet_channels": n_channels}
    cases = _nnunet_cases(img_dir, lab_dir, ending, n_channels, meta)
    if lab_dir is not None:
        orphans = sorted(p for p in lab_dir.iterdir() if p.is_file() and p.name.lower().endswith(ending)
                         and p.name[: -len(ending)] not in {c.id for c in cases})
        if orphans:
            raise DataError(f"nnU-Net dataset: label {orphans[0]} has no image {orphans[0].name[:-len(ending)]}_0000"
                            f"{ending} in imagesTr/", fix="restore the image or remove the label")
    if not cases:
        raise DataError(f"nnU-Net dataset {base}: no cases in {img_dir}", fix="check the dataset path")
    folds = _splits_final(base, [c.id for c in cases]) if options.get("splits_final", True) and lab_dir else None
    if folds is not None:
        k = len(set(folds.values()))
        for c in cases:
            c.meta[f"fold_{k}"] = folds[c.id]
            c.meta["splits_final"] = k
    return cases


def read_nnunet_image(case: Case, channels: int) -> np.ndarray:
    files = case.meta.get("channel_files") or [str(case.image)]
    if len(files) == 1:
        return read_image(files[0], channels)
    planes = [read_image(f, 1)[..., 0] for f in files]
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise DataError(f"nnU-Net dataset: channel files of case {case.id!r} differ in size ({sorted(shapes)})",
                        fix="all channels of a case must have the same size")
    arr = np.stack(planes, axis=-1)
    return arr if channels == arr.shape[-1] else np.repeat(arr[..., :1], channels, axis=-1)


def _nnunet_card(**options: Any) -> DatasetCard:
    base, info, _, labels, n_channels = _nnunet_meta(options)
    name = str(options.get("name") or info.get("name") or base.resolve().name)
    digest = content_hash(find_nnunet_cases(options))
    return DatasetCard(name=f"{name}@{digest[:6]}", title=info.get("description") or f"nnU-Net dataset {name}",
                       modality="user-provided", labels=labels, channels=n_channels,
                       license=str(info.get("licence", info.get("license", "the user's"))),
                       citation=str(info.get("reference", "")), url="", folder="",
                       harmonized=_harmonized(options.get("harmonized"), labels), content_hash=digest,
                       description="2-D" + (" NIfTI" if is_nifti(Path("x" + _ending(info, base))) else ""))


@register_dataset(NNUNET_CARD, read_mask=read_mask, card_for=_nnunet_card, read_image=read_nnunet_image,
                  options=NNUNET_OPTIONS)
def find_nnunet(root: Path | None = None, **options: Any) -> list[Case]:
    if not options.get("path") and root is not None:
        options["path"] = str(root)
    return find_nnunet_cases(options)
