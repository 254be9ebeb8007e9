"""The Grad-CAM energy share written by ``explain`` reaches the report (it once read a column nobody wrote)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_energy_share_reaches_report(real_data_root, tmp_path):
    from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
    from segarena.protocol import run
    from segarena.report import build_report
    from segarena.xai import explain

    spec = RunSpec(data=DataConfig(name="kvasir-seg", root=str(real_data_root), limit=30),
                   model=ModelConfig(name="tiny-unet"),
                   protocol=ProtocolConfig(input_size=32, epochs=2, batch_size=4, augmentation="none", amp=False,
                                           lr=1e-2, patience=None))
    d = run(spec, tmp_path).store.dir
    explain(d, cases="worst:4", method="gradcam", steps=4)
    paths = build_report(tmp_path)
    rep = json.loads(paths["json"].read_text())
    measures = pd.read_parquet(d / "xai" / "measures.parquet")
    want = measures["energy_share"].dropna().to_numpy()
    rows = [r for r in rep["xai"] if r["measure"] == "energy_share"]
    assert len(rows) == 1 and rows[0]["method"] == "gradcam"
    assert rows[0]["estimate"] == pytest.approx(float(np.mean(want))) and rows[0]["n_cases"] == want.size
    cell = f"{rows[0]['estimate']:.3f} [{rows[0]['ci'][0]:.3f}, {rows[0]['ci'][1]:.3f}]"
    assert cell in paths["markdown"].read_text() and cell in paths["html"].read_text()
