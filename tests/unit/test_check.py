"""``check_dataset`` on generated releases: a clean one (numbers exact) and one with seeded problems, every one of
which must be reported with its file name instead of stopping at the first."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segarena._errors import DataError
from segarena.data.check import Problem, Scan, check_dataset, format_report, pair_files

TRAIN_IMG = "ISIC2018_Task1-2_Training_Input"
TRAIN_GT = "ISIC2018_Task1_Training_GroundTruth"


def _save(arr: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _image(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h: int = 12, w: int = 16, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[2:6, 3:9] = value
    return m


def _broken_isic(root: Path) -> Path:
    base = root / "isic2018"
    img, gt = base / TRAIN_IMG, base / TRAIN_GT
    for n in (0, 1, 2, 3, 4):
        _save(_image(n), img / f"ISIC_000000{n}.jpg", quality=95)
    _save(_mask(), gt / "ISIC_0000000_segmentation.png")
    _save(_mask(), gt / "ISIC_0000001_segmentation.png")
    _save(_mask(10, 10), gt / "ISIC_0000002_segmentation.png")  # size mismatch
    _save(_mask(value=128), gt / "ISIC_0000003_segmentation.png")  # unexpected value
    _save(_mask(), gt / "ISIC_0000004_segmentation.png")
    (img / "ISIC_0000004.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # corrupt image
    shutil.copy(img / "ISIC_0000000.jpg", img / "ISIC_0000005.jpg")  # exact duplicate of case 0
    _save(_mask(), gt / "ISIC_0000005_segmentation.png")
    _save(_image(9), img / "ISIC_0000009.jpg")  # orphan image
    _save(_mask(), gt / "ISIC_0000011_segmentation.png")  # orphan mask
    (img / "LICENSE.txt").write_text("CC BY-NC 4.0")  # not a case
    vimg, vgt = base / "ISIC2018_Task1-2_Validation_Input", base / "ISIC2018_Task1_Validation_GroundTruth"
    _save(_image(20), vimg / "ISIC_0012255.jpg")
    png = _save(_mask(), vgt / "ISIC_0012255_segmentation.png")
    png.write_bytes(png.read_bytes()[:40])  # truncated mask
    return base


def test_check_reports_every_seeded_problem(tmp_path):
    base = _broken_isic(tmp_path)
    report = check_dataset("isic2018", tmp_path)
    json.dumps(report)  # the CLI prints it with --json
    assert report["ok"] is False
    assert report["pairs"] == 7  # 0..5 in training, 12255 in validation
    found = {(p["kind"], Path(p["file"]).name) for p in report["problems"]}
    assert found == {
        ("orphan_image", "ISIC_0000009.jpg"),
        ("orphan_mask", "ISIC_0000011_segmentation.png"),
        ("size_mismatch", "ISIC_0000002_segmentation.png"),
        ("unexpected_values", "ISIC_0000003_segmentation.png"),
        ("unreadable", "ISIC_0000004.jpg"),
        ("unreadable", "ISIC_0012255_segmentation.png"),
    }
    assert report["problem_counts"] == {"orphan_image": 1, "orphan_mask": 1, "size_mismatch": 1,
                                        "unexpected_values": 1, "unreadable": 2}
    mismatch = next(p for p in report["problems"] if p["kind"] == "size_mismatch")
    assert "10x10" in mismatch["detail"] and "12x16" in mismatch["detail"]
    assert report["duplicates"] == [[str(base / TRAIN_IMG / "ISIC_0000000.jpg"),
                                     str(base / TRAIN_IMG / "ISIC_0000005.jpg")]]
    # class statistics come from every mask that decoded: good cases 0, 1, 5 and case 4 (only its image is bad)
    assert report["classes"][1]["cases"] == 4 and report["classes"][1]["pixels"] == 4 * 24
    text = format_report(report)
    assert "pairs: 7" in text and "problems: 6" in text and text.count("\n    unreadable: ") == 2
    assert "ISIC_0000009.jpg" in text and "ISIC_0000005.jpg" in text
    # the adapter itself still refuses the release, naming the first problem
    with pytest.raises(DataError, match="orphan"):
        from segarena.data import discover

        discover("isic2018", tmp_path)


def test_check_clean_release_numbers(tmp_path):
    base = tmp_path / "cvc-clinicdb"
    for n in (1, 2, 3, 26, 27, 612):
        _save(_image(n), base / "Original" / f"{n}.tif")
        _save(_mask(), base / "Ground Truth" / f"{n}.tif")
    _save(_image(50, 20, 30), base / "Original" / "100.tif")
    _save(np.zeros((20, 30), np.uint8), base / "Ground Truth" / "100.tif")
    report = check_dataset("cvc-clinicdb", tmp_path)
    assert report["ok"] and report["problems"] == [] and report["pairs"] == 7 and report["decoded"] == 7
    fg = report["classes"][1]
    total = 6 * 12 * 16 + 20 * 30
    assert fg["pixels"] == 6 * 24 and fg["share"] == pytest.approx(6 * 24 / total) and fg["cases"] == 6
    assert report["classes"][0]["pixels"] == total - 6 * 24 and report["classes"][0]["cases"] == 7
    assert report["image_sizes"]["height"] == {"min": 12, "median": 12, "max": 20}
    assert report["image_sizes"]["width"]["max"] == 30 and report["image_sizes"]["distinct"] == 2
    grouping = report["grouping"]
    assert grouping["groups"] == 4  # seq01 (1,2,3), seq02 (26,27), seq05 (100), seq29 (612)
    assert grouping["cases_per_group"] == {"min": 1, "median": 1.5, "max": 3}
    assert grouping["histogram"] == {"1": 2, "2": 1, "3": 1}
    assert report["duplicates"] == []
    assert "problems: none" in format_report(report) and "4 group(s)" in format_report(report)


def test_check_corrupt_nifti_is_unreadable(tmp_path):
    nib = pytest.importorskip("nibabel")
    pdir = tmp_path / "camus" / "database_nifti" / "patient0001"
    pdir.mkdir(parents=True)
    for view in ("2CH", "4CH"):
        for phase in ("ED", "ES"):
            for suffix in ("", "_gt"):
                if suffix:  # label map: a 2x2 LV cavity
                    arr = np.zeros((40, 32, 1), np.uint8)
                    arr[2:4, 2:4] = 1
                else:  # noise (incompressible), so truncating the file cuts pixels, not the header
                    arr = np.random.default_rng(0).integers(0, 256, (40, 32, 1), dtype=np.uint8)
                img = nib.Nifti1Image(arr, np.diag([0.3, 0.15, 1.0, 1.0]))
                img.to_filename(str(pdir / f"patient0001_{view}_{phase}{suffix}.nii.gz"))
    bad = pdir / "patient0001_4CH_ES.nii.gz"
    bad.write_bytes(bad.read_bytes()[:-30])  # truncated gzip stream: header fine, pixels not
    report = check_dataset("camus", tmp_path)
    assert report["pairs"] == 4
    assert [(p["kind"], Path(p["file"]).name) for p in report["problems"]] == [("unreadable", bad.name)]
    assert report["grouping"]["groups"] == 1 and report["classes"][1]["pixels"] == 4 * 4  # all four label maps decode


def test_check_falls_back_for_adapters_without_scan(tmp_path):
    base = tmp_path / "kvasir-seg"
    _save(_image(0), base / "images" / "a.jpg")
    _save(_mask(), base / "masks" / "a.jpg")
    _save(_image(1), base / "images" / "b.jpg")  # orphan: kvasir raises on it
    report = check_dataset("kvasir-seg", tmp_path)
    assert report["pairs"] == 0 and [p["kind"] for p in report["problems"]] == ["layout"]
    assert "b.jpg" in report["problems"][0]["detail"]


def test_check_user_folder_dataset(tmp_path):
    _save(_image(0), tmp_path / "mine" / "images" / "x.png")
    _save(_mask(value=1), tmp_path / "mine" / "masks" / "x.png")
    report = check_dataset("folder", options={"path": str(tmp_path / "mine")})
    assert report["ok"] and report["pairs"] == 1 and report["classes"][1]["pixels"] == 24


def test_check_missing_dataset_raises(tmp_path):
    with pytest.raises(DataError, match="not found"):
        check_dataset("ph2", tmp_path)


def test_scan_helpers():
    imgs = {"a": Path("i/a.png"), "b": Path("i/b.png")}
    msks = {"a": Path("m/a.png"), "c": Path("m/c.png")}
    pairs, problems = pair_files(imgs, msks)
    assert pairs == [("a", Path("i/a.png"), Path("m/a.png"))]
    assert [(p.kind, p.file) for p in problems] == [("orphan_image", "i/b.png"), ("orphan_mask", "m/c.png")]
    _, problems = pair_files(imgs, msks, image_needs_mask=False)
    assert [p.kind for p in problems] == ["orphan_mask"]
    with pytest.raises(DataError, match=r"orphan image: i/b.png.*1 more"):
        Scan(problems=[Problem("orphan_image", "i/b.png"), Problem("orphan_mask", "m/c.png")]).cases_or_raise("x")
    with pytest.raises(DataError, match="no cases"):
        Scan().cases_or_raise("x")
