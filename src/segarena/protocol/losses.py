"""Losses. The paper used BCE on one foreground logit for binary tasks and cross-entropy otherwise; Dice+CE
(nnU-Net's default) and Dice+BCE are options."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._registry import Registry


@dataclass(frozen=True)
class LossSpec:
    name: str
    #: True: one sigmoid logit per foreground class (binary tasks: 1 output); False: K softmax logits
    sigmoid: bool
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    description: str = ""


LOSSES: Registry[LossSpec] = Registry("loss")


def _soft_dice_softmax(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)  # batch dice (pooled over the batch), as nnU-Net does
    inter = (probs * onehot).sum(dims)[1:]
    denom = (probs + onehot).sum(dims)[1:]
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def _soft_dice_sigmoid(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    probs = logits.float()[:, 0].sigmoid()
    t = target.float()
    return 1 - (2 * (probs * t).sum() + eps) / (probs.sum() + t.sum() + eps)


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float()[:, 0], target.float())


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target)


for _spec in (
    LossSpec("bce", True, _bce, "binary cross-entropy on one foreground logit (paper, binary tasks)"),
    LossSpec("ce", False, _ce, "cross-entropy over K logits (paper, multi-class tasks)"),
    LossSpec("dice_ce", False, lambda lg, t: _ce(lg, t) + _soft_dice_softmax(lg, t),
             "cross-entropy + batch soft Dice over foreground classes (nnU-Net default)"),
    LossSpec("dice_bce", True, lambda lg, t: _bce(lg, t) + _soft_dice_sigmoid(lg, t),
             "binary cross-entropy + soft Dice (binary tasks)"),
):
    LOSSES.register(_spec.name, _spec)


def resolve_loss(name: str, num_classes: int) -> LossSpec:
    """``auto`` -> BCE for binary tasks, CE otherwise. Sigmoid losses need a binary task."""
    if name == "auto":
        name = "bce" if num_classes == 2 else "ce"
    spec = LOSSES.get(name)
    if spec.sigmoid and num_classes != 2:
        from .._errors import ConfigError

        raise ConfigError(f"loss {name!r} is for binary tasks; this dataset has {num_classes} classes",
                          fix="use --set protocol.loss=ce (or dice_ce)")
    return spec


def out_channels(spec: LossSpec, num_classes: int) -> int:
    return 1 if spec.sigmoid else num_classes


def to_labels(logits: torch.Tensor) -> torch.Tensor:
    """Logits [N, K, H, W] -> label map [N, H, W] (one channel: sigmoid > 0.5, i.e. logit > 0)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)
