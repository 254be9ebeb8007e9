"""HC18 (van den Heuvel et al., PLoS ONE 2018): ``training_set/<NNN>_HC.png`` with ``<NNN>_HC_Annotation.png``
(ellipse outlines in the official release) and ``training_set_pixel_size_and_HC.csv``."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..._errors import DataError
from ..card import Case, DatasetCard, Download, register_dataset
from ..io import read_labels

CARD = DatasetCard(
    name="hc18",
    title="HC18 fetal head circumference",
    modality="fetal ultrasound (grayscale)",
    labels=("background", "fetal head"),
    channels=1,
    license="CC BY 4.0",
    citation="van den Heuvel et al., Automated measurement of fetal head circumference using 2D ultrasound "
             "images, PLoS ONE 13(8):e0200412, 2018, doi:10.1371/journal.pone.0200412",
    url="https://zenodo.org/records/1327317",
    folder="hc18",
    aliases=("HC18",),
    description="2D ultrasound of the fetal head; annotation is the head ellipse (filled here).",
    grouping="pregnancy (``NNN_2HC`` is a repeat scan of ``NNN``)",
    download=Download(url="https://zenodo.org/records/1327317/files/training_set.zip?download=1", sha256=None,
                      filename="training_set.zip", archive_root=""),
    has_spacing=True,
)

_STEM = re.compile(r"^(?P<n>\d+)(?:_(?P<rep>\d+))?_?HC$")


def read_mask(case: Case) -> np.ndarray:
    """Fill the annotated ellipse outline; an already filled mask passes through unchanged."""
    outline = read_labels(case.masks[0], 2, "binary") > 0
    return ndimage.binary_fill_holes(outline).astype(np.uint8)


def _pixel_sizes(root: Path) -> dict[str, float]:
    csv_path = root / "training_set_pixel_size_and_HC.csv"
    if not csv_path.is_file():
        raise DataError(f"HC18: {csv_path} not found",
                        fix="copy training_set_pixel_size_and_HC.csv from the official release beside training_set/")
    out = {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                out[row["filename"]] = float(row["pixel size(mm)"])
            except (KeyError, ValueError):
                raise DataError(f"{csv_path}: unexpected row {row}",
                                fix="use the official CSV (columns filename, pixel size(mm), head "
                                    "circumference (mm))") from None
    return out


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    folder = root / "training_set"
    if not folder.is_dir():
        raise DataError(f"HC18: folder {folder} not found", fix="unpack training_set.zip into <data-root>/hc18/")
    sizes = _pixel_sizes(root)
    cases = []
    for img in sorted(folder.glob("*HC.png")):
        ann = img.with_name(img.stem + "_Annotation.png")
        if not ann.is_file():
            raise DataError(f"HC18: annotation {ann} missing for {img}", fix="restore it or remove the image")
        m = _STEM.match(img.stem)
        group = m["n"] if m else img.stem
        meta = {}
        if img.name in sizes:
            meta["spacing_mm"] = (sizes[img.name], sizes[img.name])
        cases.append(Case(id=img.stem, image=img, masks=(ann,), group=group, meta=meta))
    if not cases:
        raise DataError(f"HC18: no *_HC.png images in {folder}", fix="check the dataset root")
    return cases
