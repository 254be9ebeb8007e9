"""Helpers shared by adapters."""
from __future__ import annotations

from pathlib import Path

from ..._errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}
NIFTI_ENDINGS = (".nii.gz", ".nii")


def stem_of(p: Path) -> str | None:
    """A mask or image file's case id (``a.png`` -> ``a``, ``a.nii.gz`` -> ``a``); None for other files."""
    low = p.name.lower()
    for ending in NIFTI_ENDINGS:
        if low.endswith(ending):
            return p.name[: -len(ending)]
    return p.stem if p.suffix.lower() in IMAGE_SUFFIXES else None


def list_images(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{what}: folder {folder} not found",
                        fix="point --data-root (or SEGARENA_DATA_ROOT) at the folder holding the dataset")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        stem = stem_of(p)
        if p.is_file() and stem is not None and not p.name.startswith("."):
            if stem in out:
                raise DataError(f"{what}: duplicate case id {stem!r} ({out[stem].name} and {p.name})",
                                fix="keep one file per case id")
            out[stem] = p
    return out


def pair_by_stem(images: Path, masks: Path, what: str, mask_suffix: str = "",
                 strict: bool = True) -> list[tuple[str, Path, Path]]:
    """Match ``images/<stem>.*`` with ``masks/<stem><mask_suffix>.*``; orphans are an error when ``strict``."""
    imgs = list_images(images, what)
    msks = list_images(masks, what)
    if mask_suffix:
        msks = {k[: -len(mask_suffix)]: v for k, v in msks.items() if k.endswith(mask_suffix)}
    if not imgs:
        raise DataError(f"{what}: no images in {images}", fix="check the dataset root")
    orphans_i = sorted(set(imgs) - set(msks))
    orphans_m = sorted(set(msks) - set(imgs))
    if strict and (orphans_i or orphans_m):
        parts = []
        if orphans_i:
            parts.append(f"{len(orphans_i)} image(s) without mask, e.g. {imgs[orphans_i[0]]}")
        if orphans_m:
            parts.append(f"{len(orphans_m)} mask(s) without image, e.g. {msks[orphans_m[0]]}")
        raise DataError(f"{what}: " + "; ".join(parts),
                        fix="add the missing files or remove the orphans (`segarena datasets check` lists all)")
    return [(s, imgs[s], msks[s]) for s in sorted(set(imgs) & set(msks))]
