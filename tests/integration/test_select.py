"""`segarena select`: successive halving over candidates on a user's folder dataset; only the winner is tested."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from segarena.cli import main
from segarena.runner.select import rung_schedule


def test_rung_schedule_respects_budget():
    for n in (2, 3, 4, 8):
        ms = rung_schedule(n, 64)
        assert ms == sorted(ms) and ms[-1] <= 64
        survivors, spent, prev = n, 0, 0
        for m in ms:
            spent += survivors * (m - prev)
            prev, survivors = m, max(1, -(-survivors // 2))
        assert spent <= 64 + n  # at most rounding per candidate over budget
    assert rung_schedule(1, 10) == [10]


def _folder(root, n=20):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
        m = np.zeros((40, 40), np.uint8)
        y, x = rng.integers(5, 25, 2)
        m[y:y + 12, x:x + 12] = 255
        img[m > 0] += 150  # a learnable bright square
        Image.fromarray(img).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(m).save(root / "masks" / f"c{i:02d}.png")
    return root


def test_select_on_user_folder(tmp_path, capsys):
    data = _folder(tmp_path / "mydata")
    rc = main(["select", "--data", str(data), "--models", "tiny-fcn,tiny-unet", "--budget", "4", "--preset", "smoke", "--set", "protocol.input_size=32",
               "--set", "protocol.max_steps_per_epoch=2", "--results", str(tmp_path / "r")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "recommended:" in out and "95% CI" in out
    runs = sorted((tmp_path / "r" / "runs").iterdir())
    assert len(runs) == 2
    states = {d.name.split("__")[0]: json.loads((d / "status.json").read_text())["state"] for d in runs}
    assert sorted(states.values()) == ["complete", "paused"]  # the loser stopped at its rung, untested
    loser = next(d for d in runs if states[d.name.split("__")[0]] == "paused")
    assert not (loser / "records.parquet").exists()
