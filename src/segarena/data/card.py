"""Dataset cards, cases and the dataset registry.

A dataset adapter knows one release layout: it lists the :class:`Case` objects under a root folder and decodes
each case's mask into a label map (``uint8``, 0 = background, 1..K-1 = classes). Everything downstream (prepared
cache, splits, training, evaluation) sees only cases and label maps.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._registry import Registry


@dataclass(frozen=True)
class Download:
    """Where a public release can be fetched from without login."""

    url: str
    sha256: str | None
    filename: str
    #: folder inside the archive that holds the dataset root (e.g. ``Kvasir-SEG``)
    archive_root: str = ""


@dataclass(frozen=True)
class DatasetCard:
    name: str
    title: str
    modality: str
    #: class names including background at index 0
    labels: tuple[str, ...]
    channels: int
    license: str
    citation: str
    url: str
    #: folder name under the data root
    folder: str
    description: str = ""
    #: what ``Case.group`` means (patient, video sequence, or the case itself)
    grouping: str = "case"
    download: Download | None = None
    #: where to get data that needs registration (shown when the data is missing)
    how_to_get: str = ""
    #: label harmonization for cross-dataset evaluation: target name -> source class indices merged into it
    harmonized: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: True when cases carry ``meta["spacing_mm"]``
    has_spacing: bool = False
    #: other top-level folder names of the official archives (matched in any letter case, like ``folder``)
    aliases: tuple[str, ...] = ()
    #: content identity of a user dataset (hash of its case list); empty for named datasets
    content_hash: str = ""

    def folder_names(self) -> tuple[str, ...]:
        """Every folder name this dataset may sit under in a data root, lower-cased."""
        names = [self.folder, self.name, *(self.aliases or ())]
        if self.download is not None and self.download.archive_root:
            names.append(self.download.archive_root)
        return tuple(dict.fromkeys(n.lower() for n in names if n))

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Case:
    """One image and its annotation files."""

    id: str
    image: Path
    masks: tuple[Path, ...]
    #: patient / sequence id; cases of one group always land in the same fold
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def group_id(self) -> str:
        return self.group or self.id


FindCases = Callable[..., list[Case]]
ReadMask = Callable[[Case], np.ndarray]
#: ``read_image(case, channels) -> uint8 [H, W, channels]`` for formats PIL cannot read (NIfTI, MHD)
ReadImage = Callable[[Case, int], np.ndarray]


@dataclass(frozen=True)
class DatasetAdapter:
    card: DatasetCard
    find_cases: FindCases
    read_mask: ReadMask
    #: builds a card from adapter options (for user datasets whose labels come from options)
    card_for: Callable[..., DatasetCard] | None = None
    read_image: ReadImage | None = None
    #: valid ``data.options`` keys (named datasets: only ``path``, the dataset's own folder)
    options: tuple[str, ...] = ("path",)

    def load_image(self, case: Case, channels: int) -> np.ndarray:
        if self.read_image is not None:
            return self.read_image(case, channels)
        from .io import read_image

        return read_image(case.image, channels)

    def card_with(self, options: dict[str, Any]) -> DatasetCard:
        return self.card_for(**options) if self.card_for and options else self.card

    def check_options(self, options: dict[str, Any]) -> None:
        """Unknown ``data.options`` keys are an error listing the valid ones (a typo never passes silently)."""
        import difflib

        from .._errors import DataError

        for key in options:
            if key not in self.options:
                close = difflib.get_close_matches(str(key), self.options, n=1)
                raise DataError(f"dataset {self.card.name!r}: unknown option data.options.{key}"
                                + (f" (did you mean {close[0]!r}?)" if close else ""),
                                fix=f"valid options: {', '.join(self.options)}")


DATASETS: Registry[DatasetAdapter] = Registry("dataset")


def register_dataset(card: DatasetCard, *, read_mask: ReadMask, card_for: Callable[..., DatasetCard] | None = None,
                     read_image: ReadImage | None = None,
                     options: tuple[str, ...] = ("path",)) -> Callable[[FindCases], FindCases]:
    """Decorator for an adapter's ``find_cases(root, **options)`` function."""

    def deco(fn: FindCases) -> FindCases:
        DATASETS.register(card.name, DatasetAdapter(card=card, find_cases=fn, read_mask=read_mask,
                                                     card_for=card_for, read_image=read_image,
                                                     options=tuple(options)))
        return fn

    return deco
