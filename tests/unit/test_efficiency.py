"""Efficiency record on a tiny model, FLOP counting by hand, the Pareto front and its plot."""
from __future__ import annotations

import dataclasses
import json
import sys

import pandas as pd
import pytest
import torch
from torch import nn

from segarena._errors import ConfigError
from segarena.metrics.efficiency import (
    Efficiency,
    count_flops,
    device_name,
    measure_efficiency,
    pareto_front,
    pareto_plot,
)


def test_flops_of_one_conv_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # 8 outputs x 3 inputs x 3x3 kernel multiply-adds per pixel, 16x16 pixels, 2 FLOPs per multiply-add
    assert count_flops(conv, torch.zeros(1, 3, 16, 16)) == 2 * 8 * 3 * 9 * 16 * 16
    lin = nn.Linear(10, 4)
    assert count_flops(lin, torch.zeros(5, 10)) == 2 * 5 * 10 * 4


def _textbook_flops(model: nn.Module, size: int) -> int:
    """Forward FLOPs by the textbook formulas, from each layer's shapes (forward hooks; no FLOP counter):
    convolution 2 * N * H_out * W_out * C_out * (C_in / groups) * kh * kw; transposed convolution the same over the
    *input* pixels; linear 2 * rows * in * out. Norms, activations, pooling and bias adds are not counted
    (FlopCounterMode's convention)."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.ConvTranspose2d):
            n, cin, h, w = inputs[0].shape
            total += 2 * n * h * w * cin * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Conv2d):
            n, cout, h, w = out.shape
            total += 2 * n * h * w * cout * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += 2 * inputs[0].numel() // m.in_features * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d,
                                                                                         nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total


def test_measure_tiny_unet_on_cpu():
    from segarena.models import count_params, create_model

    model = create_model("tiny-unet", 1).train()
    eff = measure_efficiency(model, 64, batch_size=2, warmup=1, repeats=3, name="tiny-unet")
    assert isinstance(eff, Efficiency) and eff.model == "tiny-unet"
    assert model.training  # the caller's mode is restored
    assert eff.params == eff.trainable_params == count_params(model)
    assert eff.flops == _textbook_flops(model, 64) > 0
    assert eff.macs == eff.flops // 2
    assert eff.latency_ms > 0 and eff.latency_p90_ms >= eff.latency_ms and eff.throughput > 0
    assert eff.peak_memory_mb >= 0 and eff.memory_kind.startswith("cpu_")
    assert eff.input_size == (64, 64) and eff.batch_size == 2 and eff.dtype == "float32"
    assert eff.device == device_name("cpu") and "threads" in eff.device
    d = eff.to_dict()
    assert json.loads(json.dumps(d))["input_size"] == [64, 64]
    with pytest.raises(dataclasses.FrozenInstanceError):
        eff.params = 0  # type: ignore[misc]


def test_flops_scale_with_pixels_and_rectangular_input():
    from segarena.models import create_model

    model = create_model("tiny-fcn", 2)
    small = measure_efficiency(model, (16, 32), batch_size=1, warmup=0, repeats=1)
    big = measure_efficiency(model, (32, 64), batch_size=1, warmup=0, repeats=1)
    assert big.flops == 4 * small.flops  # a fully convolutional net: FLOPs proportional to pixels
    assert small.input_size == (16, 32)


_BIG_ACTIVATION = """
import json, sys
import torch
from torch import nn
from segarena.metrics.efficiency import measure_efficiency

class Big(nn.Module):
    def forward(self, x):
        y = torch.ones(24, 1024, 1024)  # 96 MiB allocated (and touched) inside the forward pass
        return x + y.sum()

eff = measure_efficiency(Big(), 8, batch_size=1, warmup=0, repeats=1)
print(json.dumps({"kind": eff.memory_kind, "mb": eff.peak_memory_mb}))
"""


def test_cpu_memory_sees_a_large_activation():
    """Run in a fresh interpreter: in a long-lived test worker, memory freed by earlier tests can be reused
    without the resident set growing, which says nothing about the measurement."""
    import json
    import os
    import subprocess
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", _BIG_ACTIVATION], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    eff = json.loads(out.stdout.splitlines()[-1])
    if sys.platform == "linux":  # the /proc method; elsewhere the max-RSS fallback may miss an earlier peak
        assert eff["kind"] == "cpu_peak_rss_delta"
        assert eff["mb"] > 80


def test_bad_settings():
    with pytest.raises(ConfigError):
        measure_efficiency(nn.Identity(), 0)
    with pytest.raises(ConfigError):
        measure_efficiency(nn.Identity(), 8, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            measure_efficiency(nn.Identity(), 8, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_on_cuda():
    from segarena.models import create_model

    eff = measure_efficiency(create_model("tiny-unet", 1), 64, device="cuda", batch_size=4, warmup=2, repeats=5)
    assert eff.memory_kind == "cuda_max_allocated" and eff.peak_memory_mb > 0
    assert eff.device == torch.cuda.get_device_name(0) and eff.latency_ms > 0


def test_pareto_front_by_hand():
    df = pd.DataFrame({"model": list("abcdef"), "macs": [1, 2, 2, 3, 4, 4], "mdsc": [0.80, 0.85, 0.84, 0.85,
                                                                                      0.90, 0.90]})
    # b dominates c (same cost, better) and d (cheaper, same score); e and f tie: neither dominates the other
    assert list(df[pareto_front(df)].model) == ["a", "b", "e", "f"]
    # lower score is better (e.g. HD95): a is now the best and cheapest, it dominates all but none
    assert list(df[pareto_front(df, higher_is_better=False)].model) == ["a"]
    nan = df.assign(mdsc=[float("nan"), 0.85, 0.84, 0.85, 0.90, 0.90])
    assert not pareto_front(nan).iloc[0]
    with pytest.raises(ConfigError):
        pareto_front(df, "flops")


def test_pareto_plot_png(tmp_path):
    df = pd.DataFrame({"model": ["U-Net", "SegFormer-B3", "VW-MiT", "HiFormer"], "family": ["medical", "general",
                       "general", "medical"], "macs": [5.5e10, 2.1e10, 4.0e10, 1.0e10], "mdsc": [0.87, 0.907,
                                                                                                0.91, 0.888]})
    fig = pareto_plot(df, title="mDSC vs compute")
    path = tmp_path / "pareto.png"
    fig.savefig(path, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert {t.get_text() for t in ax.texts} == set(df.model)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["Pareto front", "general", "medical"]
    assert ax.get_xscale() == "log"


def test_efficiency_cache_hit_on_second_call(tmp_path, monkeypatch):
    """One measurement per (model, size, batch, device, precision): the second call reads it back unchanged; a
    different batch or size is measured anew; a damaged cache file is measured again and rewritten."""
    from segarena.metrics import efficiency as eff_mod
    from segarena.models import create_model

    calls = []
    real = eff_mod.measure_efficiency

    def counting(*args, **kwargs):
        calls.append(kwargs.get("batch_size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(eff_mod, "measure_efficiency", counting)
    model = create_model("tiny-unet", 1)
    kw = {"batch_size": 2, "warmup": 0, "repeats": 1, "name": "tiny-unet", "cache_dir": tmp_path}
    first, hit1 = eff_mod.cached_efficiency(model, 32, **kw)
    second, hit2 = eff_mod.cached_efficiency(create_model("tiny-unet", 1), 32, **kw)  # another run, same model
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert second == first
    _, hit3 = eff_mod.cached_efficiency(model, 32, **{**kw, "batch_size": 1})
    _, hit4 = eff_mod.cached_efficiency(model, 48, **kw)
    _, hit5 = eff_mod.cached_efficiency(create_model("tiny-unet", 3), 32, **kw)  # other head: other structure
    assert (hit3, hit4, hit5) == (False, False, False) and len(calls) == 4
    for f in tmp_path.glob("*.json"):
        f.write_text("{ damaged")
    again, hit6 = eff_mod.cached_efficiency(model, 32, **kw)
    assert not hit6 and len(calls) == 5 and again.params == first.params
    assert eff_mod.cached_efficiency(model, 32, **kw)[1]
