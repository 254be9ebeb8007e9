"""``segarena models list`` answers from the card catalogue: no torch, model zoo, dataset adapters or scipy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# runs the CLI's `models list` in a fresh interpreter and reports what got imported
_PROBE = """
import contextlib, io, json, sys
from segarena.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(["models", "list", "--json"])
from segarena._model_catalog import cards
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "scipy", "timm", "numba")
               or m.startswith(("segarena.models", "segarena.data")))
print(json.dumps({"rc": rc, "cards": json.loads(buf.getvalue()), "heavy": heavy}))
"""


def _probe(cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "SEGARENA_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_listing_imports_no_model_code_and_matches_the_registry(tmp_path):
    """The first listing may import the zoo (only when the shipped catalogue is stale, then it fills the user
    cache); the second never does, and both print exactly the live registry's cards."""
    first = _probe(tmp_path)
    second = _probe(tmp_path)
    # the live registry of a fresh interpreter: this test process may hold models other tests registered or
    # resolved by name (smp:..., plugins), which a user's `models list` never sees
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "SEGARENA_CACHE": str(tmp_path / "other")}
    out = subprocess.run([sys.executable, "-c", "import json; from segarena._model_catalog import live_cards; "
                          "print(json.dumps(live_cards()))"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    live = json.loads(out.stdout.splitlines()[-1])
    assert first["rc"] == second["rc"] == 0
    assert first["cards"] == second["cards"] == live
    assert second["heavy"] == [], second["heavy"]


def test_stale_catalogue_is_never_used(tmp_path, monkeypatch):
    """A catalogue whose fingerprint differs from the code (a model module changed) is ignored: the live registry
    answers and the fresh catalogue lands in the user cache, which the next call uses."""
    from segarena import _model_catalog as cat

    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path))
    stale = tmp_path / "shipped.json"
    stale.write_text(json.dumps({"fingerprint": "0" * 64, "cards": [{"name": "ghost", "family": "test"}]}))
    monkeypatch.setattr(cat, "SHIPPED", stale)
    cards, source = cat.cards()
    assert source == "live" and "ghost" not in [c["name"] for c in cards]
    assert json.loads(cat.cache_file().read_text())["fingerprint"] == cat.fingerprint()
    again, source = cat.cards()
    assert source == "cache" and again == cards
    monkeypatch.setattr(cat, "fingerprint", lambda: "f" * 64)  # the code changed again
    assert cat.cards()[1] == "live"


def test_models_info_counts_on_meta_and_falls_back():
    """FLOPs and parameters from the meta device equal a real CPU count; a model the meta device cannot run
    (here: a forced failure, as a ``.item()`` in forward would be) is counted on the CPU instead."""
    import pytest
    import torch

    import segarena.models as models

    info = models.model_info("tiny-unet", size=64)
    real = models.create_model("tiny-unet", 1)
    assert info["flops_counted_on"] == "meta"
    assert info["params"] == models.count_params(real) and info["flops"] == models.count_flops(real, 64)
    counted = []
    real_count = models.count_flops

    def no_meta(model, size=512, in_channels=3, device="cpu"):
        counted.append(device)
        if device == "meta":
            raise RuntimeError("Tensor.item() cannot be called on meta tensors")
        return real_count(model, size, in_channels, device)

    mp = pytest.MonkeyPatch()
    mp.setattr(models, "count_flops", no_meta)
    try:
        again = models.model_info("tiny-unet", size=64)
    finally:
        mp.undo()
    assert counted == ["meta", "cpu"] and again["flops_counted_on"] == "cpu" and again["flops"] == info["flops"]
    assert not any(p.is_meta for p in real.parameters()) and torch.get_default_device().type == "cpu"


def test_shipped_catalogue_is_current():
    """The catalogue in the package matches the model code, so a fresh install's first `models list` (and the
    report's card lookups) never import the zoo. After changing a model module, regenerate it."""
    from segarena import _model_catalog as cat

    shipped = json.loads(cat.SHIPPED.read_text())
    assert shipped["fingerprint"] == cat.fingerprint(), (
        "src/segarena/model_catalog.json is stale: run `python -m segarena._model_catalog --write` and commit it")
