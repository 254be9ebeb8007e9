"""CVC-ClinicDB (Bernal et al., CMIG 2015): 612 colonoscopy frames (384x288) from 29 video sequences.

Official layout: ``Original/<n>.tif`` and ``Ground Truth/<n>.tif`` for n = 1..612 (the top ``CVC-ClinicDB/`` folder
may be present or not). The widely shared PNG/TIF copy (``PNG/Original``, ``PNG/Ground Truth``, ``TIF/...``) is
read too; the official TIF folders are preferred when several are present.

Frames are grouped by video sequence so that near-identical neighbouring frames never straddle two folds.
``SEQUENCES`` lists the first and last frame number of each of the 29 sequences. Source: the sequence tags of
Dataset Ninja's CVC-ClinicDB page (https://datasetninja.com/cvc-612; github.com/dataset-ninja/cvc-612,
``src/convert.py``), the only published frame-to-sequence table we found. The ranges are contiguous, do not
overlap and cover exactly frames 1..612, which matches the dataset description ("612 images from 29 sequences");
they have not been confirmed against a table from the original authors.
"""
from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..check import Problem, Scan, files_by_id, first_dir, pair_files
from ..io import read_labels

#: (first frame, last frame) of each video sequence, inclusive, in frame order
SEQUENCES: tuple[tuple[int, int], ...] = (
    (1, 25), (26, 50), (51, 67), (68, 78), (79, 103), (104, 126), (127, 151), (152, 177), (178, 199), (200, 205),
    (206, 227), (228, 252), (253, 277), (278, 297), (298, 317), (318, 342), (343, 363), (364, 383), (384, 408),
    (409, 428), (429, 447), (448, 466), (467, 478), (479, 503), (504, 528), (529, 546), (547, 571), (572, 591),
    (592, 612),
)
_ENDS = [end for _, end in SEQUENCES]

CARD = DatasetCard(
    name="cvc-clinicdb",
    title="CVC-ClinicDB",
    modality="colonoscopy (RGB)",
    labels=("background", "polyp"),
    channels=3,
    license="free for research; publications must cite Bernal et al. 2015 (terms on the official page)",
    citation="Bernal et al., WM-DOVA maps for accurate polyp highlighting in colonoscopy: Validation vs. saliency "
             "maps from physicians, Computerized Medical Imaging and Graphics 43:99-111, 2015, "
             "doi:10.1016/j.compmedimag.2015.02.007",
    url="https://polyp.grand-challenge.org/CVCClinicDB/",
    folder="cvc-clinicdb",
    aliases=("CVC-ClinicDB", "CVC-612"),
    description="612 frames (384x288) extracted from 29 colonoscopy video sequences, one polyp mask each; the "
                "training set of the MICCAI 2015 polyp detection sub-challenge.",
    grouping="video sequence (29 sequences, frame ranges in cvc_clinicdb.SEQUENCES)",
    how_to_get="download CVC-ClinicDB from the official page (https://polyp.grand-challenge.org/CVCClinicDB/) and "
               "unpack it into <data-root>/cvc-clinicdb/ so that Original/ and 'Ground Truth'/ exist",
    harmonized={"polyp": (1,)},
)

_LAYOUTS = (("Original", "Ground Truth"), ("TIF/Original", "TIF/Ground Truth"), ("PNG/Original", "PNG/Ground Truth"))
_SUFFIXES = (".tif", ".tiff", ".png", ".bmp")


def sequence_of(frame: int) -> int:
    """The 1-based sequence number of a 1-based frame number."""
    if not 1 <= frame <= _ENDS[-1]:
        raise ValueError(f"frame {frame} outside 1..{_ENDS[-1]}")
    return bisect.bisect_left(_ENDS, frame) + 1


def read_mask(case: Case) -> np.ndarray:
    # White polyps on black (0/255, some stored as RGB TIFF): binary, foreground above 127 (0/1 copies kept).
    return read_labels(case.masks[0], 2, "binary")


def _folders(root: Path) -> tuple[Path, Path]:
    for base in (root, root / "CVC-ClinicDB"):
        for img_dir, gt_dir in _LAYOUTS:
            if (base / img_dir).is_dir() and (base / gt_dir).is_dir():
                return base / img_dir, base / gt_dir
    found = first_dir(root, ("Original", "CVC-ClinicDB/Original", "PNG/Original", "TIF/Original"))
    raise DataError(f"CVC-ClinicDB: no Original/ + 'Ground Truth'/ folder pair under {root}"
                    + (f" (found {found} only)" if found else ""),
                    fix="unpack the release into <data-root>/cvc-clinicdb/ (Original/<n>.tif, Ground Truth/<n>.tif)")


def scan(root: Path) -> Scan:
    """Pair ``Original/<n>.tif`` with ``Ground Truth/<n>.tif`` and group frame n by its sequence."""
    img_dir, gt_dir = _folders(root)
    pairs, problems = pair_files(files_by_id(img_dir, _SUFFIXES), files_by_id(gt_dir, _SUFFIXES))
    out = Scan(problems=problems)
    for cid, img, msk in pairs:
        try:
            seq = sequence_of(int(cid))
        except ValueError:
            out.problems.append(Problem("layout", str(img), "file name is not a frame number 1..612, so its video "
                                                            "sequence is unknown"))
            continue
        out.cases.append(Case(id=f"{int(cid):03d}", image=img, masks=(msk,), group=f"seq{seq:02d}",
                              meta={"frame": int(cid), "sequence": seq}))
    return out


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    return scan(root).cases_or_raise("cvc-clinicdb")
