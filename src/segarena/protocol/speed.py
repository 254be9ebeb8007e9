"""The GPU speed levers of the one training loop, each a protocol option (``docs/protocol.md``, "Speed options"):

* ``channels_last``: the model's 4-D weights and every input batch in channels-last memory format;
* ``compile``: the training forward runs through ``torch.compile``; everything that saves or evaluates weights
  uses the uncompiled module;
* ``data_on_device``: the prepared uint8 arrays are copied to the device once and batches are gathered there.

The loop and ``benchmarks/gpu_check.py`` both apply the levers through these functions, so what the check measures
is what a run does.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .._errors import SegarenaError

#: ``data_on_device: auto`` copies the arrays to a CUDA device only when they take at most this share of its free
#: memory at start-up (the model's weights are there already; optimizer state and activations come later)
DEVICE_DATA_SHARE = 0.25
#: cases copied per host-to-device transfer when the arrays move to the device (bounds the staging memory)
COPY_CHUNK = 256


@dataclass(frozen=True)
class DeviceArrays:
    """The prepared arrays as tensors on the run's device: uint8 images [N, S, S, C] and masks [N, S, S]."""
    images: torch.Tensor
    masks: torch.Tensor

    def gather(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and long masks of cases ``idx``, gathered on the device."""
        at = torch.as_tensor(idx, dtype=torch.long, device=self.images.device)
        return self.images.index_select(0, at), self.masks.index_select(0, at).long()


def array_bytes(images: np.ndarray, masks: np.ndarray) -> int:
    return int(images.nbytes) + int(masks.nbytes)


def device_arrays(images: np.ndarray, masks: np.ndarray, device: torch.device,
                  mode: bool | str) -> DeviceArrays | None:
    """The arrays on ``device`` for ``protocol.data_on_device`` = ``mode``, or ``None`` to feed batches from the host.

    On CPU the arrays are already where the model runs: they are wrapped as tensors in place (memory-mapped, not
    read into memory). On CUDA they are copied once, when they fit (``auto``: :data:`DEVICE_DATA_SHARE` of the free
    memory; ``True``: the free memory, else an error). Other devices (MPS) feed from the host unless ``True``."""
    if mode is False:
        return None
    if device.type == "cpu":
        with warnings.catch_warnings():  # a read-only memory map: the tensors are only ever read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return DeviceArrays(torch.from_numpy(images), torch.from_numpy(masks))
    need = array_bytes(images, masks)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        limit = free if mode is True else DEVICE_DATA_SHARE * free
        if need > limit:
            if mode is True:
                raise SegarenaError(f"protocol.data_on_device=true: the prepared data ({need / 2**30:.1f} GiB) does "
                                    f"not fit in the {free / 2**30:.1f} GiB free on {device}",
                                    fix="use --set protocol.data_on_device=auto (copied only when it fits) or false")
            return None
    elif mode is not True:  # "auto" on a device without a memory query: feed from the host
        return None
    return DeviceArrays(_copy(images, device), _copy(masks, device))


def _copy(array: np.ndarray, device: torch.device) -> torch.Tensor:
    out = torch.empty(array.shape, dtype=torch.uint8, device=device)
    for i in range(0, len(array), COPY_CHUNK):
        out[i:i + COPY_CHUNK].copy_(torch.from_numpy(np.ascontiguousarray(array[i:i + COPY_CHUNK])))
    return out


def memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """``model`` with its 4-D weights in channels-last memory format (in place), when asked for."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


def as_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D input batch in channels-last memory format, when asked for; anything else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def training_forward(model: torch.nn.Module, compile_model: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the training steps call: ``torch.compile(model)`` when asked for, else the model itself. The compiled
    wrapper shares the model's parameters; the model stays the one object that is saved, loaded and evaluated, so
    checkpoint keys never get the wrapper's ``_orig_mod.`` prefix."""
    return torch.compile(model) if compile_model else model


__all__ = ["DEVICE_DATA_SHARE", "DeviceArrays", "array_bytes", "as_input", "device_arrays", "memory_format",
           "training_forward"]
