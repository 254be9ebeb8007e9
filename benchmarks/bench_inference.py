"""Inference speed: eager fp32 vs channels-last, bfloat16 autocast and torch.compile (CPU, and CUDA when present),
with the largest output difference to eager fp32.

    python benchmarks/bench_inference.py --model segformer-b3 --size 512 --batch 1
"""
from __future__ import annotations

import torch

from _common import device_name, parser, timed

from segarena.models import create_model


def variants(model, device, compile_: bool):
    yield "eager fp32", model, None
    yield "channels-last fp32", model.to(memory_format=torch.channels_last), None
    model = model.to(memory_format=torch.contiguous_format)
    yield "bf16 autocast", model, torch.bfloat16
    if compile_:
        yield "torch.compile fp32", torch.compile(model), None


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", default="unet")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
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
    print(f"device: {device_name(device)}; model {a.model}, {a.size}x{a.size}, batch {a.batch}")
    base = None
    for name, m, dtype in variants(model, device, not a.no_compile):
        xin = x.to(memory_format=torch.channels_last) if "channels-last" in name else x

        def f():
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return m(xin)

        f()  # warm-up (and compilation)
        t = timed(f, device, a.repeat)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            diff = (m(xin).float() - ref).abs().max().item()
        base = base or t
        print(f"{name:<22} {t * 1000:8.1f} ms/batch  {a.batch / t:7.1f} img/s  speed-up {base / t:4.2f}x  "
              f"max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
