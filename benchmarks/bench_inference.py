"""Inference speed: eager fp32 vs channels-last, bfloat16 autocast and torch.compile (CPU, and CUDA when present),
with the largest output difference to eager fp32.

Like with like: every variant runs the same model weights on the same input; the variants are timed in
interleaved rounds (eager, channels-last, bf16, compile, eager, ...), one call each per round after a warm-up
(and compilation), so a change in machine load hits all of them alike. Printed per variant: the median time and
the speed-up over eager, min / median / max over the per-round ratios.

    python benchmarks/bench_inference.py --model segformer-b3 --size 512 --batch 1 --repeat 10
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from _common import device_name, parser, sync

from segarena.models import create_model


def variants(model, compile_: bool):
    """(name, module, autocast dtype, channels-last input) of every variant; each its own copy of the weights."""
    out = [("eager fp32", model, None, False),
           ("channels-last fp32", copy.deepcopy(model).to(memory_format=torch.channels_last), None, True),
           ("bf16 autocast", model, torch.bfloat16, False)]
    if compile_:
        out.append(("torch.compile fp32", torch.compile(copy.deepcopy(model)), None, False))
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", default="unet")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10, help="interleaved rounds")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    a = p.parse_args()
    if a.tiny:
        a.model, a.size, a.repeat, a.no_compile = "tiny-unet", 32, 2, True
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = create_model(a.model, 1).to(device).eval()
    x = torch.randn(a.batch, 3, a.size, a.size, device=device)
    with torch.no_grad():
        ref = model(x).float()
    print(f"device: {device_name(device)}; model {a.model}, {a.size}x{a.size}, batch {a.batch}; "
          f"{a.repeat} interleaved rounds")
    calls, diffs = [], []
    for name, m, dtype, cl in variants(model, not a.no_compile):
        xin = x.to(memory_format=torch.channels_last) if cl else x

        def f(m=m, xin=xin, dtype=dtype):
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return m(xin)

        diffs.append((f().float() - ref).abs().max().item())  # warm-up (and compilation) + the difference
        calls.append((name, f))
    times = {name: [] for name, _ in calls}
    for _ in range(a.repeat):
        for name, f in calls:
            sync(device)
            t = time.perf_counter()
            f()
            sync(device)
            times[name].append(time.perf_counter() - t)
    base = times[calls[0][0]]
    for (name, _), diff in zip(calls, diffs):
        t = times[name]
        ratios = [b / v for b, v in zip(base, t)]
        med = statistics.median(t)
        print(f"{name:<22} {med * 1000:8.1f} ms/batch  {a.batch / med:7.1f} img/s  speed-up ratio min/median/max "
              f"{min(ratios):4.2f} / {statistics.median(ratios):4.2f} / {max(ratios):4.2f}x  max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
