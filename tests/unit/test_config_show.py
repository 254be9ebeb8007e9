"""`segarena config show`: the resolved spec of a run as YAML with its run id, before anything runs."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from segarena.cli import main
from segarena.config import RunSpec, apply_overrides, spec_from_dict
from segarena.configs import load_protocol


def _show(argv: list[str], capsys) -> str:
    assert main(["config", "show", *argv]) == 0
    return capsys.readouterr().out


def test_config_show_round_trips(tmp_path, capsys):
    out = _show(["--model", "tiny-unet", "--dataset", "busi", "--fold", "2", "--preset", "smoke",
                 "--set", "protocol.lr=3e-4", "--set", "data.options.foo=1"], capsys)
    header = dict(line[2:].split(": ", 1) for line in out.splitlines() if line.startswith("# "))
    spec = spec_from_dict(yaml.safe_load(out))
    # the same spec built by hand from the same ingredients (preset file, then the overrides)
    import dataclasses

    expected = apply_overrides(dataclasses.replace(RunSpec(), protocol=load_protocol("smoke")),
                               ["model.name=tiny-unet", "data.name=busi", "data.fold=2", "protocol.lr=3e-4",
                                "data.options.foo=1"])
    assert spec == expected
    assert header["configuration id"] == expected.run_id  # the spec alone; the run id adds the split's digest
    assert header["run name"].endswith(header["run id"][:10])
    assert header["run name"].startswith("tiny-unet__busi__f2__s0__")
    f = tmp_path / "spec.yaml"
    f.write_text(out)
    assert _show(["--config", str(f)], capsys) == out  # printed YAML is a valid --config file, same id


def test_config_show_rejects_bad_input(capsys):
    assert main(["config", "show", "--model", "unett"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'unett'" in err and err.count("\n") == 1
    assert main(["config", "show", "--set", "protocol.augmentation=heavy"]) == 2
    assert "unknown augmentation 'heavy'" in capsys.readouterr().err


@pytest.mark.slow
def test_config_show_names_the_run_that_run_creates(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for i in range(6):
        m = np.zeros((32, 32), np.uint8)
        m[8:20, 8:20] = 255
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "d" / "images" / f"{i}.png")
        Image.fromarray(m).save(tmp_path / "d" / "masks" / f"{i}.png")
    argv = ["--model", "tiny-fcn", "--dataset", "folder", "--preset", "smoke", "--set", "protocol.input_size=32",
            "--set", f"data.options.path={tmp_path / 'd'}", "--set", "data.num_folds=3",
            "--results", str(tmp_path / "r")]
    out = _show(argv, capsys)
    name = next(line for line in out.splitlines() if line.startswith("# run name: ")).split(": ", 1)[1]
    assert main(["run", *argv]) == 0
    assert [p.name for p in (tmp_path / "r" / "runs").iterdir()] == [name]
