"""`segarena evaluate`: external predictions scored with the same metrics, per case and aggregated."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segarena import DataError
from segarena.cli import main
from segarena.evaluate import evaluate_folders


def _write(folder, name, arr):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(folder / name)


def test_evaluate_known_answer(tmp_path):
    ref = np.zeros((20, 20), np.uint8)
    ref[5:15, 5:15] = 255
    pred = np.zeros((20, 20), np.uint8)
    pred[5:15, 5:10] = 255  # half the lesion found
    _write(tmp_path / "ref", "a.png", ref)
    _write(tmp_path / "pred", "a.png", pred)
    _write(tmp_path / "ref", "b.png", ref)
    _write(tmp_path / "pred", "b.png", ref)  # perfect
    df, summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref", labels=["background", "lesion"],
                                   spacing=(0.5, 0.5))
    a = df.set_index("case_id").loc["a"]
    assert a["dice"] == pytest.approx(2 * 50 / (50 + 100))
    # by hand: 10 of the square's 36 boundary pixels (its right column, x = 14) lie 5 px from the prediction's
    # nearest boundary pixel (x = 9); that is over 5% of them, so the 95th percentile (and the maximum) is
    # 5 px x 0.5 mm (MONAI's compute_hausdorff_distance(percentile=95) gives 2.5 too)
    assert a["hd95"] == pytest.approx(5 * 0.5) and a["hd"] == pytest.approx(5 * 0.5)
    assert summary["metrics"]["mdsc"] == pytest.approx(2 * 150 / (150 + 200))
    assert df.set_index("case_id").loc["b", "hd"] == 0.0


def test_evaluate_cli_json_and_errors(tmp_path, capsys):
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 1
    _write(tmp_path / "ref", "x.png", m)
    _write(tmp_path / "pred", "x.png", m)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["metrics"]["mdsc"] == 1.0 and len(out["cases"]) == 1
    _write(tmp_path / "ref", "y.png", m)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]) == 2
    assert "without prediction" in capsys.readouterr().err
    _write(tmp_path / "p2", "x.png", np.zeros((4, 4)))
    _write(tmp_path / "r2", "x.png", m)
    with pytest.raises(DataError, match="differs from the reference"):
        evaluate_folders(tmp_path / "p2", tmp_path / "r2")
