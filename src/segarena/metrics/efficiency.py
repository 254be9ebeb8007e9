"""Cost of a model: parameters, FLOPs/MACs, latency, throughput, peak memory, and the accuracy-cost Pareto front.

The paper compared accuracy only; a model that is 0.3 Dice points better at four times the compute is a
different recommendation. Conventions (``docs/evaluation.md``):

* **FLOPs** are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` for one forward pass of one
  image (convolutions, matmuls and attention; element-wise ops are not counted). One multiply-accumulate counts as
  2 FLOPs, so ``macs = flops // 2`` (the number most papers call "FLOPs").
* **Latency**: eval mode, ``torch.inference_mode()``, batch 1, after ``warmup`` untimed passes; each pass is timed
  on its own (with ``torch.cuda.synchronize()`` before and after on CUDA) and the median is reported, with the
  90th percentile.
* **Throughput**: images/s over ``repeats`` timed passes at ``batch_size`` (after warm-up).
* **Peak memory** of a forward pass at ``batch_size``: on CUDA, ``torch.cuda.max_memory_allocated`` minus the
  memory allocated before the pass (so weights are excluded; activations and workspace are included); on CPU, the
  growth of the process's peak resident set (Linux: ``VmHWM`` after resetting it through ``/proc/self/clear_refs``;
  elsewhere ``resource.getrusage`` max RSS, which only shows growth beyond the earlier peak). CPU numbers include
  allocator effects and are approximate.
* **Device**: the GPU name, or the CPU model name with the number of torch threads. Timings from different
  devices are not comparable; the record says which one produced them.
"""
from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._errors import ConfigError
from ..stats.pareto import pareto_front, pareto_plot  # torch-free (the report draws it); re-exported here

__all__ = ["Efficiency", "cached_efficiency", "count_flops", "device_name", "efficiency_key", "measure_efficiency",
           "pareto_front", "pareto_plot"]


@dataclass(frozen=True)
class Efficiency:
    """Cost record of one model at one input size on one device."""

    params: int
    trainable_params: int
    flops: int
    macs: int
    input_size: tuple[int, int]
    in_channels: int
    latency_ms: float
    latency_p90_ms: float
    throughput: float
    batch_size: int
    peak_memory_mb: float
    memory_kind: str
    device: str
    dtype: str
    torch_version: str
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def device_name(device: torch.device | str = "cpu") -> str:
    """Human-readable name of the device that produced a timing: GPU name, or CPU model and torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({torch.get_num_threads()} threads)"


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs of ``model(x)`` as counted by ``FlopCounterMode`` (1 multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    # Parameters passed on as a submodule's *input* (LiteMedSAM's learned prompt tokens) make the counter's module
    # tracker hook autograd, which fails in inference mode ("'NoneType' object has no attribute
    # 'next_functions'"); counting needs no gradients, so they are switched off for the count and restored.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kb(field: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _cpu_peak_delta_mb(run: Any) -> tuple[float, str]:
    """Growth of the process's peak RSS while ``run()`` executes (MiB), and how it was measured."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        before = _rss_kb("VmRSS")
        run()
        after = _rss_kb("VmHWM")
        if before is not None and after is not None:
            return max(0, after - before) / 1024, "cpu_peak_rss_delta"
    except OSError:
        pass
    import resource

    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    run()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return max(0, after - before) / 2**20, "cpu_maxrss_growth"


def measure_efficiency(model: nn.Module, input_size: int | Sequence[int] = 512, *, in_channels: int = 3,
                       device: torch.device | str = "cpu", batch_size: int = 8, warmup: int = 3,
                       repeats: int = 10, dtype: torch.dtype = torch.float32,
                       name: str | None = None) -> Efficiency:
    """Parameters, FLOPs, latency (batch 1), throughput (``batch_size``) and peak memory of ``model``.

    The model is moved to ``device`` and put in eval mode (its previous train/eval mode is restored; it stays on
    ``device``). ``dtype`` other than float32 runs the forward under autocast (e.g. ``torch.bfloat16``).
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1 or batch_size < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(f"bad efficiency settings: input_size={input_size}, batch_size={batch_size}, "
                          f"repeats={repeats}, warmup={warmup}", fix="use positive sizes and counts")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("efficiency on CUDA requested but no GPU is visible", fix="use device='cpu'")
    was_training = model.training
    model = model.to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x1 = torch.randn(1, in_channels, *size, device=device)
    xb = torch.randn(batch_size, in_channels, *size, device=device)
    amp = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def forward(x: torch.Tensor) -> None:
        with torch.inference_mode(), amp:
            model(x)

    try:
        flops = count_flops(model, x1)
        for _ in range(warmup):
            forward(x1)
        times = []
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            forward(x1)
            _sync(device)
            times.append(time.perf_counter() - t)
        for _ in range(max(1, warmup)):
            forward(xb)
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            forward(xb)
        _sync(device)
        throughput = batch_size * repeats / (time.perf_counter() - t)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            forward(xb)
            _sync(device)
            peak_mb, kind = (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda_max_allocated"
        else:
            peak_mb, kind = _cpu_peak_delta_mb(lambda: forward(xb))
    finally:
        model.train(was_training)
    ms = np.asarray(times) * 1e3
    return Efficiency(params=params, trainable_params=trainable, flops=flops, macs=flops // 2, input_size=size,
                      in_channels=in_channels, latency_ms=float(np.median(ms)),
                      latency_p90_ms=float(np.percentile(ms, 90)), throughput=float(throughput),
                      batch_size=batch_size, peak_memory_mb=float(peak_mb), memory_kind=kind,
                      device=device_name(device), dtype=str(dtype).replace("torch.", ""),
                      torch_version=torch.__version__, model=name)


def _cache_root() -> Path:
    """``$SEGARENA_CACHE/efficiency`` (default ``~/.cache/segarena/efficiency``)."""
    import os

    root = Path(os.environ.get("SEGARENA_CACHE") or Path.home() / ".cache" / "segarena").expanduser()
    return root / "efficiency"


def efficiency_key(model: nn.Module, input_size: int | Sequence[int], *, in_channels: int, device: torch.device | str,
                   batch_size: int, dtype: torch.dtype, name: str | None) -> dict[str, Any]:
    """What an efficiency measurement depends on: the model (name, its exact parameter count and module
    structure), input size, channels, batch, device (with its thread count), precision and torch version."""
    import hashlib

    size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    structure = hashlib.sha256(repr(model).encode()).hexdigest()[:16]
    return {"model": name, "params": sum(p.numel() for p in model.parameters()), "structure": structure,
            "input_size": list(size), "in_channels": in_channels, "batch_size": batch_size,
            "device": device_name(device), "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__}


def cached_efficiency(model: nn.Module, input_size: int | Sequence[int] = 512, *, in_channels: int = 3,
                      device: torch.device | str = "cpu", batch_size: int = 8, warmup: int = 3, repeats: int = 10,
                      dtype: torch.dtype = torch.float32, name: str | None = None,
                      cache_dir: Path | None = None) -> tuple[Efficiency, bool]:
    """:func:`measure_efficiency`, measured once per (model, input size, batch, device, precision) and reused.

    The cost of a model does not depend on what it was trained on, so every run of a study with the same model,
    size, batch and device shares one measurement, stored as JSON under ``$SEGARENA_CACHE/efficiency`` (keyed
    by :func:`efficiency_key`). Returns the record and whether it came from the cache. A damaged cache file is
    ignored and rewritten.
    """
    import hashlib
    import json
    import os

    key = efficiency_key(model, input_size, in_channels=in_channels, device=device, batch_size=batch_size,
                         dtype=dtype, name=name)
    folder = Path(cache_dir) if cache_dir is not None else _cache_root()
    path = folder / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24] + ".json")
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            rec = stored["efficiency"]
            rec["input_size"] = tuple(rec["input_size"])
            return Efficiency(**rec), True
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    eff = measure_efficiency(model, input_size, in_channels=in_channels, device=device, batch_size=batch_size,
                             warmup=warmup, repeats=repeats, dtype=dtype, name=name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "efficiency": eff.to_dict()}, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs time
        pass
    return eff, False
