"""Learning-rate schedules, stepped once per epoch."""
from __future__ import annotations

import math

import torch


def rex_factor(epoch: int, total: int) -> float:
    """REX (Chen et al., 2022): ``(1 - t/T) / (0.5 + 0.5 (1 - t/T))`` — the paper's schedule."""
    z = 1.0 - min(epoch, total) / max(total, 1)
    return z / (0.5 + 0.5 * z)


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    if name == "rex":
        f = lambda e: rex_factor(e, epochs)  # noqa: E731
    elif name == "cosine":
        f = lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / max(epochs, 1)))  # noqa: E731
    else:
        f = lambda e: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)
