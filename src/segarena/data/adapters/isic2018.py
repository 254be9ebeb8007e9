"""ISIC 2018 Task 1, lesion boundary segmentation (Codella et al. 2019; images from HAM10000, Tschandl et al. 2018).

Official layout (one folder per archive of the challenge's data page, unpacked side by side)::

    ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg           2,594 images (+ LICENSE.txt, ATTRIBUTION.txt)
    ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png
    ISIC2018_Task1-2_Validation_Input/      ISIC2018_Task1_Validation_GroundTruth/    100 pairs
    ISIC2018_Task1-2_Test_Input/            ISIC2018_Task1_Test_GroundTruth/          1,000 pairs

Borst & Kounev pooled all public splits (3,694 pairs, 3,565 after removing duplicates), so this adapter lists every
split that is present and keeps the official split name in ``meta["split"]``. The training split is required;
validation and test are added when their folders exist. Masks are 8-bit PNGs holding 0 and 255 only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..check import Scan, files_by_id, pair_files
from ..io import read_labels

_BASE = "https://isic-challenge-data.s3.amazonaws.com/2018/"
#: split name -> (image folder, ground-truth folder); each is one archive ``<folder>.zip`` on the challenge bucket
SPLITS = {
    "training": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "validation": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}

CARD = DatasetCard(
    name="isic2018",
    title="ISIC 2018 Task 1: lesion boundary segmentation",
    modality="dermoscopy (RGB)",
    labels=("background", "skin lesion"),
    channels=3,
    license="CC BY-NC 4.0 (ISIC challenge data; attribution in each archive's ATTRIBUTION.txt)",
    citation="Codella et al., Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the "
             "International Skin Imaging Collaboration (ISIC), arXiv:1902.03368, 2019; Tschandl et al., The HAM10000 "
             "dataset, Scientific Data 5:180161, 2018, doi:10.1038/sdata.2018.161",
    url="https://challenge.isic-archive.com/data/#2018",
    folder="isic2018",
    description="3,694 dermoscopic images (training 2,594, validation 100, test 1,000) with one lesion mask each; "
                "sizes from 540x576 to 6688x4459 px. Pooled over all public splits as in Borst & Kounev.",
    grouping="case (the Task 1 release publishes no lesion or patient ids)",
    # Six archives (images and ground truth for three splits): one Download cannot describe them, so the card
    # says where to get each instead. All six are public, no login needed.
    how_to_get="download the six Task 1 archives " + ", ".join(f"{_BASE}{f}.zip" for pair in SPLITS.values()
                                                                 for f in pair)
               + " and unzip them side by side into <data-root>/isic2018/ (at least the two training archives)",
    harmonized={"skin lesion": (1,)},
)


def read_mask(case: Case) -> np.ndarray:
    """0/255 PNG -> 0/1; any other value is reported with the file name."""
    return read_labels(case.masks[0], 2)


def scan(root: Path) -> Scan:
    """Pair ``ISIC_<id>.jpg`` with ``ISIC_<id>_segmentation.png`` in every split present under ``root``."""
    if not (root / SPLITS["training"][0]).is_dir():
        raise DataError(f"ISIC 2018: folder {root / SPLITS['training'][0]} not found",
                        fix=f"unzip {_BASE}{SPLITS['training'][0]}.zip and its ground truth into {root}")
    out = Scan()
    for split, (img_dir, gt_dir) in SPLITS.items():
        if not (root / img_dir).is_dir() and not (root / gt_dir).is_dir():
            continue  # split not downloaded
        images = files_by_id(root / img_dir, (".jpg", ".jpeg", ".png"))
        masks = files_by_id(root / gt_dir, (".png",), strip="_segmentation")
        pairs, problems = pair_files(images, masks)
        out.problems += problems
        out.cases += [Case(id=cid, image=img, masks=(msk,), meta={"split": split}) for cid, img, msk in pairs]
    return out


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    return scan(root).cases_or_raise("isic2018")
