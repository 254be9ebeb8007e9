"""Training-loop overhead: segarena's training step time / a bare PyTorch loop's (same model, batch, optimizer, data
already in memory, no augmentation). Target: <= 1.05.

    python benchmarks/bench_train_overhead.py --model unet --size 128 --batch 8 --steps 20
    python benchmarks/bench_train_overhead.py --model segformer-b3 --size 512 --batch 8 --amp --device cuda
"""
from __future__ import annotations

import statistics
import tempfile

import numpy as np
import torch

from _common import data_root, device_name, parser, sync

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena.data.augment import normalize
from segarena.data.prepare import prepare
from segarena.models import create_model
from segarena.protocol import run


def bare_loop_step_time(model_name: str, images: np.ndarray, masks: np.ndarray, batch: int, steps: int,
                        device: torch.device, amp: bool, lr: float = 1e-4) -> float:
    """The loop a user would write by hand: tensors already on the device, forward, BCE, backward, AdamW."""
    torch.manual_seed(0)
    model = create_model(model_name, 1).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    x_all = normalize(torch.from_numpy(images).to(device), model.card.mean, model.card.std)
    y_all = torch.from_numpy(masks).to(device).float()
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    n = len(x_all)

    def one(i: int) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch, device=device) % n
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            logits = model(x_all[idx])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float()[:, 0], y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(min(3, steps)):  # warm-up
        one(i)
    sync(device)
    import time

    t = time.perf_counter()
    for i in range(steps):
        one(i)
    sync(device)
    return (time.perf_counter() - t) / steps


def segarena_step_time(model_name: str, size: int, batch: int, steps: int, device: torch.device, amp: bool,
                       limit: int, augmentation: str = "none") -> float:
    """segarena's own loop (run()), 2 epochs of ``steps`` steps; the second (warm) epoch's train time per step."""
    spec = RunSpec(data=DataConfig(name="kvasir-seg", root=data_root(), limit=limit),
                   model=ModelConfig(name=model_name),
                   protocol=ProtocolConfig(input_size=size, epochs=2, batch_size=batch, max_steps_per_epoch=steps,
                                           augmentation=augmentation, amp=amp, patience=None, lr=1e-4))
    with tempfile.TemporaryDirectory() as tmp:
        log = run(spec, tmp, device=device).store.log()
    return log[1]["train_seconds"] / log[1]["steps"]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", default="unet")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.tiny:
        a.model, a.size, a.batch, a.steps, a.repeats = "tiny-unet", 32, 4, 3, 1
    device = torch.device(a.device)
    limit = max(a.batch * (a.steps + 3) * 2, 40)
    data = prepare("kvasir-seg", a.size, data_root(), limit=limit)
    imgs, msks = np.array(data.images[: a.batch * 8]), np.array(data.masks[: a.batch * 8])
    # interleaved rounds (bare, segarena, segarena + 'paper' augmentation, then again): a change in machine load
    # hits all three alike; the ratios are taken per round and printed as min / median / max
    rounds = []
    for _ in range(a.repeats):
        bare = bare_loop_step_time(a.model, imgs, msks, a.batch, a.steps, device, a.amp)
        ours = segarena_step_time(a.model, a.size, a.batch, a.steps, device, a.amp, limit)
        aug = segarena_step_time(a.model, a.size, a.batch, a.steps, device, a.amp, limit, "paper")
        rounds.append((bare, ours, aug))
    med = [statistics.median(r[k] for r in rounds) for k in range(3)]

    def mmm(k: int) -> str:
        v = [r[k] / r[0] for r in rounds]
        return f"{min(v):.3f} / {statistics.median(v):.3f} / {max(v):.3f}"

    print(f"device: {device_name(device)}; model {a.model}, {a.size}x{a.size}, batch {a.batch}, amp {a.amp}; "
          f"{a.repeats} interleaved rounds of {a.steps} steps")
    print(f"median ms/step: bare loop {med[0] * 1000:.1f}; segarena {med[1] * 1000:.1f}; "
          f"segarena + 'paper' augmentation {med[2] * 1000:.1f}")
    print(f"ratio segarena / bare, min / median / max over rounds = {mmm(1)} (target <= 1.05); "
          f"with augmentation {mmm(2)}")


if __name__ == "__main__":
    main()
