"""`segarena select`: successive halving over candidates on a user's folder dataset; only the winner is tested."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segarena.cli import main
from segarena._errors import ConfigError
from segarena.runner.select import race_cost, rung_schedule


def test_rung_schedule_never_exceeds_budget():
    """Hand count of the race's cost: rung r trains its survivors from the previous milestone to its own."""
    for n in (2, 3, 4, 5, 8):
        for budget in range(n + 4, 80):
            try:
                ms = rung_schedule(n, budget)
            except ConfigError:
                continue
            assert ms == sorted(ms) and len(set(ms)) == len(ms)
            survivors, spent, prev = n, 0, 0
            for m in ms:
                spent += survivors * (m - prev)
                prev, survivors = m, -(-survivors // 2)
            assert spent <= budget, (n, budget, ms, spent)
            assert spent == race_cost(ms, n)
    assert rung_schedule(1, 10) == [10]
    # the case of the issue: 3 candidates, budget 6 used to cost 7 epochs (3x1 + 2x1 + 1x2)
    assert race_cost(rung_schedule(3, 6), 3) <= 6


def test_budget_too_small_is_a_clear_error():
    with pytest.raises(ConfigError, match="--budget 5 epochs is too small for 3 candidates"):
        rung_schedule(3, 5)  # 3 + 2 + 1 survivors need 6 epochs at least


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


@pytest.mark.slow
def test_select_spends_at_most_its_budget(tmp_path, capsys):
    """The issue's case: 3 candidates and a budget of 6 epochs; count the epochs each run really trained."""
    data = _folder(tmp_path / "mydata", n=15)
    rc = main(["select", "--data", str(data), "--models", "tiny-fcn,tiny-unet,unet", "--budget", "6",
               "--preset", "smoke", "--set", "protocol.input_size=32", "--set", "protocol.max_steps_per_epoch=1",
               "--results", str(tmp_path / "r")])
    assert rc == 0
    logged = sum(len(json.loads((d / "log.json").read_text())) for d in (tmp_path / "r" / "runs").iterdir())
    assert logged <= 6
    assert f"{logged} epochs spent of a budget of 6" in capsys.readouterr().out
