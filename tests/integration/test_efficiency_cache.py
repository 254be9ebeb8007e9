"""The efficiency measurement is made once and reused by the next run of the same model, size, batch and device."""
from __future__ import annotations

import pytest

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena.protocol import run


def _spec(root, seed: int, fold: int) -> RunSpec:
    return RunSpec(data=DataConfig(name="kvasir-seg", root=str(root), limit=16, fold=fold),
                   model=ModelConfig(name="tiny-unet"),
                   protocol=ProtocolConfig(input_size=32, epochs=1, batch_size=4, max_steps_per_epoch=2,
                                           patience=None, amp=False, augmentation="none", seed=seed))


@pytest.mark.realdata
def test_second_run_reuses_the_efficiency_measurement(real_data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path / "cache"))
    a = run(_spec(real_data_root, 0, 0), tmp_path / "r").summary["efficiency"]
    b = run(_spec(real_data_root, 1, 1), tmp_path / "r").summary["efficiency"]
    assert a["cached"] is False and b["cached"] is True
    assert {k: v for k, v in a.items() if k != "cached"} == {k: v for k, v in b.items() if k != "cached"}
    assert list((tmp_path / "cache" / "efficiency").glob("*.json"))
