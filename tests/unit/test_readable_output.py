"""Printed output a person reads: aligned tables, every measure with its unit and better direction, no markup."""
from __future__ import annotations

import pandas as pd

import segarena.xai as xai
from segarena.cli import main
from segarena.data.check import format_report


def _columns_start(lines: list[str], header: list[str]) -> list[int]:
    return [lines[0].index(h) for h in header]


def test_datasets_list_columns_are_aligned(capsys):
    assert main(["datasets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = _columns_start(lines, ["name", "modality", "classes", "license"])
    assert starts[0] == 0 and starts == sorted(starts)
    for line in lines[1:]:
        for a, b in zip(starts[1:], starts[2:] + [None]):  # every column starts after two spaces, at its header
            assert line[a - 2:a] == "  " and line[a] != " ", line
    assert any(line.startswith("camus ") for line in lines)  # the long modality no longer runs into the next column


def test_models_list_columns_are_aligned(capsys):
    assert main(["models", "list", "--family", "test"]) == 0
    lines = capsys.readouterr().out.split("\n\n")[0].splitlines()  # the table, before the "also by name" note
    title = lines[0].index("title")
    assert {line[title - 2:title] for line in lines} == {"  "}
    assert any(line.startswith("tiny-unet ") for line in lines)


def test_explain_says_units_and_better_direction(monkeypatch, tmp_path, capsys):
    df = pd.DataFrame({"model": "unet", "method": "gradcam", "class_name": "polyp", "case_id": ["a", "b", "c"],
                       "energy_share": [0.5, 0.6, 0.7], "deletion_auc": [0.2, 0.3, 0.4],
                       "deletion_auc_random": [0.5, 0.5, 0.5]})
    monkeypatch.setattr(xai, "explain", lambda *a, **k: df)
    assert main(["explain", str(tmp_path), "--out", str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    assert "energy share 0.600" in out and "higher is better" in out
    assert "deletion AUC 0.300" in out and "lower is better" in out
    assert "fraction" in out and "probability" in out


def test_check_report_has_no_docstring_markup():
    report = {"dataset": "hc18", "title": "HC18", "root": "/x", "pairs": 1, "decoded": 1,
              "images_decoded": 1, "masks_decoded": 1, "empty_masks": 0, "empty_mask_files": [],
              "classes": [{"name": "background", "share": 1.0, "cases": 1}],
              "image_sizes": {"height": {"min": 1, "median": 1, "max": 1},
                              "width": {"min": 1, "median": 1, "max": 1}, "distinct": 1},
              "grouping": {"by": "pregnancy (``NNN_2HC`` is a repeat of :class:`~x.NNN`)", "groups": 1,
                           "cases_per_group": {"min": 1, "max": 1, "median": 1}},
              "duplicates": [], "problems": [], "problem_counts": {}}
    text = format_report(report)
    assert "``" not in text and ":class:" not in text
    assert "pregnancy (NNN_2HC is a repeat of x.NNN)" in text


def test_evaluate_prints_units_and_direction(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    for sub in ("pred", "ref"):
        (tmp_path / sub).mkdir()
    m = np.zeros((20, 20), np.uint8)
    m[5:15, 5:15] = 1
    Image.fromarray(m).save(tmp_path / "ref" / "a.png")
    Image.fromarray(np.roll(m, 2, axis=1)).save(tmp_path / "pred" / "a.png")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "higher is better" in lines["mdsc"] and "lower is better" in lines["hd95_mean"]
    assert "(px," in lines["hd95_mean"]
