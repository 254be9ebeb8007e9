"""PH2 (Mendonça et al., EMBC 2013): 200 dermoscopic images (768x560) of melanocytic lesions with lesion masks.

Official layout (``PH2Dataset/``, the top folder may be present or not)::

    PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp
    PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp        binary lesion mask
    PH2 Dataset images/IMD002/IMD002_roi/...                          colour-region masks (not used)
    PH2_dataset.txt                                                   diagnoses and dermoscopic criteria (optional)

The clinical diagnosis from ``PH2_dataset.txt`` (0 common nevus, 1 atypical nevus, 2 melanoma) goes into
``meta["diagnosis"]``. Used as the out-of-distribution partner of ISIC 2018 (harmonized class "skin lesion").
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..check import Problem, Scan, first_dir
from ..io import read_labels

CARD = DatasetCard(
    name="ph2",
    title="PH2 dermoscopic image database",
    modality="dermoscopy (RGB)",
    labels=("background", "skin lesion"),
    channels=3,
    license="free for research and benchmarking; cite the paper (terms on the official page)",
    citation="Mendonça et al., PH2 - A dermoscopic image database for research and benchmarking, 35th Annual "
             "International Conference of the IEEE EMBS (EMBC), 2013, pp. 5437-5440, doi:10.1109/EMBC.2013.6610779",
    url="https://www.fc.up.pt/addi/ph2%20database.html",
    folder="ph2",
    aliases=("PH2Dataset", "PH2 Dataset"),
    description="200 dermoscopic images (80 common nevi, 80 atypical nevi, 40 melanomas) from Hospital Pedro "
                "Hispano, Matosinhos, with expert lesion masks.",
    grouping="case (one image per lesion; no patient ids are published)",
    how_to_get="download PH2Dataset from the official page (https://www.fc.up.pt/addi/ph2%20database.html; a .rar "
               "archive), unpack it and place 'PH2 Dataset images/' (and PH2_dataset.txt) in <data-root>/ph2/",
    harmonized={"skin lesion": (1,)},
)

DIAGNOSES = {"0": "common nevus", "1": "atypical nevus", "2": "melanoma"}
_CASE = re.compile(r"^IMD\d{3}$")


def read_mask(case: Case) -> np.ndarray:
    # BMP masks come as 1-bit, 8-bit grey or palette images; the shared rule maps 0/1 and 0/255 to 0/1.
    return read_labels(case.masks[0], 2)


def _diagnoses(path: Path) -> dict[str, str]:
    """``|| IMD003 || <histology> || 0 || ...`` rows of ``PH2_dataset.txt``: name -> clinical diagnosis."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        cells = [c.strip() for c in line.split("||")]
        if len(cells) > 3 and _CASE.match(cells[1]) and cells[3] in DIAGNOSES:
            out[cells[1]] = DIAGNOSES[cells[3]]
    return out


def _single_bmp(folder: Path, expected: Path) -> Path | None:
    if expected.is_file():
        return expected
    bmps = sorted(folder.glob("*.bmp")) if folder.is_dir() else []
    return bmps[0] if len(bmps) == 1 else None


def scan(root: Path) -> Scan:
    """One case per ``IMDxxx`` folder holding a dermoscopic image and a lesion mask."""
    images_dir = first_dir(root, ("PH2 Dataset images", "PH2Dataset/PH2 Dataset images", "PH2_Dataset_images"))
    if images_dir is None:
        raise DataError(f"PH2: folder {root / 'PH2 Dataset images'} not found",
                        fix="unpack PH2Dataset into <data-root>/ph2/ so that 'PH2 Dataset images/IMD002/' exists")
    diagnoses = _diagnoses(images_dir.parent / "PH2_dataset.txt")
    out = Scan()
    for case_dir in sorted(p for p in images_dir.iterdir() if p.is_dir() and _CASE.match(p.name)):
        name = case_dir.name
        img_dir, lesion_dir = case_dir / f"{name}_Dermoscopic_Image", case_dir / f"{name}_lesion"
        img = _single_bmp(img_dir, img_dir / f"{name}.bmp")
        msk = _single_bmp(lesion_dir, lesion_dir / f"{name}_lesion.bmp")
        if img is None and msk is None:
            out.problems.append(Problem("missing_file", str(case_dir), "neither dermoscopic image nor lesion mask"))
        elif msk is None:
            out.problems.append(Problem("orphan_image", str(img), f"no {name}_lesion/{name}_lesion.bmp"))
        elif img is None:
            out.problems.append(Problem("orphan_mask", str(msk), f"no {name}_Dermoscopic_Image/{name}.bmp"))
        else:
            meta = {"diagnosis": diagnoses[name]} if name in diagnoses else {}
            out.cases.append(Case(id=name, image=img, masks=(msk,), meta=meta))
    return out


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    return scan(root).cases_or_raise("ph2")
