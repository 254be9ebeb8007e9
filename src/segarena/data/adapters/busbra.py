"""BUS-BRA (Gómez-Flores et al., Medical Physics 2024): 1,875 breast ultrasound images of 1,064 patients.

Official layout (Zenodo record 8231412, ``BUSBRA.zip`` with top folder ``BUSBRA/``)::

    Images/bus_0001-l.png       grayscale B-mode image; suffix -l/-r/-s is the view of the lesion
    Masks/mask_0001-l.png       binary lesion mask (stored as 0/255, 0/1 or an RGB(A) silhouette)
    bus_data.csv                ID, Case (patient), Histology, Pathology, BIRADS, Device, Width, Height, Side, BBOX
    5-fold-cv.csv, 10-fold-cv.csv   the official patient-level partitions: ID, ..., kFold

Cases are grouped by the ``Case`` column of ``bus_data.csv`` (the patient); without the CSV the numeric part of
the file name, which equals ``Case`` in the release, is used. The official folds are kept as
``meta["fold_5"]`` / ``meta["fold_10"]`` so a study can reproduce the authors' partition.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, Download, register_dataset
from ..check import Scan, files_by_id, first_dir, pair_files
from ..io import read_labels

CARD = DatasetCard(
    name="busbra",
    title="BUS-BRA: a breast ultrasound dataset with BI-RADS categories",
    modality="breast ultrasound (grayscale)",
    labels=("background", "lesion"),
    channels=1,
    license="CC BY 4.0",
    citation="Gómez-Flores, Gregorio-Calas and Coelho de Albuquerque Pereira, BUS-BRA: A breast ultrasound dataset "
             "for assessing computer-aided diagnosis systems, Medical Physics 51(4):3110-3123, 2024; "
             "data: Zenodo record 8231412",
    url="https://zenodo.org/records/8231412",
    folder="busbra",
    description="1,875 images (1,268 benign, 607 malignant, biopsy-proven) from 1,064 patients, four scanners, "
                "with lesion masks, BI-RADS categories and official 5- and 10-fold patient-level partitions.",
    grouping="patient (bus_data.csv column Case)",
    # Zenodo publishes an MD5 only (1f8b2be6476d58fc97bfb5e5a1ea9bab); the first verified download's SHA-256 is
    # recorded in the cache and later copies are checked against it.
    download=Download(url="https://zenodo.org/records/8231412/files/BUSBRA.zip?download=1", sha256=None,
                      filename="BUSBRA.zip", archive_root="BUSBRA"),
    harmonized={"breast lesion": (1,)},
)

_NUMBER = re.compile(r"^bus_(\d+)-")


def read_mask(case: Case) -> np.ndarray:
    # read_gray drops alpha and takes the channel maximum, so RGB(A) silhouettes reduce to 0/255 like the rest.
    return read_labels(case.masks[0], 2, {1: 1, 255: 1})


def _rows(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "ID" not in reader.fieldnames:
            raise DataError(f"{path}: no 'ID' column", fix="use the CSV files of the official BUS-BRA release")
        return {row["ID"].strip().removesuffix(".png"): row for row in reader}


def _patient(cid: str, row: dict[str, str] | None) -> str:
    raw = (row or {}).get("Case", "").strip()
    if not raw:
        m = _NUMBER.match(cid)
        raw = m.group(1) if m else cid
    return f"patient{int(raw):04d}" if raw.isdigit() else raw


def _fold(row: dict[str, str] | None) -> int | None:
    value = (row or {}).get("kFold", "").strip()
    return int(float(value)) if value else None


def scan(root: Path) -> Scan:
    """Pair ``Images/bus_<n>-<v>.png`` with ``Masks/mask_<n>-<v>.png``; patients and folds from the CSV files."""
    base = root if (root / "Images").is_dir() else first_dir(root, ("BUSBRA",))
    if base is None or not (base / "Images").is_dir():
        raise DataError(f"BUS-BRA: folder {root / 'Images'} not found",
                        fix="unzip BUSBRA.zip so that <data-root>/busbra/Images/ and Masks/ exist")
    images = files_by_id(base / "Images", (".png",))
    masks = {"bus_" + k.removeprefix("mask_"): v for k, v in files_by_id(base / "Masks", (".png",)).items()
             if k.startswith("mask_")}
    pairs, problems = pair_files(images, masks)
    info = _rows(base / "bus_data.csv")
    folds5, folds10 = _rows(base / "5-fold-cv.csv"), _rows(base / "10-fold-cv.csv")
    cases = []
    for cid, img, msk in pairs:
        row = info.get(cid)
        meta: dict[str, Any] = {}
        if row:
            for key, name in (("Pathology", "pathology"), ("BIRADS", "birads"), ("Histology", "histology"),
                              ("Device", "device"), ("Side", "side")):
                if row.get(key, "").strip():
                    meta[name] = row[key].strip()
        for name, table in (("fold_5", folds5), ("fold_10", folds10)):
            fold = _fold(table.get(cid))
            if fold is not None:
                meta[name] = fold
        cases.append(Case(id=cid, image=img, masks=(msk,), group=_patient(cid, row), meta=meta))
    return Scan(cases=cases, problems=problems)


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    return scan(root).cases_or_raise("busbra")
