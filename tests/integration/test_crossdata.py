"""Cross-dataset generalization: a model trained on real Kvasir-SEG images, evaluated on a CVC-ClinicDB tree in
its official layout (generated), with harmonized labels, the train x test matrix and gaps with CIs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena.cli import main
from segarena.protocol import run
from segarena.runner.crossdata import compatible, generalization_gaps, matrix, ood_ranking


def test_compatibility_from_cards():
    assert set(compatible("kvasir-seg")["polyp"]) >= {"cvc-clinicdb", "neopolyp"}
    assert "ph2" in compatible("isic2018")["skin lesion"]
    assert compatible("busi") == {"breast lesion": ["busbra"]}


def test_gaps_known_answer():
    """In-domain perfect, out-of-domain half the pixels missed: gap = 1 - 2/3."""
    rows = []
    for i in range(20):
        rows.append(dict(model="m", train="a", test="a", fold=0, seed=0, case_id=f"a{i}", tp=10, fp=0, fn=0))
        rows.append(dict(model="m", train="a", test="b", fold=0, seed=0, case_id=f"b{i}", tp=5, fp=0, fn=5))
    gaps = generalization_gaps(pd.DataFrame(rows))
    r = gaps.iloc[0]
    assert r["in_domain"] == 1.0 and r["out_of_domain"] == pytest.approx(2 / 3)
    assert r["gap"] == pytest.approx(1 / 3) and r["gap_ci_low"] == pytest.approx(1 / 3)  # no variance: CI collapses
    assert list(ood_ranking(gaps)["ood_rank"]) == [1]
    m = matrix(pd.DataFrame(rows))
    assert set(zip(m["train"], m["test"])) == {("a", "a"), ("a", "b")}


@pytest.mark.realdata
def test_kvasir_to_cvc_clinicdb(real_data_root, tmp_path, capsys):
    # a CVC-ClinicDB release in its official layout, next to a copy of the data root
    root = tmp_path / "data"
    cvc = root / "cvc-clinicdb" / "CVC-ClinicDB"
    (cvc / "Original").mkdir(parents=True)
    (cvc / "Ground Truth").mkdir()
    rng = np.random.default_rng(0)
    for n in range(1, 13):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(cvc / "Original" / f"{n}.tif")
        m = np.zeros((48, 64), np.uint8)
        m[10:30, 20:40] = 255
        Image.fromarray(m).save(cvc / "Ground Truth" / f"{n}.tif")
    (root / "kvasir-seg").symlink_to(real_data_root / "kvasir-seg")
    spec = RunSpec(data=DataConfig(name="kvasir-seg", root=str(root), limit=30), model=ModelConfig(name="tiny-unet"),
                   protocol=ProtocolConfig(input_size=32, epochs=1, batch_size=4, max_steps_per_epoch=2, amp=False))
    run(spec, tmp_path / "r")
    assert main(["crossval", str(tmp_path / "r"), "--data-root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "kvasir-seg -> cvc-clinicdb" in printed and "ranking by out-of-domain" in printed
    rec = pd.read_parquet(tmp_path / "r" / "crossdata.parquet")
    assert set(rec["test"]) == {"kvasir-seg", "cvc-clinicdb"}
    assert rec[rec["test"] == "cvc-clinicdb"]["case_id"].nunique() == 12
    assert (rec["class_name"] == "polyp").all()
    run_dir = next((tmp_path / "r" / "runs").iterdir())
    assert (run_dir / "cross" / "cvc-clinicdb__polyp.parquet").is_file()
