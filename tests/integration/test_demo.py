"""The demo's configuration: three models of three kinds, the CPU preset, and a tiny end-to-end run."""
from __future__ import annotations

import pytest

from segarena.configs import load_protocol
from segarena.demo import DEMO_MODELS, demo_specs, paper_note
from segarena.models import MODELS

TINY = ["protocol.input_size=32", "protocol.epochs=1", "protocol.max_steps_per_epoch=1", "protocol.batch_size=2",
        "data.limit=25"]


def test_demo_compares_a_pretrained_foundation_model_a_medical_cnn_and_a_general_model():
    specs = demo_specs()
    fams = {s.model.name: MODELS.get(s.model.name).card.family for s in specs}
    assert sorted(fams.values()) == ["foundation", "general", "medical"]
    lite = next(s for s in specs if s.model.name == "litemedsam")
    assert lite.model.pretrained is True and lite.model.kwargs == {"freeze_encoder": True}
    # one protocol for all: the shipped preset, identical across the runs
    assert all(s.protocol == load_protocol("cpu-demo") for s in specs)
    assert len({s.run_id for s in specs}) == 3 and specs[0].data.name == "kvasir-seg"
    p = specs[0].protocol
    assert p.grad_clip and p.lr <= 3e-4  # the U-Net collapse fix (see cpu-demo.yaml)
    note = paper_note(specs[0])
    assert "89.1" in note and f"{p.input_size}x{p.input_size}" in note and "{" not in note


def test_overrides_shrink_every_run():
    specs = demo_specs(TINY)
    assert {s.protocol.input_size for s in specs} == {32} and {s.data.limit for s in specs} == {25}
    assert [s.model.name for s in specs] == [m for m, *_ in DEMO_MODELS]


@pytest.mark.realdata
@pytest.mark.slow
def test_demo_at_tiny_size_end_to_end(real_data_root, tmp_path, capsys, monkeypatch):
    from segarena.cli import main

    monkeypatch.setenv("SEGARENA_DATA_ROOT", str(real_data_root))
    args = ["demo", "--results", str(tmp_path / "demo"), "--device", "cpu"]
    for o in TINY:
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in ("litemedsam", "unet", "segformer-b0"):
        assert name in out
    assert "What the paper reports at full scale" in out and "oracle-prompted" in out
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
