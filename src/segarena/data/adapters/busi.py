"""BUSI (Al-Dhabyani et al., Data in Brief 2020): ``Dataset_BUSI_with_GT/<class>/<class> (<n>).png`` with
``<class> (<n>)_mask.png`` and, for a few cases with several lesions, ``_mask_1.png``/``_mask_2.png``."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..check import first_dir
from ..io import read_labels

CARD = DatasetCard(
    name="busi",
    title="Breast Ultrasound Images (BUSI)",
    modality="breast ultrasound (grayscale, stored as RGB)",
    labels=("background", "lesion"),
    channels=1,
    license="public research dataset (CC0 on the publisher's page); cite the paper",
    citation="Al-Dhabyani et al., Dataset of breast ultrasound images, Data in Brief 28:104863, 2020",
    url="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
    folder="busi",
    aliases=("Dataset_BUSI_with_GT", "BUSI"),
    description="Benign, malignant and normal breast ultrasound images with lesion masks. Near-duplicates exist.",
    grouping="case (no patient ids are published)",
    how_to_get="download Dataset_BUSI_with_GT from the publisher's page and unpack it into <data-root>/busi/",
    harmonized={"breast lesion": (1,)},
)

_NAME = re.compile(r"^(?P<cls>[a-z]+) \((?P<n>\d+)\)(?P<mask>_mask(?:_(?P<k>\d+))?)?$")


def read_mask(case: Case) -> np.ndarray:
    """Union of the case's mask files (extra lesions come as ``_mask_1``/``_mask_2``)."""
    out: np.ndarray | None = None
    for path in case.masks:
        m = read_labels(path, 2, "binary") > 0
        if out is not None and m.shape != out.shape:
            raise DataError(f"{path}: size {m.shape} differs from {case.masks[0]} {out.shape}",
                            fix="all masks of one case must have the image's size")
        out = m if out is None else (out | m)
    assert out is not None
    return out.astype(np.uint8)


@register_dataset(CARD, read_mask=read_mask)
def find_cases(root: Path) -> list[Case]:
    # the release's top folder, or the data root's busi/ holding it (matched in any letter case)
    base = root if root.name.lower() == "dataset_busi_with_gt" else (
        first_dir(root, ("Dataset_BUSI_with_GT",)) or root / "Dataset_BUSI_with_GT")
    if not base.is_dir():
        raise DataError(f"BUSI: folder {base} not found",
                        fix=f"unpack the official release so that {base}/benign/ exists")
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    meta: dict[str, str] = {}
    for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for p in sorted(cls_dir.glob("*.png")):
            m = _NAME.match(p.stem)
            if not m:
                continue
            cid = f"{m['cls']}_{int(m['n']):03d}"
            meta[cid] = m["cls"]
            if m["mask"]:
                masks.setdefault(cid, []).append(p)
            else:
                images[cid] = p
    if not images:
        raise DataError(f"BUSI: no images in {base}", fix="check the dataset root")
    orphans = sorted(set(images) ^ set(masks))
    if orphans:
        o = orphans[0]
        raise DataError(f"BUSI: {len(orphans)} case(s) with image but no mask or the reverse, e.g. "
                        f"{images.get(o) or masks[o][0]}", fix="restore the missing file or remove the case")
    # ``_mask`` first, then ``_mask_1``, ``_mask_2`` in order
    return [Case(id=cid, image=images[cid], masks=tuple(sorted(masks[cid], key=lambda p: (len(p.stem), p.stem))),
                 meta={"diagnosis": meta[cid]}) for cid in sorted(images)]
