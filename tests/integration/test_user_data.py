"""User data end to end: two folders stay two datasets; crossval with partners under different roots and a user
partner; the nnU-Net round trip (export -> read back -> same split -> predictions that evaluate matches)."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena._errors import SegarenaError
from segarena.cli import main
from segarena.protocol import run

TINY = ProtocolConfig(input_size=32, epochs=1, batch_size=4, max_steps_per_epoch=2, amp=False)


def _user_folder(root, n, seed, label="foreground"):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "images" / f"c{i:02d}.png")
        m = np.zeros((40, 48), np.uint8)
        m[8:8 + 2 * i % 20 + 4, 10:30] = 255
        Image.fromarray(m).save(root / "masks" / f"c{i:02d}.png")
    return root


def test_user_datasets_as_crossval_partners_declared_or_named(tmp_path):
    from segarena.runner.crossdata import parse_partner, partners_for

    mine = _user_folder(tmp_path / "mine", 3, 0)
    by_label = parse_partner(f"folder={mine},labels=[background, polyp]")
    declared = parse_partner(f"nnunet={tmp_path},harmonized={{polyp: [1]}}")
    assert by_label.options == {"path": str(mine), "labels": ["background", "polyp"]}
    assert declared.options["harmonized"] == {"polyp": [1]}
    groups = partners_for("kvasir-seg", [by_label])
    assert any(p.name == "folder" for p in groups["polyp"]) and any(p.name == "cvc-clinicdb" for p in groups["polyp"])
    plain = partners_for("kvasir-seg", [parse_partner(f"folder={mine}")])  # "foreground": no group, not a partner
    assert all(p.name != "folder" for p in plain["polyp"])
    # a run trained on a user dataset that declares its group is tested on the named datasets of that group
    trained = partners_for("folder", None, {"path": str(mine), "harmonized": {"polyp": [1]}})
    assert {p.name for p in trained["polyp"]} >= {"kvasir-seg", "cvc-clinicdb"}
    with pytest.raises(Exception, match="did you mean 'labels'"):
        parse_partner(f"folder={mine},lables=[background, polyp]")


@pytest.mark.slow
def test_two_user_folders_two_datasets_in_the_leaderboard(tmp_path, capsys):
    a = _user_folder(tmp_path / "busi-like" / "data", 10, 0)
    b = _user_folder(tmp_path / "hc18-like" / "data", 10, 1)
    for d in (a, b):
        spec = RunSpec(data=DataConfig(name="folder", options={"path": str(d)}), model=ModelConfig(name="tiny-fcn"),
                       protocol=TINY)
        run(spec, tmp_path / "r")
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*/summary.json")]
    names = {s["dataset"] for s in summaries}
    assert len(names) == 2 and all(n.startswith("data@") for n in names)
    assert main(["report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in names)
    # the same folder with other content is another dataset: its finished run is not silently reused
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(a / "masks" / "c03.png")
    spec = RunSpec(data=DataConfig(name="folder", options={"path": str(a)}), model=ModelConfig(name="tiny-fcn"),
                   protocol=TINY)
    with pytest.raises(SegarenaError, match="now holds data@"):
        run(spec, tmp_path / "r")


@pytest.mark.slow
@pytest.mark.realdata
def test_crossval_partners_under_different_roots_and_a_user_partner(real_data_root, tmp_path, capsys, monkeypatch):
    import segarena.data as data_mod
    from tests.unit.test_data_release import _mask, write_tiff_rgb_blackiszero

    downloads = []  # a missing partner (neopolyp here) must be skipped, never downloaded, even with downloads on
    monkeypatch.setattr(data_mod, "download_dataset", lambda card, root: downloads.append(card.name))
    monkeypatch.setenv("SEGARENA_DOWNLOAD", "1")
    monkeypatch.delenv("SEGARENA_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    kv_root, cvc_root = tmp_path / "rootA", tmp_path / "rootB"
    kv_root.mkdir()
    (kv_root / "Kvasir-SEG").symlink_to(real_data_root / "kvasir-seg")
    cvc = cvc_root / "CVC-ClinicDB"
    (cvc / "Original").mkdir(parents=True)
    (cvc / "Ground Truth").mkdir()
    rng = np.random.default_rng(0)
    for n in range(1, 9):
        write_tiff_rgb_blackiszero(cvc / "Original" / f"{n}.tif", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        write_tiff_rgb_blackiszero(cvc / "Ground Truth" / f"{n}.tif", np.repeat(_mask()[..., None] * 255, 3, 2))
    mine = _user_folder(tmp_path / "mine", 6, 2)
    spec = RunSpec(data=DataConfig(name="kvasir-seg", limit=25), model=ModelConfig(name="tiny-unet"), protocol=TINY)
    monkeypatch.delenv("SEGARENA_DOWNLOAD")
    run(spec, tmp_path / "r", data_root=str(kv_root))
    monkeypatch.setenv("SEGARENA_DOWNLOAD", "1")
    roots = os.pathsep.join([str(kv_root), str(cvc_root)])
    rc = main(["crossval", str(tmp_path / "r"), "--data-root", roots, "--limit", "8",
               "--partner", f"folder={mine},name=mine,labels=[background, polyp]"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert downloads == [] and "-> neopolyp" in out and "not found" in out
    rec = pd.read_parquet(tmp_path / "r" / "crossdata.parquet")
    tests = set(rec["test"])
    assert {"kvasir-seg", "cvc-clinicdb"} <= tests and any(t.startswith("mine@") for t in tests)
    assert rec[rec["test"] == "cvc-clinicdb"]["case_id"].nunique() == 8
    assert rec[rec["test"].str.startswith("mine@")]["case_id"].nunique() == 6


@pytest.mark.slow
@pytest.mark.realdata
def test_nnunet_round_trip(real_data_root, tmp_path, capsys):
    from segarena.data import discover
    from segarena.data.splits import load_or_create, split_digest  # noqa: F401

    assert main(["datasets", "export-nnunet", "kvasir-seg", "--out", str(tmp_path / "raw"), "--id", "501",
                 "--limit", "15", "--data-root", str(real_data_root)]) == 0
    base = tmp_path / "raw" / "Dataset501_KvasirSeg"
    info = json.loads((base / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "polyp": 1} and info["numTraining"] == 15
    assert info["channel_names"] == {"0": "R", "1": "G", "2": "B"} and info["file_ending"] == ".png"
    splits = json.loads((base / "splits_final.json").read_text())
    assert len(splits) == 5 and sorted(sum((f["val"] for f in splits), [])) == sorted(
        p.name[:-4] for p in (base / "labelsTr").iterdir())
    # read back: the same cases, the same pixels, and splits_final.json as segarena's split
    card, cases, _ = discover("nnunet", options={"path": str(base)})
    _, orig, _ = discover("kvasir-seg", str(real_data_root), limit=15)
    assert [c.id for c in cases] == [c.id for c in orig]
    from segarena.data import DATASETS

    np.testing.assert_array_equal(DATASETS.get("nnunet").read_mask(cases[3]),
                                  DATASETS.get("kvasir-seg").read_mask(orig[3]))
    np.testing.assert_array_equal(DATASETS.get("nnunet").load_image(cases[3], 3),
                                  DATASETS.get("kvasir-seg").load_image(orig[3], 3))
    spec = RunSpec(data=DataConfig(name="nnunet", options={"path": str(base)}, fold=1),
                   model=ModelConfig(name="tiny-fcn"), protocol=TINY)
    res = run(spec, tmp_path / "r")
    used = json.loads((res.store.dir / "split.json").read_text())
    assert sorted(used["test"]) == sorted(splits[1]["val"])  # nnU-Net fold r val == segarena test of fold r
    # predictions on imagesTr are named like labelsTr, so evaluate matches them
    assert main(["predict", str(res.store.dir), "--input", str(base / "imagesTr"), "--output",
                 str(tmp_path / "pred")]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == sorted(
        p.name for p in (base / "labelsTr").iterdir())
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(base / "labelsTr"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["cases"] == 15
    # a 2-D NIfTI case (nnU-Net's .nii.gz layout) predicts to case.png at the image's size
    nib = pytest.importorskip("nibabel")
    grey = np.asarray(Image.open(base / "imagesTr" / f"{cases[0].id}_0000.png").convert("L"))
    (tmp_path / "nii").mkdir()
    nib.save(nib.Nifti1Image(grey.T[..., None], np.eye(4)), tmp_path / "nii" / "scan_0000.nii.gz")
    assert main(["predict", str(res.store.dir), "--input", str(tmp_path / "nii"), "--output",
                 str(tmp_path / "nii_pred")]) == 0
    assert np.asarray(Image.open(tmp_path / "nii_pred" / "scan.png")).shape == grey.shape
