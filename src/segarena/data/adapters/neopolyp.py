"""BKAI-IGH NeoPolyp-Small (Lan et al. 2021, An et al. 2022): polyp segmentation with neoplasm classification.

Official layout (the Kaggle competition "bkai-igh-neopolyp", unpacked as downloaded)::

    train/train/<id>.jpeg          1,000 colonoscopy images (WLI and FICE)
    train_gt/train_gt/<id>.jpeg    RGB-coded masks: red = neoplastic, green = non-neoplastic, black = background
    test/test/<id>.jpeg            200 test images without public masks (not used)

Copies that dropped the doubled folder level (``train/<id>.jpeg``, ``train_gt/<id>.jpeg``) are accepted too.

The masks are JPEG-compressed, so colours bleed at the edges: a pixel is foreground when its red or green channel
exceeds ``THRESHOLD``, and its class is the dominant of the two channels. Class order follows Borst & Kounev
(non-neoplastic, neoplastic), so ``labels = (background, non-neoplastic, neoplastic)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..check import Scan, files_by_id, first_dir, pair_files
from ..io import read_image

#: red or green channel above this value marks a polyp pixel (JPEG noise on black stays far below it)
THRESHOLD = 127
NON_NEOPLASTIC, NEOPLASTIC = 1, 2

CARD = DatasetCard(
    name="neopolyp",
    title="BKAI-IGH NeoPolyp-Small",
    modality="colonoscopy (RGB; white light and FICE)",
    labels=("background", "non-neoplastic", "neoplastic"),
    channels=3,
    license="Kaggle competition data (bkai-igh-neopolyp) for research; no open licence published — accept the "
            "competition rules and cite the papers",
    citation="Lan et al., NeoUNet: Towards accurate colon polyp segmentation and neoplasm detection, ISVC 2021, "
             "arXiv:2107.05023; An et al., BlazeNeo: Blazing fast polyp segmentation and neoplasm detection, "
             "IEEE Access 10:43669-43684, 2022, doi:10.1109/ACCESS.2022.3168693",
    url="https://www.kaggle.com/competitions/bkai-igh-neopolyp",
    folder="neopolyp",
    aliases=("bkai-igh-neopolyp", "NeoPolyp-Small"),
    description="1,000 training images with colour-coded masks (945 after removing duplicates in Borst & Kounev); "
                "JPEG masks, classified by dominant channel.",
    grouping="case (no patient ids are published)",
    how_to_get="join the Kaggle competition bkai-igh-neopolyp, download its data and unzip it into "
               "<data-root>/neopolyp/ so that train/train/ and train_gt/train_gt/ exist",
    harmonized={"polyp": (NON_NEOPLASTIC, NEOPLASTIC)},
)

_SUFFIXES = (".jpeg", ".jpg", ".png")


def decode_colours(rgb: np.ndarray, threshold: int = THRESHOLD) -> np.ndarray:
    """RGB mask -> label map: 0 background, 1 non-neoplastic (green), 2 neoplastic (red)."""
    r = rgb[..., 0].astype(np.int16)
    g = rgb[..., 1].astype(np.int16)
    out = np.zeros(rgb.shape[:2], np.uint8)
    fg = (r > threshold) | (g > threshold)
    out[fg & (g > r)] = NON_NEOPLASTIC
    out[fg & (r >= g)] = NEOPLASTIC
    return out


def read_mask(case: Case) -> np.ndarray:
    return decode_colours(read_image(case.masks[0], 3))


def scan(root: Path) -> Scan:
    """Pair ``train/train/<id>.jpeg`` with ``train_gt/train_gt/<id>.jpeg`` (or the single-level variant)."""
    images_dir = first_dir(root, ("train/train", "train"))
    masks_dir = first_dir(root, ("train_gt/train_gt", "train_gt"))
    if images_dir is None or masks_dir is None:
        raise DataError(f"NeoPolyp: {root}/train/train or {root}/train_gt/train_gt not found",
                        fix="unzip the Kaggle bkai-igh-neopolyp archive into <data-root>/neopolyp/")
    images = files_by_id(images_dir, _SUFFIXES)
    masks = files_by_id(masks_dir, _SUFFIXES)
    pairs, problems = pair_files(images, masks)
    return Scan(cases=[Case(id=cid, image=img, masks=(msk,)) for cid, img, msk in pairs], problems=problems)


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    return scan(root).cases_or_raise("neopolyp")
