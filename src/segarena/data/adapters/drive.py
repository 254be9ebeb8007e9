"""DRIVE (Staal et al., IEEE TMI 2004): 40 colour fundus photographs (565x584) with manual vessel segmentations.

Official layout (``DRIVE/``, the top folder may be present or not)::

    training/images/21_training.tif       training/1st_manual/21_manual1.gif   training/mask/21_training_mask.gif
    test/images/01_test.tif               test/1st_manual/01_manual1.gif       test/mask/01_test_mask.gif
                                          test/2nd_manual/01_manual2.gif (second observer)

Manual annotations are GIFs (palette images; decoded through their palette, not by index), 255 = vessel.
The field-of-view mask of each image is not a label: its path goes into ``meta["fov_mask"]`` so evaluation can
restrict metrics to the FOV, as is customary for DRIVE. The second observer's annotation, where present, goes
into ``meta["second_observer"]``. Copies without ``test/1st_manual`` (the challenge version) give the 20
training cases only.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..check import Problem, Scan, files_by_id, first_dir, pair_files
from ..io import read_image, read_labels

CARD = DatasetCard(
    name="drive",
    title="DRIVE: Digital Retinal Images for Vessel Extraction",
    modality="colour fundus photography (RGB)",
    labels=("background", "vessel"),
    channels=3,
    license="free for research after registration on the challenge site; cite the paper",
    citation="Staal et al., Ridge-based vessel segmentation in color images of the retina, IEEE Transactions on "
             "Medical Imaging 23(4):501-509, 2004, doi:10.1109/TMI.2004.825627",
    url="https://drive.grand-challenge.org/",
    folder="drive",
    description="40 fundus photographs from a Dutch diabetic-retinopathy screening programme (Canon CR5, 45° FOV), "
                "split 20/20 into training and test, with manual vessel masks and FOV masks.",
    grouping="case (one image per subject; subject ids are not published)",
    how_to_get="register at https://drive.grand-challenge.org/, download the training and test sets and unpack "
               "them into <data-root>/drive/ so that training/images/ and test/images/ exist",
    harmonized={"retinal vessel": (1,)},
)

SPLITS = {"training": "training", "test": "test"}
_ID = re.compile(r"^(\d+)_(training|test)$")


def read_mask(case: Case) -> np.ndarray:
    # palette GIFs with a grey palette decode to their grey levels (0/255), never to palette indices.
    return read_labels(case.masks[0], 2)


def read_fov(case: Case) -> np.ndarray:
    """The field-of-view mask of a case as 0/1 (for evaluation inside the FOV)."""
    path = Path(case.meta["fov_mask"])
    return (read_image(path, 1)[..., 0] > 127).astype(np.uint8)


def _by_number(folder: Path, suffix: str) -> dict[str, Path]:
    """``{"21": path}`` for ``21<suffix>.*`` files, e.g. ``_manual1``."""
    return {k[: -len(suffix)].lstrip("0") or "0": v
            for k, v in files_by_id(folder, (".gif", ".png", ".tif", ".tiff")).items() if k.endswith(suffix)}


def scan(root: Path) -> Scan:
    """Pair each ``<split>/images/NN_<split>.tif`` with ``1st_manual/NN_manual1.gif`` and its FOV mask."""
    base = root if (root / "training").is_dir() else first_dir(root, ("DRIVE",))
    if base is None or not (base / "training" / "images").is_dir():
        raise DataError(f"DRIVE: folder {root / 'training' / 'images'} not found",
                        fix="unpack the DRIVE training (and test) archives into <data-root>/drive/")
    out = Scan()
    for split in SPLITS:
        sdir = base / split
        if not (sdir / "images").is_dir():
            continue
        images = {m.group(1).lstrip("0") or "0": p for k, p in files_by_id(sdir / "images", (".tif", ".tiff", ".png"))
                  .items() if (m := _ID.match(k)) and m.group(2) == split}
        if not (sdir / "1st_manual").is_dir():
            continue  # annotations withheld in this copy: the split is unlabelled, not broken
        manual = _by_number(sdir / "1st_manual", "_manual1")
        fov = _by_number(sdir / "mask", f"_{split}_mask")
        second = _by_number(sdir / "2nd_manual", "_manual2")
        pairs, problems = pair_files(images, manual)
        out.problems += problems
        for num, img, msk in pairs:
            if num not in fov:
                out.problems.append(Problem("missing_file", str(sdir / "mask" / f"{img.stem}_mask.gif"),
                                            f"field-of-view mask of {img.name} missing"))
                continue
            meta = {"split": split, "fov_mask": str(fov[num])}
            if num in second:
                meta["second_observer"] = str(second[num])
            out.cases.append(Case(id=img.stem, image=img, masks=(msk,), meta=meta))
    return out


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    return scan(root).cases_or_raise("drive")
