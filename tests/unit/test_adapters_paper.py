"""Adapters of the paper's datasets and their cross-dataset partners, on tiny trees generated in each official
layout (file names, formats, colour codes), read back through the registry exactly as a study would."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segarena._errors import DataError
from segarena.data import DATASETS, discover


def _rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(arr: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _square(h: int = 12, w: int = 16, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[2:6, 3:9] = value
    return m


def _load(name: str, root: Path):
    card, cases, _ = discover(name, root)
    return card, {c.id: c for c in cases}, DATASETS.get(name)


# ---- ISIC 2018 ----------------------------------------------------------------------------------------------------
def _isic(root: Path, splits: dict[str, list[str]]) -> Path:
    base = root / "isic2018"
    folders = {"training": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
               "validation": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
               "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth")}
    for i, (split, ids) in enumerate(splits.items()):
        img_dir, gt_dir = folders[split]
        (base / img_dir).mkdir(parents=True)
        (base / img_dir / "LICENSE.txt").write_text("CC BY-NC 4.0")
        (base / img_dir / "ATTRIBUTION.txt").write_text("ISIC")
        for j, cid in enumerate(ids):
            _save(_rgb(seed=10 * i + j), base / img_dir / f"{cid}.jpg", quality=95)
            _save(_square(), base / gt_dir / f"{cid}_segmentation.png")
    return base


def test_isic2018_pools_all_splits(tmp_path):
    base = _isic(tmp_path, {"training": ["ISIC_0000000", "ISIC_0000001"], "validation": ["ISIC_0012255"],
                            "test": ["ISIC_0012236", "ISIC_0036309"]})
    card, cases, adapter = _load("isic2018", tmp_path)
    assert len(cases) == 5
    assert {c.meta["split"] for c in cases.values()} == {"training", "validation", "test"}
    assert cases["ISIC_0012255"].meta["split"] == "validation"
    assert cases["ISIC_0000001"].masks[0] == base / "ISIC2018_Task1_Training_GroundTruth" / \
        "ISIC_0000001_segmentation.png"
    mask = adapter.read_mask(cases["ISIC_0000000"])
    assert mask.dtype == np.uint8 and mask[3, 4] == 1 and mask[0, 0] == 0 and mask.sum() == 24
    assert adapter.load_image(cases["ISIC_0000000"], 3).shape == (12, 16, 3)
    assert card.labels == ("background", "skin lesion") and card.harmonized == {"skin lesion": (1,)}
    assert {c.group_id for c in cases.values()} == set(cases)  # no grouping beyond the case itself


def test_isic2018_training_only_and_errors(tmp_path):
    base = _isic(tmp_path, {"training": ["ISIC_0000000", "ISIC_0000001"]})
    _, cases, adapter = _load("isic2018", tmp_path)
    assert len(cases) == 2
    _save(_square(value=128), base / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png")
    with pytest.raises(DataError, match="ISIC_0000001_segmentation.png: unexpected mask values"):
        adapter.read_mask(cases["ISIC_0000001"])
    (base / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png").unlink()
    with pytest.raises(DataError, match=r"orphan image: .*ISIC_0000001\.jpg"):
        discover("isic2018", tmp_path)


# ---- BKAI-IGH NeoPolyp --------------------------------------------------------------------------------------------
def _neopolyp_mask(h: int = 32, w: int = 32) -> np.ndarray:
    m = np.zeros((h, w, 3), np.uint8)
    m[4:14, 4:14] = (255, 0, 0)  # neoplastic
    m[18:28, 16:28] = (0, 255, 0)  # non-neoplastic
    return m


def test_neopolyp_decodes_jpeg_colour_codes(tmp_path):
    base = tmp_path / "neopolyp"
    for i, cid in enumerate(["0081835cf877e004e8bfb905b78a9139", "00e4b5f9b2b4a4c1f3c3e8d2a1b0c9d8"]):
        _save(_rgb(32, 32, seed=i), base / "train" / "train" / f"{cid}.jpeg", quality=90)
        _save(_neopolyp_mask(), base / "train_gt" / "train_gt" / f"{cid}.jpeg", quality=75)
    _save(_rgb(32, 32), base / "test" / "test" / "ffffffff.jpeg")  # unlabelled test image: ignored
    card, cases, adapter = _load("neopolyp", tmp_path)
    assert len(cases) == 2
    assert card.labels == ("background", "non-neoplastic", "neoplastic")
    assert card.harmonized == {"polyp": (1, 2)}
    mask = adapter.read_mask(cases["0081835cf877e004e8bfb905b78a9139"])
    assert mask[8, 8] == 2 and mask[22, 20] == 1 and mask[0, 31] == 0 and mask[30, 2] == 0
    # JPEG ringing must not invent classes: the interior of each block is clean, the background stays background
    assert set(np.unique(mask[5:13, 5:13])) == {2} and set(np.unique(mask[19:27, 17:27])) == {1}
    assert (mask[:, :3] == 0).all()


def test_neopolyp_single_level_copy(tmp_path):
    base = tmp_path / "neopolyp"
    _save(_rgb(32, 32), base / "train" / "abc.jpeg")
    _save(_neopolyp_mask(), base / "train_gt" / "abc.jpeg")
    _, cases, _ = _load("neopolyp", tmp_path)
    assert list(cases) == ["abc"]


# ---- CAMUS --------------------------------------------------------------------------------------------------------
def _frame(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _labels(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[1:3, 1:4] = 1
    m[3:5, 1:4] = 2
    m[5:7, 5:8] = 3
    return m


def _nifti(arr_hw: np.ndarray, path: Path, zooms_xy: tuple[float, float], singleton: bool = True) -> None:
    """Write a [H, W] frame the way the CAMUS release stores it: x (columns) first, optional singleton axis."""
    nib = pytest.importorskip("nibabel")
    data = arr_hw.T[..., None] if singleton else arr_hw.T
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine=np.diag([*zooms_xy, 1.0, 1.0]))
    img.header.set_zooms((*zooms_xy, 1.0)[: data.ndim])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(str(path))


def _camus(root: Path, patients: int = 2, h: int = 8, w: int = 10) -> Path:
    db = root / "camus" / "CAMUS_public" / "database_nifti"
    for p in range(1, patients + 1):
        pid = f"patient{p:04d}"
        for v, view in enumerate(("2CH", "4CH")):
            (db / pid).mkdir(parents=True, exist_ok=True)
            (db / pid / f"Info_{view}.cfg").write_text(
                "ED: 1\nES: 18\nNbFrame: 18\nSex: F\nAge: 60\nImageQuality: Good\nEF: 55.5\nFrameRate: 40.0\n")
            for phase in ("ED", "ES"):
                stem = db / pid / f"{pid}_{view}_{phase}"
                _nifti(_frame(h, w, p * 10 + v), Path(f"{stem}.nii.gz"), (0.3, 0.15), singleton=(p == 1))
                _nifti(_labels(h, w), Path(f"{stem}_gt.nii.gz"), (0.3, 0.15), singleton=(p == 1))
            _nifti(_frame(h, w, 0), db / pid / f"{pid}_{view}_half_sequence.nii.gz", (0.3, 0.15))
    split = root / "camus" / "CAMUS_public" / "database_split"
    split.mkdir(parents=True)
    (split / "subgroup_training.txt").write_text("patient0001\n")
    (split / "subgroup_testing.txt").write_text("patient0002\n")
    return db


def test_camus_nifti_release(tmp_path):
    pytest.importorskip("nibabel")
    db = _camus(tmp_path)
    card, cases, adapter = _load("camus", tmp_path)
    assert len(cases) == 8  # 2 patients x 2 views x 2 phases; half sequences ignored
    assert {c.group for c in cases.values()} == {"patient0001", "patient0002"}
    case = cases["patient0001_4CH_ES"]
    assert case.meta["view"] == "4CH" and case.meta["phase"] == "ES"
    assert case.meta["spacing_mm"] == pytest.approx((0.15, 0.3))  # (sy, sx) from pixdim (x first)
    assert case.meta["image_quality"] == "Good" and case.meta["ef"] == 55.5
    assert case.meta["split"] == "training" and cases["patient0002_2CH_ED"].meta["split"] == "testing"
    for cid, seed in (("patient0001_4CH_ES", 11), ("patient0002_2CH_ED", 20)):  # 3D and 2D storage
        img = adapter.load_image(cases[cid], 1)
        assert img.shape == (8, 10, 1) and np.array_equal(img[..., 0], _frame(8, 10, seed))
        assert adapter.load_image(cases[cid], 3).shape == (8, 10, 3)
        mask = adapter.read_mask(cases[cid])
        assert np.array_equal(mask, _labels(8, 10)) and mask[1, 1] == 1 and mask[3, 2] == 2 and mask[6, 6] == 3
    assert card.has_spacing and card.labels[1:] == ("LV cavity", "LV myocardium", "left atrium")
    (db / "patient0002" / "patient0002_2CH_ES_gt.nii.gz").unlink()
    with pytest.raises(DataError, match="patient0002_2CH_ES.nii.gz"):
        discover("camus", tmp_path)


def test_camus_rejects_label_out_of_range(tmp_path):
    pytest.importorskip("nibabel")
    db = _camus(tmp_path, patients=1)
    bad = _labels(8, 10)
    bad[0, 0] = 7
    _nifti(bad, db / "patient0001" / "patient0001_2CH_ED_gt.nii.gz", (0.3, 0.15))
    _, cases, adapter = _load("camus", tmp_path)
    with pytest.raises(DataError, match="unexpected mask values"):
        adapter.read_mask(cases["patient0001_2CH_ED"])


def _mhd(arr_hw: np.ndarray, path: Path, spacing_xy: tuple[float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw")
    raw.write_bytes(np.ascontiguousarray(arr_hw).tobytes())
    h, w = arr_hw.shape
    path.write_text("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                    f"CompressedData = False\nElementSpacing = {spacing_xy[0]} {spacing_xy[1]} 1.54\n"
                    f"DimSize = {w} {h} 1\nElementType = MET_UCHAR\nElementDataFile = {raw.name}\n")


def test_camus_older_mhd_release(tmp_path):
    pdir = tmp_path / "camus" / "training" / "patient0001"
    for view in ("2CH", "4CH"):
        for phase in ("ED", "ES"):
            _mhd(_frame(6, 9, 1), pdir / f"patient0001_{view}_{phase}.mhd", (0.308, 0.154))
            _mhd(_labels(6, 9) if phase == "ED" else np.zeros((6, 9), np.uint8),
                 pdir / f"patient0001_{view}_{phase}_gt.mhd", (0.308, 0.154))
    _mhd(_frame(6, 9, 2), tmp_path / "camus" / "testing" / "patient0451" / "patient0451_2CH_ED.mhd", (0.3, 0.15))
    _, cases, adapter = _load("camus", tmp_path)
    assert len(cases) == 4  # unlabelled testing/ patients are not part of the labelled release
    case = cases["patient0001_2CH_ED"]
    assert case.meta["spacing_mm"] == pytest.approx((0.154, 0.308))
    assert np.array_equal(adapter.load_image(case, 1)[..., 0], _frame(6, 9, 1))
    assert np.array_equal(adapter.read_mask(case), _labels(6, 9))


# ---- CVC-ClinicDB -------------------------------------------------------------------------------------------------
def test_cvc_clinicdb_groups_by_sequence(tmp_path):
    base = tmp_path / "cvc-clinicdb" / "CVC-ClinicDB"
    for n in (1, 25, 26, 205, 612):
        _save(_rgb(seed=n), base / "Original" / f"{n}.tif")
        _save(_square(), base / "Ground Truth" / f"{n}.tif")
    card, cases, adapter = _load("cvc-clinicdb", tmp_path)
    assert sorted(cases) == ["001", "025", "026", "205", "612"]
    assert [cases[k].group for k in sorted(cases)] == ["seq01", "seq01", "seq02", "seq10", "seq29"]
    assert cases["026"].meta == {"frame": 26, "sequence": 2}
    mask = adapter.read_mask(cases["205"])
    assert mask[3, 4] == 1 and mask.sum() == 24
    assert adapter.load_image(cases["001"], 3).shape == (12, 16, 3)
    assert card.harmonized == {"polyp": (1,)}


def test_cvc_sequence_table_covers_612_frames_in_29_sequences():
    from segarena.data.adapters.cvc_clinicdb import SEQUENCES, sequence_of

    assert len(SEQUENCES) == 29 and SEQUENCES[0][0] == 1 and SEQUENCES[-1][1] == 612
    assert all(a[1] + 1 == b[0] for a, b in zip(SEQUENCES, SEQUENCES[1:]))  # contiguous, no overlap
    assert [sequence_of(n) for n in (1, 25, 26, 78, 79, 478, 479, 612)] == [1, 1, 2, 4, 5, 23, 24, 29]
    with pytest.raises(ValueError):
        sequence_of(613)


def test_cvc_clinicdb_png_variant_and_rgb_masks(tmp_path):
    base = tmp_path / "cvc-clinicdb" / "PNG"
    _save(_rgb(seed=3), base / "Original" / "3.png")
    _save(np.repeat(_square()[..., None], 3, axis=2), base / "Ground Truth" / "3.png")
    _, cases, adapter = _load("cvc-clinicdb", tmp_path)
    assert list(cases) == ["003"] and adapter.read_mask(cases["003"]).sum() == 24


# ---- PH2 ----------------------------------------------------------------------------------------------------------
def test_ph2_bmp_layout_and_diagnoses(tmp_path):
    base = tmp_path / "ph2" / "PH2Dataset"
    images = base / "PH2 Dataset images"
    for i, name in enumerate(("IMD002", "IMD003", "IMD058")):
        _save(_rgb(seed=i), images / name / f"{name}_Dermoscopic_Image" / f"{name}.bmp")
        lesion = Image.fromarray(_square() > 0).convert("1") if i == 0 else Image.fromarray(_square())
        path = images / name / f"{name}_lesion" / f"{name}_lesion.bmp"
        path.parent.mkdir(parents=True)
        lesion.save(path)
        (images / name / f"{name}_roi").mkdir()
    (base / "PH2_dataset.txt").write_text(
        "||   Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry ||\n"
        "|| IMD002 ||  || 1 || 0 ||\n|| IMD003 ||  || 0 || 0 ||\n|| IMD058 || Melanoma || 2 || 2 ||\n")
    card, cases, adapter = _load("ph2", tmp_path)
    assert sorted(cases) == ["IMD002", "IMD003", "IMD058"]
    assert cases["IMD058"].meta["diagnosis"] == "melanoma" and cases["IMD002"].meta["diagnosis"] == "atypical nevus"
    for name in cases:  # 1-bit and 8-bit BMP masks decode alike
        mask = adapter.read_mask(cases[name])
        assert mask[3, 4] == 1 and mask[0, 0] == 0 and mask.sum() == 24
    assert card.harmonized == {"skin lesion": (1,)}


def test_ph2_missing_lesion_is_named(tmp_path):
    images = tmp_path / "ph2" / "PH2 Dataset images"
    _save(_rgb(), images / "IMD002" / "IMD002_Dermoscopic_Image" / "IMD002.bmp")
    with pytest.raises(DataError, match=r"IMD002\.bmp"):
        discover("ph2", tmp_path)


# ---- BUS-BRA ------------------------------------------------------------------------------------------------------
def test_busbra_patients_folds_and_mask_encodings(tmp_path):
    base = tmp_path / "busbra"
    ids = ["bus_0001-l", "bus_0001-r", "bus_0002-s"]
    for i, cid in enumerate(ids):
        _save(_rgb(seed=i)[..., 0], base / "Images" / f"{cid}.png")
    mask_dir = base / "Masks"
    _save(_square(), mask_dir / "mask_0001-l.png")  # 0/255
    _save(_square(value=1), mask_dir / "mask_0001-r.png")  # 0/1
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., :3] = _square()[..., None]
    rgba[..., 3] = 255
    _save(rgba, mask_dir / "mask_0002-s.png")  # RGBA silhouette
    (base / "bus_data.csv").write_text(
        "ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX\n"
        "bus_0001-l,1,Fibroadenoma,benign,3,1,16,12,left,\"[1, 2, 3, 4]\"\n"
        "bus_0001-r,1,Fibroadenoma,benign,3,1,16,12,right,\"[1, 2, 3, 4]\"\n"
        "bus_0002-s,2,Invasive ductal carcinoma,malignant,5,2,16,12,left,\"[1, 2, 3, 4]\"\n", encoding="utf-8")
    (base / "5-fold-cv.csv").write_text("ID,Pathology,kFold\nbus_0001-l,benign,3\nbus_0001-r,benign,3\n"
                                        "bus_0002-s,malignant,1\n")
    (base / "10-fold-cv.csv").write_text("ID,Pathology,kFold\nbus_0001-l,benign,7\nbus_0001-r,benign,7\n"
                                         "bus_0002-s,malignant,10\n")
    card, cases, adapter = _load("busbra", tmp_path)
    assert sorted(cases) == ids
    assert cases["bus_0001-l"].group == cases["bus_0001-r"].group == "patient0001"
    assert cases["bus_0002-s"].group == "patient0002"
    assert cases["bus_0002-s"].meta["pathology"] == "malignant" and cases["bus_0002-s"].meta["birads"] == "5"
    assert (cases["bus_0001-r"].meta["fold_5"], cases["bus_0001-r"].meta["fold_10"]) == (3, 7)
    for cid in ids:
        mask = adapter.read_mask(cases[cid])
        assert mask[3, 4] == 1 and mask[0, 0] == 0 and mask.sum() == 24, cid
    assert adapter.load_image(cases["bus_0001-l"], 1).shape == (12, 16, 1)
    assert card.download is not None and card.download.archive_root == "BUSBRA"
    assert card.harmonized == {"breast lesion": (1,)}


def test_busbra_groups_by_file_number_without_csv(tmp_path):
    base = tmp_path / "busbra"
    for cid in ("bus_0007-l", "bus_0007-r"):
        _save(_rgb()[..., 0], base / "Images" / f"{cid}.png")
        _save(_square(), base / "Masks" / f"{cid.replace('bus_', 'mask_')}.png")
    _, cases, _ = _load("busbra", tmp_path)
    assert {c.group for c in cases.values()} == {"patient0007"}
    assert all("fold_5" not in c.meta for c in cases.values())


# ---- DRIVE --------------------------------------------------------------------------------------------------------
def _gif(mask01: np.ndarray, path: Path) -> None:
    """A palette GIF whose index 1 is white: reading indices instead of colours would give 0/1, not 0/255."""
    im = Image.fromarray(mask01.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _drive(root: Path, with_test_labels: bool) -> Path:
    base = root / "drive" / "DRIVE"
    for split, nums in (("training", (21, 22)), ("test", (1, 2))):
        for n in nums:
            _save(_rgb(seed=n), base / split / "images" / f"{n:02d}_{split}.tif")
            fov = np.zeros((12, 16), np.uint8)
            fov[1:11, 1:15] = 1
            _gif(fov, base / split / "mask" / f"{n:02d}_{split}_mask.gif")
            if split == "training" or with_test_labels:
                _gif(_square(value=1), base / split / "1st_manual" / f"{n:02d}_manual1.gif")
            if split == "test" and with_test_labels:
                _gif(_square(value=1), base / split / "2nd_manual" / f"{n:02d}_manual2.gif")
    return base


def test_drive_fov_and_palette_gifs(tmp_path):
    base = _drive(tmp_path, with_test_labels=True)
    card, cases, adapter = _load("drive", tmp_path)
    assert sorted(cases) == ["01_test", "02_test", "21_training", "22_training"]
    case = cases["21_training"]
    assert case.meta["split"] == "training"
    assert case.meta["fov_mask"] == str(base / "training" / "mask" / "21_training_mask.gif")
    assert cases["01_test"].meta["second_observer"].endswith("01_manual2.gif")
    mask = adapter.read_mask(case)
    assert mask[3, 4] == 1 and mask[0, 0] == 0 and mask.sum() == 24
    from segarena.data.adapters.drive import read_fov

    fov = read_fov(case)
    assert fov[0, 0] == 0 and fov[5, 5] == 1 and fov.sum() == 140
    assert card.labels == ("background", "vessel")


def test_drive_copy_without_test_annotations(tmp_path):
    base = _drive(tmp_path, with_test_labels=False)
    _, cases, _ = _load("drive", tmp_path)
    assert sorted(cases) == ["21_training", "22_training"]
    (base / "training" / "mask" / "22_training_mask.gif").unlink()
    with pytest.raises(DataError, match="22_training_mask.gif"):
        discover("drive", tmp_path)


@pytest.mark.parametrize("name", ["isic2018", "neopolyp", "camus", "cvc-clinicdb", "ph2", "busbra", "drive"])
def test_cards_complete(name):
    card = DATASETS.get(name).card
    for field in ("title", "modality", "license", "citation", "url", "folder", "grouping"):
        assert getattr(card, field), f"{name}: {field} empty"
    assert card.download is not None or card.how_to_get, name
    assert card.labels[0] == "background" and card.harmonized
    assert all(0 < i < card.num_classes for idx in card.harmonized.values() for i in idx)


def test_missing_release_folder_says_where(tmp_path):
    (tmp_path / "isic2018").mkdir()
    (tmp_path / "isic2018" / "README.txt").write_text("x")
    with pytest.raises(DataError, match="ISIC2018_Task1-2_Training_Input"):
        discover("isic2018", tmp_path)
