"""Data layer: dataset cards and adapters, prepared cache, splits, augmentation presets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._errors import DataError
from . import adapters  # noqa: F401  (registers the adapters)
from .card import DATASETS, Case, DatasetAdapter, DatasetCard, Download, register_dataset
from .download import cache_dir, download_dataset, is_offline

__all__ = ["DATASETS", "Case", "DatasetAdapter", "DatasetCard", "Download", "register_dataset", "data_root",
           "dataset_root", "discover", "get_card"]


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """``--data-root``, else ``$SEGARENA_DATA_ROOT``, else ``<cache>/data``."""
    root = explicit or os.environ.get("SEGARENA_DATA_ROOT") or cache_dir() / "data"
    return Path(root).expanduser()


def get_card(name: str, options: dict[str, Any] | None = None) -> DatasetCard:
    return DATASETS.get(name).card_with(options or {})


def dataset_root(name: str, root: str | os.PathLike | None = None, options: dict[str, Any] | None = None,
                 *, download: bool = True) -> Path:
    """The folder holding ``name``'s release; downloads public datasets that are missing (unless offline)."""
    adapter = DATASETS.get(name)
    options = options or {}
    if not adapter.card.folder:  # user datasets live where their options say
        if options.get("path"):
            return Path(options["path"]).expanduser()
        if root:
            return Path(root).expanduser()
        raise DataError(f"dataset {name!r} needs a folder", fix="pass --set data.options.path=/path/to/folder")
    base = data_root(root)
    folder = base / adapter.card.folder
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    card = adapter.card
    if not download or card.download is None or is_offline():
        raise DataError(f"dataset {name!r} not found at {folder}", fix=_how_to_get(card, base, folder))
    return download_dataset(card, base)


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
             limit: int | None = None) -> tuple[DatasetCard, list[Case], Path]:
    """Card, cases (sorted by id, optionally the first ``limit``) and the dataset folder."""
    adapter = DATASETS.get(name)
    options = dict(options or {})
    folder = dataset_root(name, root, options)
    extra = {k: v for k, v in options.items() if k != "path"}
    if adapter.card.folder and extra:
        raise DataError(f"dataset {name!r} takes no options (got {', '.join(extra)})",
                        fix="remove the data.options overrides")
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
