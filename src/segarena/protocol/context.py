"""The frozen context one run's steps share (:class:`RunContext`), how batches reach the model (:class:`Feed`),
what training leaves behind (:class:`Fit`), and the batch helpers of training, validation and test."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import RunSpec
from ..data.augment import normalize
from ..data.prepare import PreparedDataset
from ..data.splits import Split
from ..store import RunStore
from .losses import LossSpec
from .speed import DeviceArrays, as_input


@dataclass(frozen=True)
class Feed:
    """How batches reach the model: the device, mixed precision, the weights' normalization, the batch size, the
    inputs' memory format and, with ``protocol.data_on_device``, the prepared arrays already on the device."""
    device: torch.device
    amp: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int
    channels_last: bool = False
    #: the prepared arrays on the device (batches are gathered there); ``None``: each batch is copied from the host
    arrays: DeviceArrays | None = None


@dataclass(frozen=True)
class RunContext:
    """Everything one run's steps share, fixed before training starts: the spec, where results go, the prepared
    data and its split, the model with its loss, and how batches are fed. The steps are :func:`_fit`,
    :func:`_evaluate` and :func:`_summarize`; only the model's weights change while they run."""
    spec: RunSpec
    store: RunStore
    data: PreparedDataset
    split: Split
    model: Any
    loss: LossSpec
    n_out: int
    feed: Feed
    aug: Any
    progress: bool
    t_start: float


@dataclass
class Fit:
    """What training left behind: the epoch log, the selected epoch and how training ended."""
    log: list[dict[str, Any]]
    best_epoch: int
    stopped_early: bool = False
    paused: bool = False
    best: float = -math.inf
    #: peak memory of training (MB), taken when training ends, before the test
    train_peak_mb: float = 0.0


def batches(indices: list[int], bs: int) -> list[list[int]]:
    return [indices[i:i + bs] for i in range(0, len(indices), bs)]


def host_batch(data: PreparedDataset, idx: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and long masks of cases ``idx``, sliced from the memory-mapped cache and copied to ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(device, non_blocking=True)
    y = torch.from_numpy(np.ascontiguousarray(data.masks[idx])).to(device, non_blocking=True).long()
    return x, y


def fetch(data: PreparedDataset, idx: list[int], feed: Feed) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [B, S, S, C] and long masks [B, S, S] of cases ``idx`` on the feed's device: gathered there
    when the arrays are on the device, else copied from the host (the same bytes either way)."""
    if feed.arrays is not None:
        return feed.arrays.gather(idx)
    return host_batch(data, idx, feed.device)


def to_device(data: PreparedDataset, idx: list[int], feed: Feed):
    """A normalized evaluation batch of cases ``idx`` (sorted: memmap locality), its masks and the sorted ids."""
    idx = sorted(idx)
    x, y = fetch(data, idx, feed)
    return as_input(normalize(x, feed.mean, feed.std), feed.channels_last), y, idx


__all__ = ["Feed", "Fit", "RunContext", "batches", "fetch", "host_batch", "to_device"]
