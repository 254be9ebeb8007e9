"""Releases read as downloaded: files written byte by byte the way the releases write them (not by the library
that reads them), official top-level folder names in any case, several data roots, the one mask rule."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segarena._errors import DataError
from segarena.config import RunSpec, apply_overrides
from segarena.data import DATASETS, dataset_root, discover
from segarena.data.check import check_dataset
from segarena.data.io import read_gray, read_image
from segarena.data.masks import parse_mask_values, to_labels


# ---- files written by hand, as the releases write them ----------------------------------------------------------
def write_tiff_rgb_blackiszero(path: Path, rgb: np.ndarray, photometric: int = 1) -> None:
    """An uncompressed little-endian TIFF with 3 samples per pixel tagged PhotometricInterpretation=BlackIsZero
    (1), as CVC-ClinicDB's Original/*.tif frames are (Pillow refuses such files); ``photometric=2`` writes the
    ordinary RGB TIFF of DRIVE's images."""
    h, w, c = rgb.shape
    data = rgb.astype(np.uint8).tobytes()
    n_tags = 10
    ifd_at = 8
    bps_at = ifd_at + 2 + 12 * n_tags + 4
    data_at = bps_at + 6
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 1), (262, 3, 1, photometric),
            (273, 4, 1, data_at), (277, 3, 1, c), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    out = b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<H", n_tags)
    for tag, typ, count, value in tags:
        packed = struct.pack("<HI", value, 0)[:4] if typ == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    out += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8) + data
    path.write_bytes(out)


def write_png16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit greyscale PNG assembled from its chunks (big-endian samples, filter 0 on every row)."""
    h, w = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def write_bmp_1bit(path: Path, mask: np.ndarray) -> None:
    """A 1-bit BMP (black/white palette, bottom-up rows padded to 4 bytes), as PH2's lesion masks."""
    h, w = mask.shape
    row_bytes = ((w + 31) // 32) * 4
    rows = []
    for y in range(h - 1, -1, -1):
        bits = np.packbits(mask[y].astype(bool)).tobytes()
        rows.append(bits + b"\x00" * (row_bytes - len(bits)))
    pixels = b"".join(rows)
    offset = 14 + 40 + 8
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 1, 0, len(pixels), 2835, 2835, 2, 2)
    path.write_bytes(header + info + b"\x00\x00\x00\x00" + b"\xff\xff\xff\x00" + pixels)


def _mask(h: int = 24, w: int = 32) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:14, 6:20] = 1
    return m


def test_rgb_blackiszero_tiff_reads_every_channel(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    f = tmp_path / "1.tif"
    write_tiff_rgb_blackiszero(f, rgb)
    with pytest.raises(OSError):  # the reason a TIFF reader is needed: Pillow cannot open these
        Image.open(f).load()
    np.testing.assert_array_equal(read_image(f, 3), rgb)
    luma = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(read_image(f, 1)[..., 0], luma)


def test_cvc_clinicdb_release_style_tiffs_official_folder_name(tmp_path):
    root = tmp_path / "data"
    cvc = root / "CVC-ClinicDB"  # the official archive's top folder, not the lower-case segarena name
    (cvc / "Original").mkdir(parents=True)
    (cvc / "Ground Truth").mkdir()
    rng = np.random.default_rng(1)
    for n in (1, 2, 26):
        write_tiff_rgb_blackiszero(cvc / "Original" / f"{n}.tif", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        write_tiff_rgb_blackiszero(cvc / "Ground Truth" / f"{n}.tif", np.repeat(_mask()[..., None] * 255, 3, 2))
    card, cases, folder = discover("cvc-clinicdb", str(root))
    assert folder == cvc and [c.id for c in cases] == ["001", "002", "026"]
    ad = DATASETS.get("cvc-clinicdb")
    assert ad.load_image(cases[0], 3).shape == (24, 32, 3)
    np.testing.assert_array_equal(ad.read_mask(cases[0]), _mask())
    rep = check_dataset("cvc-clinicdb", str(root))
    assert rep["ok"] and rep["images_decoded"] == 3 and rep["masks_decoded"] == 3
    assert rep["image_sizes"]["height"]["min"] == 24


def test_check_counts_images_and_masks_separately(tmp_path):
    cvc = tmp_path / "cvc-clinicdb"
    (cvc / "Original").mkdir(parents=True)
    (cvc / "Ground Truth").mkdir()
    for n in (1, 2):
        write_tiff_rgb_blackiszero(cvc / "Ground Truth" / f"{n}.tif", np.repeat(_mask()[..., None] * 255, 3, 2))
    write_tiff_rgb_blackiszero(cvc / "Original" / "1.tif", np.zeros((24, 32, 3), np.uint8))
    (cvc / "Original" / "2.tif").write_bytes(b"II*\x00garbage")
    rep = check_dataset("cvc-clinicdb", str(tmp_path))
    assert (rep["images_decoded"], rep["masks_decoded"], rep["decoded"]) == (1, 2, 2)
    assert not rep["ok"] and rep["problem_counts"] == {"unreadable": 1}


def test_png16_and_bmp1_folder_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = (np.arange(24 * 32).reshape(24, 32) * 4000 // (24 * 32)).astype(np.uint16)  # 12-bit range
    write_png16(tmp_path / "images" / "a.png", img)
    write_bmp_1bit(tmp_path / "masks" / "a.bmp", _mask())
    write_png16(tmp_path / "images" / "b.png", img[::-1])
    write_bmp_1bit(tmp_path / "masks" / "b.bmp", _mask()[::-1])
    card, cases, _ = discover("folder", options={"path": str(tmp_path)})
    ad = DATASETS.get("folder")
    x = ad.load_image(cases[0], 1)[..., 0]
    np.testing.assert_array_equal(x, np.clip(img.astype(float) * 255 / img.max() + 0.5, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(ad.read_mask(cases[0]), _mask())
    np.testing.assert_array_equal(ad.read_mask(cases[1]), _mask()[::-1])


def test_png16_binary_mask(tmp_path):
    write_png16(tmp_path / "m.png", _mask().astype(np.uint16) * 65535)
    np.testing.assert_array_equal(to_labels(read_gray(tmp_path / "m.png"), tmp_path / "m.png", 2), _mask())
    write_png16(tmp_path / "n.png", _mask().astype(np.uint16) * 300 + 7)
    with pytest.raises(DataError, match="do not fit a label map"):
        read_gray(tmp_path / "n.png")


def test_palette_gif_drive_style(tmp_path):
    # DRIVE's manual annotations: 1 bit of information in a GIF whose palette maps index 1 to white
    im = Image.fromarray(_mask(), mode="L").convert("P")
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    f = tmp_path / "21_manual1.gif"
    im.save(f)
    assert np.asarray(Image.open(f)).max() == 1  # stored as palette indices
    assert set(np.unique(read_gray(f))) == {0, 255}  # read as the grey levels the palette shows
    np.testing.assert_array_equal(to_labels(read_gray(f), f, 2), _mask())
    # a colour palette (PASCAL-VOC style label PNG): the indices are the classes
    voc = Image.fromarray(_mask() * 2, mode="L").convert("P")
    voc.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    voc.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(to_labels(read_gray(tmp_path / "voc.png"), "voc.png", 3), _mask() * 2)


def test_ph2_official_folder_with_1bit_bmp_masks(tmp_path):
    base = tmp_path / "PH2Dataset" / "PH2 Dataset images"  # the archive's top folder directly in the data root
    for name in ("IMD002", "IMD003"):
        (base / name / f"{name}_Dermoscopic_Image").mkdir(parents=True)
        (base / name / f"{name}_lesion").mkdir()
        Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(base / name / f"{name}_Dermoscopic_Image"
                                                                 / f"{name}.bmp")
        write_bmp_1bit(base / name / f"{name}_lesion" / f"{name}_lesion.bmp", _mask())
    card, cases, folder = discover("ph2", str(tmp_path))
    assert folder == tmp_path / "PH2Dataset" and len(cases) == 2
    np.testing.assert_array_equal(DATASETS.get("ph2").read_mask(cases[0]), _mask())


def test_drive_official_folder_rgb_tiff_and_gif(tmp_path):
    base = tmp_path / "data" / "DRIVE" / "training"
    for sub in ("images", "1st_manual", "mask"):
        (base / sub).mkdir(parents=True)
    rgb = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    write_tiff_rgb_blackiszero(base / "images" / "21_training.tif", rgb, photometric=2)
    for f, m in ((base / "1st_manual" / "21_manual1.gif", _mask()), (base / "mask" / "21_training_mask.gif",
                                                                        np.ones((24, 32), np.uint8))):
        im = Image.fromarray(m, mode="L").convert("P")
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        im.save(f)
    _, cases, folder = discover("drive", str(tmp_path / "data"))
    assert folder.name == "DRIVE"
    ad = DATASETS.get("drive")
    np.testing.assert_array_equal(ad.load_image(cases[0], 3), rgb)
    np.testing.assert_array_equal(ad.read_mask(cases[0]), _mask())


def test_busi_release_folder_directly_in_a_root(real_data_root, tmp_path):
    (tmp_path / "Dataset_BUSI_with_GT").symlink_to(real_data_root / "busi" / "Dataset_BUSI_with_GT")
    _, cases, folder = discover("busi", str(tmp_path), limit=3)
    assert folder == tmp_path / "Dataset_BUSI_with_GT" and len(cases) == 3
    assert set(np.unique(DATASETS.get("busi").read_mask(cases[0]))) == {0, 1}


def test_cli_check_path_for_a_named_dataset_and_exit_codes(tmp_path, capsys):
    from segarena.cli import main

    cvc = tmp_path / "somewhere" / "my-cvc-copy"
    (cvc / "Original").mkdir(parents=True)
    (cvc / "Ground Truth").mkdir()
    for n in (1, 2):
        write_tiff_rgb_blackiszero(cvc / "Original" / f"{n}.tif", np.zeros((24, 32, 3), np.uint8))
        write_tiff_rgb_blackiszero(cvc / "Ground Truth" / f"{n}.tif", np.repeat(_mask()[..., None] * 255, 3, 2))
    assert main(["datasets", "check", "cvc-clinicdb", "--path", str(cvc), "--root", str(tmp_path / "nowhere")]) == 0
    out = capsys.readouterr().out
    assert str(cvc) in out and "2 image(s) and 2 mask(s) decoded" in out
    (cvc / "Original" / "2.tif").write_bytes(b"II*\x00broken")
    assert main(["datasets", "check", "cvc-clinicdb", "--path", str(cvc), "--json"]) == 1
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is False and rep["images_decoded"] == 1 and rep["masks_decoded"] == 2
    assert main(["datasets", "check", "cvc-clinicdb", "--root", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


def test_nifti_2d_nnunet_layout(tmp_path):
    nib = pytest.importorskip("nibabel")
    base = tmp_path / "Dataset007_Toy"
    (base / "imagesTr").mkdir(parents=True)
    (base / "labelsTr").mkdir()
    (base / "imagesTs").mkdir()
    rng = np.random.default_rng(2)
    imgs = {}
    for cid in ("c1", "c2"):
        arr = rng.integers(0, 1000, (24, 32)).astype(np.int16)  # rows x cols
        imgs[cid] = arr
        # nnU-Net's 2-D NIfTI: x (columns) first, then y, then a singleton z
        nib.save(nib.Nifti1Image(arr.T[..., None], np.eye(4)), base / "imagesTr" / f"{cid}_0000.nii.gz")
        nib.save(nib.Nifti1Image(_mask().T[..., None].astype(np.uint8), np.eye(4)), base / "labelsTr" / f"{cid}.nii.gz")
    nib.save(nib.Nifti1Image(imgs["c1"].T[..., None], np.eye(4)), base / "imagesTs" / "t1_0000.nii.gz")
    (base / "dataset.json").write_text('{"name": "Toy", "channel_names": {"0": "CT"}, "labels": {"background": 0, '
                                       '"organ": 1}, "numTraining": 2, "file_ending": ".nii.gz"}')
    card, cases, _ = discover("nnunet", options={"path": str(base)})
    assert card.name.startswith("Toy@") and card.channels == 1 and card.labels == ("background", "organ")
    ad = DATASETS.get("nnunet")
    x = ad.load_image(cases[0], 1)[..., 0]
    assert x.shape == (24, 32) and np.corrcoef(x.ravel(), imgs["c1"].ravel())[0, 1] > 0.999
    np.testing.assert_array_equal(ad.read_mask(cases[0]), _mask())
    from segarena.data.adapters.folder import find_nnunet_cases

    assert [c.id for c in find_nnunet_cases({"path": str(base)}, "Ts")] == ["t1"]
    rep = check_dataset("nnunet", options={"path": str(base)})
    assert rep["ok"] and rep["unlabelled_images"] == 1 and rep["masks_decoded"] == 2


def test_nnunet_multichannel_files_and_undeclared_channel(tmp_path):
    base = tmp_path / "Dataset008_Multi"
    (base / "imagesTr").mkdir(parents=True)
    (base / "labelsTr").mkdir()
    planes = [np.full((24, 32), v, np.uint8) for v in (10, 20, 30)]
    for k, p in enumerate(planes):
        Image.fromarray(p).save(base / "imagesTr" / f"a_{k:04d}.png")
    Image.fromarray(_mask()).save(base / "labelsTr" / "a.png")
    (base / "dataset.json").write_text('{"channel_names": {"0": "T1", "1": "T2", "2": "FLAIR"}, "labels": '
                                       '{"background": 0, "x": 1}, "numTraining": 1, "file_ending": ".png"}')
    _, cases, _ = discover("nnunet", options={"path": str(base)})
    x = DATASETS.get("nnunet").load_image(cases[0], 3)
    assert [int(x[0, 0, k]) for k in range(3)] == [10, 20, 30]
    Image.fromarray(planes[0]).save(base / "imagesTr" / "a_0003.png")
    with pytest.raises(DataError, match="a_0003.png is channel 3"):
        discover("nnunet", options={"path": str(base)})


# ---- data roots and folder names --------------------------------------------------------------------------------
def test_several_roots_and_official_names(real_data_root, tmp_path, monkeypatch):
    empty, second = tmp_path / "empty", tmp_path / "second"
    empty.mkdir()
    second.mkdir()
    (second / "Kvasir-SEG").symlink_to(real_data_root / "kvasir-seg")
    roots = os.pathsep.join([str(empty), str(second)])
    assert dataset_root("kvasir-seg", roots) == second / "Kvasir-SEG"
    monkeypatch.setenv("SEGARENA_DATA_ROOT", roots)
    assert dataset_root("kvasir-seg") == second / "Kvasir-SEG"
    # unpacked into a folder of its own name: kvasir-seg/Kvasir-SEG/images
    nested = tmp_path / "third" / "kvasir-seg"
    nested.mkdir(parents=True)
    (nested / "Kvasir-SEG").symlink_to(real_data_root / "kvasir-seg")
    assert dataset_root("kvasir-seg", str(tmp_path / "third")) == nested / "Kvasir-SEG"
    # the dataset's own folder (data.root / --path), whatever it is called
    own = tmp_path / "my-polyps"
    own.symlink_to(real_data_root / "kvasir-seg")
    assert dataset_root("kvasir-seg", str(own)) == own
    assert dataset_root("kvasir-seg", str(empty), {"path": str(own)}) == own
    with pytest.raises(DataError, match=r"not found.*empty") as e:
        dataset_root("cvc-clinicdb", str(empty))
    assert "--data-root" in e.value.fix


def test_every_named_dataset_found_under_its_official_top_folder(tmp_path):
    official = {"kvasir-seg": "Kvasir-SEG", "cvc-clinicdb": "CVC-ClinicDB", "busbra": "BUSBRA", "drive": "DRIVE",
                "busi": "Dataset_BUSI_with_GT", "ph2": "PH2Dataset", "camus": "CAMUS_public", "isic2018": "ISIC2018",
                "neopolyp": "bkai-igh-neopolyp", "hc18": "HC18"}
    assert set(official) == {n for n, a in DATASETS.items() if a.card.folder}
    for name, top in official.items():
        for spelling in {top, top.upper(), top.lower()}:
            root = tmp_path / name / spelling
            (root / spelling / "x").mkdir(parents=True)
            assert dataset_root(name, str(root)) == root / spelling, (name, spelling)


def test_missing_dataset_is_never_downloaded_unless_asked(tmp_path, monkeypatch):
    import segarena.data as data_mod

    monkeypatch.delenv("SEGARENA_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SEGARENA_DOWNLOAD", raising=False)
    calls = []
    monkeypatch.setattr(data_mod, "download_dataset", lambda card, root: calls.append(card.name) or root)
    with pytest.raises(DataError, match="not found"):
        dataset_root("kvasir-seg", str(tmp_path))
    assert calls == []
    monkeypatch.setenv("SEGARENA_DOWNLOAD", "1")
    dataset_root("kvasir-seg", str(tmp_path))
    assert calls == ["kvasir-seg"]


# ---- options and identity ---------------------------------------------------------------------------------------
def _folder(root: Path, n: int, value: int = 255, size=(24, 32)) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((*size, 3), 10 * i, np.uint8)).save(root / "images" / f"c{i}.png")
        Image.fromarray(_mask(*size) * value).save(root / "masks" / f"c{i}.png")
    return root


def test_unknown_option_rejected_with_choices(tmp_path):
    d = _folder(tmp_path / "d", 2)
    with pytest.raises(DataError, match="lables.*did you mean 'labels'") as e:
        discover("folder", options={"path": str(d), "lables": ["background", "x"]})
    assert "mask_values" in e.value.fix
    with pytest.raises(DataError, match="unknown option data.options.labels"):
        discover("kvasir-seg", options={"labels": ["a", "b"]})


def test_readme_mask_values_example_as_written(tmp_path):
    d = _folder(tmp_path / "d", 2)
    spec = apply_overrides(RunSpec(), ["data.name=folder", f"data.options.path={d}",
                                       "data.options.mask_values={255: 1}"])
    assert spec.data.options["mask_values"] == {255: 1}
    _, cases, _ = discover("folder", options=spec.data.options)
    np.testing.assert_array_equal(DATASETS.get("folder").read_mask(cases[0]), _mask())
    assert parse_mask_values("0:0,255:1") == {0: 0, 255: 1} == parse_mask_values({"0": 0, "255": 1})


def test_two_user_folders_are_two_datasets(tmp_path):
    a, b = _folder(tmp_path / "a" / "data", 3), _folder(tmp_path / "b" / "data", 4)
    ca = discover("folder", options={"path": str(a)})[0]
    cb = discover("folder", options={"path": str(b)})[0]
    assert ca.name != cb.name and ca.name.startswith("data@") and cb.name.startswith("data@")
    assert discover("folder", options={"path": str(a), "name": "busi"})[0].name.startswith("busi@")
    assert discover("folder", options={"path": str(a)})[0].name == ca.name  # stable


def test_empty_masks_reported(tmp_path):
    d = _folder(tmp_path / "d", 3)
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(d / "masks" / "c1.png")
    rep = check_dataset("folder", options={"path": str(d)})
    assert rep["empty_masks"] == 1 and rep["empty_mask_files"] == [str(d / "masks" / "c1.png")] and rep["ok"]
    for i in (0, 2):
        Image.fromarray(np.zeros((24, 32), np.uint8)).save(d / "masks" / f"c{i}.png")
    rep = check_dataset("folder", options={"path": str(d)})
    assert not rep["ok"] and rep["problem_counts"] == {"empty_mask": 1}


# ---- the mask rule and evaluate ----------------------------------------------------------------------------------
def test_mask_rule():
    m = _mask()
    np.testing.assert_array_equal(to_labels(m, "a.png", 2), m)
    np.testing.assert_array_equal(to_labels(m * 255, "a.png", 2), m)
    np.testing.assert_array_equal(to_labels(m * 255, "a.png"), m)
    noisy = (m * 250 + 3).astype(np.uint8)
    np.testing.assert_array_equal(to_labels(noisy, "a.jpg", 2), m)  # JPEG noise near 0 and 255
    with pytest.raises(DataError, match="unexpected mask values"):
        to_labels(noisy, "a.png", 2)  # a lossless file with several grey levels is never guessed
    with pytest.raises(DataError, match="unexpected mask values"):
        to_labels(m * 3, "a.png", 2)
    np.testing.assert_array_equal(to_labels(m * 3, "a.png", 2, {3: 1}), m)
    np.testing.assert_array_equal(to_labels(noisy, "a.png", 2, "binary"), m)
    np.testing.assert_array_equal(to_labels(m, "a.png", 2, "binary"), m)  # a 0/1 copy stays 0/1


def test_evaluate_01_predictions_against_0255_and_real_kvasir_jpeg(real_data_root, tmp_path):
    from segarena.cli import main
    from segarena.evaluate import evaluate_folders

    refs = sorted((real_data_root / "kvasir-seg" / "masks").glob("*.jpg"))[:4]
    pred, png = tmp_path / "pred", tmp_path / "png"
    pred.mkdir()
    png.mkdir()
    for f in refs:
        rgb = np.asarray(Image.open(f))  # decode independently: channel max, threshold at 128
        fg = (rgb.max(axis=2) > 127).astype(np.uint8)
        eroded = fg.copy()
        eroded[:, : fg.shape[1] // 2] = 0  # a prediction missing the left half: Dice known by hand
        Image.fromarray(eroded).save(pred / f"{f.stem}.png")
        Image.fromarray(fg * 255).save(png / f"{f.stem}.png")
    tp = sum(int(np.asarray(Image.open(pred / f"{f.stem}.png")).sum()) for f in refs)
    total_ref = sum(int((np.asarray(Image.open(f)).max(axis=2) > 127).sum()) for f in refs)
    expect = 2 * tp / (tp + total_ref)
    for ref_dir in (png, refs[0].parent):
        if ref_dir == refs[0].parent:
            ref_dir = tmp_path / "jpg"
            ref_dir.mkdir()
            for f in refs:
                (ref_dir / f.name).symlink_to(f)
        _, summary = evaluate_folders(pred, ref_dir)
        assert summary["labels"] == ["background", "class 1"]
        assert summary["metrics"]["mdsc"] == pytest.approx(expect, abs=1e-9)
    assert main(["evaluate", "--pred", str(pred), "--ref", str(png), "--mask-values", "0:0,1:1,255:1"]) == 0


def test_nnunet_names_match_in_evaluate_and_predict(tmp_path):
    from segarena.evaluate import evaluate_folders
    from segarena.inference import list_inputs, output_stem

    assert output_stem(Path("case_0000.png")) == "case" and output_stem(Path("case_12.png")) == "case_12"
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    Image.fromarray(_mask()).save(tmp_path / "pred" / "a_0000.png")
    Image.fromarray(_mask() * 255).save(tmp_path / "ref" / "a.png")
    _, summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    assert summary["cases"] == 1 and summary["metrics"]["mdsc"] == 1.0
    Image.fromarray(_mask()).save(tmp_path / "pred" / "a_0001.png")
    from segarena._errors import SegarenaError

    with pytest.raises(SegarenaError, match="nnU-Net channel files"):
        list_inputs(tmp_path / "pred")
