"""Kvasir-SEG, BUSI, HC18, folder and nnU-Net adapters on fixture trees in the official layouts (generated here)
and on the real sets in ../shared/data; mask validation errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from segarena import DataError
from segarena.data import DATASETS, discover
from segarena.data.prepare import prepare


def _rgb(h=40, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def make_kvasir(root: Path, n=6) -> Path:
    base = root / "kvasir-seg"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    for i in range(n):
        Image.fromarray(_rgb(seed=i)).save(base / "images" / f"case{i}.jpg", quality=90)
        m = np.zeros((40, 50, 3), np.uint8)
        m[10:30, 10 + i:30 + i] = 255
        Image.fromarray(m).save(base / "masks" / f"case{i}.jpg", quality=75)  # JPEG: grey edges
    (base / "kavsir_bboxes.json").write_text("{}")
    return root


def make_busi(root: Path) -> Path:
    base = root / "busi" / "Dataset_BUSI_with_GT"
    for cls, n in (("benign", 4), ("malignant", 3)):
        (base / cls).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.fromarray(_rgb(seed=i)).save(base / cls / f"{cls} ({i}).png")  # RGB-stored grayscale
            m = np.zeros((40, 50), np.uint8)
            m[5:15, 5:15] = 255
            Image.fromarray(m).convert("RGB").save(base / cls / f"{cls} ({i})_mask.png")
    extra = np.zeros((40, 50), np.uint8)
    extra[25:35, 30:40] = 255
    Image.fromarray(extra).save(base / "benign" / "benign (2)_mask_1.png")
    return root


def make_hc18(root: Path, filled=False) -> Path:
    base = root / "hc18" / "training_set"
    base.mkdir(parents=True)
    rows = ["filename,pixel size(mm),head circumference (mm)"]
    for name in ("000_HC", "001_HC", "001_2HC", "002_HC", "003_HC", "004_HC"):
        Image.fromarray(_rgb(60, 80)[..., 0]).save(base / f"{name}.png")
        ann = Image.new("L", (80, 60), 0)
        ImageDraw.Draw(ann).ellipse((10, 10, 60, 45), outline=255, fill=255 if filled else None, width=1)
        ann.save(base / f"{name}_Annotation.png")
        rows.append(f"{name}.png,0.1{name[:3]},100.0")
    (root / "hc18" / "training_set_pixel_size_and_HC.csv").write_text("\n".join(rows) + "\n")
    return root


def test_kvasir_fixture_binarises_jpeg_masks(tmp_path):
    card, cases, _ = discover("kvasir-seg", make_kvasir(tmp_path))
    assert len(cases) == 6 and card.labels == ("background", "polyp")
    m = DATASETS.get("kvasir-seg").read_mask(cases[0])
    assert set(np.unique(m)) == {0, 1}
    assert m[20, 20] == 1 and m[0, 0] == 0


def test_busi_fixture_merges_extra_masks(tmp_path):
    card, cases, _ = discover("busi", make_busi(tmp_path))
    assert len(cases) == 7 and card.channels == 1
    two = next(c for c in cases if c.id == "benign_002")
    assert len(two.masks) == 2 and two.masks[0].name == "benign (2)_mask.png"
    m = DATASETS.get("busi").read_mask(two)
    assert m[10, 10] == 1 and m[30, 35] == 1 and m[0, 0] == 0
    assert two.meta["diagnosis"] == "benign"


@pytest.mark.parametrize("filled", [False, True])
def test_hc18_fills_outline_or_accepts_filled(tmp_path, filled):
    card, cases, _ = discover("hc18", make_hc18(tmp_path, filled))
    by_id = {c.id: c for c in cases}
    assert by_id["001_2HC"].group == by_id["001_HC"].group == "001"
    assert by_id["000_HC"].meta["spacing_mm"] == (0.1000, 0.1000)
    m = DATASETS.get("hc18").read_mask(cases[0])
    assert m[27, 35] == 1 and m[0, 0] == 0 and m.sum() > 1000


def make_folder(root: Path, values=(0, 255), n=6, orphan=False) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(_rgb(seed=i)).save(root / "images" / f"img{i}.png")
        m = np.full((40, 50), values[0], np.uint8)
        m[:20] = values[1]
        Image.fromarray(m).save(root / "masks" / f"img{i}.png")
    if orphan:
        Image.fromarray(_rgb()).save(root / "images" / "lonely.png")
    return root


def test_folder_dataset_with_value_mapping(tmp_path):
    root = make_folder(tmp_path / "d", values=(0, 255))
    card, cases, _ = discover("folder", options={"path": str(root)})
    assert len(cases) == 6
    assert set(np.unique(DATASETS.get("folder").read_mask(cases[0]))) == {0, 1}
    root2 = make_folder(tmp_path / "e", values=(0, 7))
    _, cases, _ = discover("folder", options={"path": str(root2), "mask_values": {"0": 0, "7": 1}})
    assert DATASETS.get("folder").read_mask(cases[0]).max() == 1
    _, cases, _ = discover("folder", options={"path": str(root2)})
    with pytest.raises(DataError, match=r"unexpected mask values \[7\].*mask_values"):
        DATASETS.get("folder").read_mask(cases[0])


def test_folder_orphans_and_empty(tmp_path):
    with pytest.raises(DataError, match="1 image\\(s\\) without mask.*lonely.png"):
        discover("folder", options={"path": str(make_folder(tmp_path / "o", orphan=True))})
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        discover("folder", options={"path": str(tmp_path / "empty")})
    with pytest.raises(DataError, match="needs a folder"):
        discover("folder")


def test_nnunet_v2_layout(tmp_path):
    base = tmp_path / "Dataset001_Test"
    (base / "imagesTr").mkdir(parents=True)
    (base / "labelsTr").mkdir()
    for i in range(5):
        Image.fromarray(_rgb(seed=i)).save(base / "imagesTr" / f"case_{i:03d}_0000.png")
        lab = np.zeros((40, 50), np.uint8)
        lab[:10], lab[30:] = 1, 2
        Image.fromarray(lab).save(base / "labelsTr" / f"case_{i:03d}.png")
    (base / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": 5, "file_ending": ".png", "name": "Test"}))
    card, cases, _ = discover("nnunet", options={"path": str(base)})
    assert card.labels == ("background", "a", "b") and card.channels == 3 and len(cases) == 5
    assert set(np.unique(DATASETS.get("nnunet").read_mask(cases[0]))) == {0, 1, 2}


def test_mask_size_mismatch_is_reported_with_file(tmp_path):
    root = make_folder(tmp_path / "d")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "img3.png")
    with pytest.raises(DataError, match="img3.png: mask size 10x10 differs"):
        prepare("folder", 32, options={"path": str(root)})


def test_corrupt_image_is_reported_and_no_cache_left(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "images" / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="img2.png"):
        prepare("folder", 32, options={"path": str(root)})
    from segarena.data.prepare import prepared_root

    leftovers = list(prepared_root().glob("*")) if prepared_root().exists() else []
    assert leftovers == []  # nothing half-prepared is left behind


def test_prepare_is_reused_and_memory_mapped(tmp_path):
    root = make_folder(tmp_path / "d")
    a = prepare("folder", 32, options={"path": str(root)})
    assert isinstance(a.images, np.memmap) and a.images.shape == (6, 32, 32, 3) and a.masks.shape == (6, 32, 32)
    mtime = (a.folder / "images_32.npy").stat().st_mtime_ns
    b = prepare("folder", 32, options={"path": str(root)})
    assert (b.folder / "images_32.npy").stat().st_mtime_ns == mtime
    assert b.native_mask(0).shape == (40, 50) and b.native_shape(0) == (40, 50)


@pytest.mark.realdata
@pytest.mark.parametrize("name,n,classes", [("kvasir-seg", 1000, {0, 1}), ("busi", 240, {0, 1}),
                                            ("hc18", 300, {0, 1})])
def test_real_datasets(real_data_root, name, n, classes):
    card, cases, _ = discover(name, real_data_root)
    assert len(cases) == n
    adapter = DATASETS.get(name)
    for case in cases[:: max(1, n // 5)]:
        m = adapter.read_mask(case)
        img = adapter.load_image(case, card.channels)
        assert m.shape == img.shape[:2] and set(np.unique(m)) <= classes and m.any()
