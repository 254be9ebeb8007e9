"""Kvasir-SEG (Jha et al., MMM 2020): ``images/<id>.jpg`` + ``masks/<id>.jpg`` + ``kavsir_bboxes.json``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..card import Case, DatasetCard, Download, register_dataset
from ..io import read_labels
from ._common import pair_by_stem

CARD = DatasetCard(
    name="kvasir-seg",
    title="Kvasir-SEG",
    modality="colonoscopy (RGB)",
    labels=("background", "polyp"),
    channels=3,
    license="free for research and education; commercial use needs the authors' permission",
    citation="Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020, doi:10.1007/978-3-030-37734-2_37",
    url="https://datasets.simula.no/kvasir-seg/",
    folder="kvasir-seg",
    description="1,000 polyp images (332-1920 px) with one polyp mask each, JPEG-compressed masks.",
    grouping="case (no patient ids are published)",
    # The publisher does not print a checksum; segarena records the SHA-256 of the first verified download in
    # the cache (``<file>.sha256``) and checks every later copy against it.
    download=Download(url="https://datasets.simula.no/downloads/kvasir-seg.zip", sha256=None,
                      filename="kvasir-seg.zip", archive_root="Kvasir-SEG"),
    harmonized={"polyp": (1,)},
)


def read_mask(case: Case) -> np.ndarray:
    # JPEG masks: values near 0 and near 255 (block noise, grey edges): binary, foreground above 127.
    return read_labels(case.masks[0], 2, "binary")


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    pairs = pair_by_stem(root / "images", root / "masks", what="Kvasir-SEG")
    return [Case(id=stem, image=img, masks=(msk,)) for stem, img, msk in pairs]
