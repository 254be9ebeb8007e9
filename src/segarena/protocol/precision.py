"""One device picker and one mixed-precision rule, shared by training, test evaluation, prediction
(:mod:`segarena.inference`), cross-dataset evaluation and XAI, so that all of them run a model the same way.

Mixed precision is used only on CUDA, only when the run's protocol asked for it (``protocol.amp``) and only when
the model card allows it (``ModelCard.precision == "amp"``; SegNeXt's card says ``"fp32"``). The dtype is bfloat16
where the GPU has it, else float16.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from .._errors import ConfigError


def pick_device(device: str | torch.device | None) -> torch.device:
    """``None``/``""``/``"auto"``: CUDA when available, else CPU. Unknown or unavailable devices are user errors."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r} is not a device", fix="use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine", fix="use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)",
                              fix=f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {device}: MPS is not available on this machine", fix="use --device cpu")
    return dev


def use_amp(requested: bool, device: torch.device, card: Any = None) -> bool:
    """Whether to run under autocast: asked for, on CUDA, and not refused by the model card's ``precision``."""
    return bool(requested) and device.type == "cuda" and getattr(card, "precision", "amp") == "amp"


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """``torch.autocast`` in bfloat16 (float16 where the GPU lacks it) when ``enabled``, else a no-op."""
    if not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, device: torch.device, amp: bool) -> torch.Tensor:
    """``model(x)`` in eval mode under :func:`autocast`, returned as float32 logits."""
    model.eval()
    with autocast(device, amp):
        return model(x).float()


__all__ = ["autocast", "pick_device", "predict_logits", "use_amp"]
