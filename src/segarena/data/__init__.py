"""Data layer: dataset cards and adapters, prepared cache, splits, augmentation presets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._errors import DataError
from . import adapters  # noqa: F401  (registers the adapters)
from .card import DATASETS, Case, DatasetAdapter, DatasetCard, Download, register_dataset
from .._paths import is_offline
from .download import cache_dir, download_dataset

__all__ = ["DATASETS", "Case", "DatasetAdapter", "DatasetCard", "Download", "register_dataset", "data_root",
           "data_roots", "dataset_root", "discover", "downloads_allowed", "get_card"]


def data_roots(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The data roots searched in order: ``--data-root`` (or ``data.root``), else ``$SEGARENA_DATA_ROOT``, else
    ``<cache>/data``. Each may hold several folders separated by ``os.pathsep`` (``:`` on Linux/macOS)."""
    raw = str(explicit) if explicit else (os.environ.get("SEGARENA_DATA_ROOT") or str(cache_dir() / "data"))
    roots = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    return roots or [cache_dir() / "data"]


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The first data root (where ``datasets download`` unpacks)."""
    return data_roots(explicit)[0]


def downloads_allowed() -> bool:
    """Commands download only when asked: ``--download`` sets ``SEGARENA_DOWNLOAD=1`` (inherited by workers)."""
    return os.environ.get("SEGARENA_DOWNLOAD", "") not in ("", "0") and not is_offline()


def _find_in(base: Path, names: tuple[str, ...]) -> Path | None:
    """``base/<name>`` for any of ``names`` in any letter case, descending into a single nested official folder
    (``kvasir-seg/Kvasir-SEG/``) as archives unpacked into a folder of their own name leave it."""
    if not base.is_dir():
        return None
    found = [p for p in base.iterdir() if p.is_dir() and p.name.lower() in names]
    hit = min(found, key=lambda p: (p.name != names[0], names.index(p.name.lower()), p.name), default=None)
    if hit is None and base.name.lower() in names:
        hit = base  # the root is the dataset folder itself (``--set data.root=/data/CVC-ClinicDB``)
    if hit is None or not any(hit.iterdir()):
        return None
    subdirs = [p for p in hit.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and subdirs[0].name.lower() in names:
        hit = subdirs[0]
    return hit


def dataset_root(name: str, root: str | os.PathLike | None = None, options: dict[str, Any] | None = None,
                 *, download: bool | None = None) -> Path:
    """The folder holding ``name``'s release.

    User datasets (``folder``, ``nnunet``) live at ``data.options.path`` (or ``root``). A named dataset is looked
    up in each data root in order, under its folder name or the official archive's top folder in any letter case
    (``kvasir-seg/``, ``Kvasir-SEG/``, ``CVC-ClinicDB/``...); ``data.options.path`` (``--path``) names its folder
    directly. Nothing is downloaded unless ``download`` is true (default: :func:`downloads_allowed`)."""
    adapter = DATASETS.get(name)
    options = options or {}
    if not adapter.card.folder:  # user datasets live where their options say
        if options.get("path"):
            return _existing(Path(options["path"]).expanduser(), name)
        if root:
            return _existing(Path(str(root).split(os.pathsep)[0]).expanduser(), name)
        raise DataError(f"dataset {name!r} needs a folder", fix="pass --set data.options.path=/path/to/folder")
    if options.get("path"):
        return _existing(Path(options["path"]).expanduser(), name)
    card = adapter.card
    names = card.folder_names()
    roots = data_roots(root)
    for base in roots:
        hit = _find_in(base, names)
        if hit is not None:
            return hit
    if len(roots) == 1 and roots[0].is_dir() and root and _has_cases(adapter, roots[0]):
        return roots[0]  # ``data.root`` pointing at the dataset's own folder, whatever its name
    if download is None:
        download = downloads_allowed()
    if not download or card.download is None or is_offline():
        searched = ", ".join(str(r) for r in roots)
        how = f", run `segarena datasets download {name}`, or pass --download" if card.download else ""
        aka = f" or {'/, '.join(card.aliases)}/" if card.aliases else ""
        raise DataError(f"dataset {name!r} not found: no folder {card.folder}/{aka} (any letter case) in {searched}",
                        fix=f"{_how_to_get(card, roots[0], roots[0] / card.folder)}{how}; several roots are "
                            f"separated by {os.pathsep!r}, and --set data.root=/path/to/{card.folder} names the "
                            "dataset's own folder")
    return download_dataset(card, roots[0])


def _existing(folder: Path, name: str) -> Path:
    if not folder.is_dir():
        raise DataError(f"dataset {name!r}: folder {folder} does not exist",
                        fix="check data.options.path / --path")
    return folder


def _has_cases(adapter: DatasetAdapter, folder: Path) -> bool:
    try:
        return bool(adapter.find_cases(folder))
    except (DataError, OSError):
        return False


def _how_to_get(card: DatasetCard, base: Path, folder: Path) -> str:
    """The fix of a missing dataset, as one sentence: how to get it, where to put it, or where to point."""
    if card.download is not None:
        how = f"download {card.download.url} and unpack it into {folder}"
    elif card.how_to_get:
        how = card.how_to_get.replace("<data-root>/", f"{base}/").replace("<data-root>", str(base))
    else:
        how = f"get it from {card.url} and unpack it into {folder}"
    return f"{how}; or point --data-root / SEGARENA_DATA_ROOT at the folder that holds {card.folder}/"


def discover(name: str, root: str | os.PathLike | None = None, options: dict[str, Any] | None = None,
             limit: int | None = None, *, download: bool | None = None) -> tuple[DatasetCard, list[Case], Path]:
    """Card, cases (sorted by id, optionally the first ``limit``) and the dataset folder (``download``: see
    :func:`dataset_root`)."""
    adapter = DATASETS.get(name)
    options = dict(options or {})
    adapter.check_options(options)
    folder = dataset_root(name, root, options, download=download)
    cases = adapter.find_cases(folder, **options) if not adapter.card.folder else adapter.find_cases(folder)
    cases = sorted(cases, key=lambda c: c.id)
    if not cases:
        raise DataError(f"dataset {name!r}: no cases found in {folder}", fix="check the dataset folder")
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"dataset {name!r}: duplicate case id {dup!r} in {folder}", fix="make case ids unique")
    if limit is not None:
        cases = cases[:limit]
    return adapter.card_with(options), cases, folder


def stale_user_dataset(name: str, options: dict[str, Any], recorded: str | None) -> str | None:
    """For a user dataset whose run finished earlier: the current ``<name>@<hash>`` when the folder's content
    changed since (the run id holds the path, not the content), else None. Named datasets: always None."""
    adapter = DATASETS.get(name)
    if adapter.card.folder or not recorded or "@" not in str(recorded):
        return None
    try:
        now = adapter.card_with(options).name
    except DataError:
        return None  # the folder is gone: the finished run stays valid and readable
    return now if now != recorded else None
