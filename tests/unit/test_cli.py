"""The CLI: list commands with --json, and bad input -> one line, exit code 2, no traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from segarena.cli import main


def test_models_and_datasets_list_json(capsys):
    assert main(["models", "list", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert {"unet", "segformer-b3", "tiny-unet"} <= {m["name"] for m in models}
    assert main(["datasets", "list", "--json"]) == 0
    assert {"kvasir-seg", "busi", "hc18", "folder", "nnunet"} <= {d["name"] for d in json.loads(capsys.readouterr().out)}


def test_models_info_json(capsys):
    assert main(["models", "info", "tiny-unet", "--size", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] > 0 and info["flops"] > 0 and info["macs"] == info["flops"] // 2


@pytest.mark.parametrize("argv,match", [
    (["run", "--model", "unett", "--dataset", "kvasir-seg"], "unknown model 'unett': did you mean unet"),
    (["run", "--dataset", "kvasir"], "unknown dataset 'kvasir'"),
    (["run", "--set", "protocol.lrr=1"], "did you mean 'protocol.lr'"),
    (["run", "--preset", "nope"], "unknown protocol preset"),
    (["models", "info", "segformer-b9"], "unknown model"),
    (["compare", "--models", "unet", "--datasets", "kvasir-seg", "--folds", "a"], "comma-separated integers"),
    (["report", "/nonexistent/results"], "not a segarena results folder"),
])
def test_bad_input_one_line_exit_2(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


def test_results_folder_that_is_not_one(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious")
    assert main(["run", "--model", "tiny-unet", "--results", str(tmp_path)]) == 2
    assert "not a segarena results folder" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "segarena", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "segarena" in out.stdout
