"""GPU training throughput, ready for a GPU machine: images per second for SegFormer-B3 and U-Net at 512x512,
batch 8, with AMP, segarena's loop against the bare PyTorch loop (same model, batch and data).

    python benchmarks/bench_gpu.py                 # needs CUDA and the Kvasir-SEG data (SEGARENA_DATA_ROOT)
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from _common import data_root, device_name

from bench_train_overhead import bare_loop_step_time, segarena_step_time
from segarena.data.prepare import prepare


def main() -> None:
    tiny = "--tiny" in sys.argv
    if not torch.cuda.is_available() and not tiny:
        sys.exit("bench_gpu.py needs CUDA (use --tiny to check the script on CPU)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, batch, steps = (32, 2, 2) if tiny else (512, 8, 30)
    models = ("tiny-unet",) if tiny else ("segformer-b3", "unet")
    limit = batch * (steps + 3) * 2
    data = prepare("kvasir-seg", size, data_root(), limit=limit)
    imgs, msks = np.array(data.images[: batch * 8]), np.array(data.masks[: batch * 8])
    amp = device.type == "cuda"
    print(f"device: {device_name(device)}; {size}x{size}, batch {batch}, AMP {amp}")
    for m in models:
        bare = bare_loop_step_time(m, imgs, msks, batch, steps, device, amp)
        ours = segarena_step_time(m, size, batch, steps, device, amp, limit, "paper")
        print(f"{m:<14} bare {batch / bare:7.1f} img/s   segarena (with augmentation) {batch / ours:7.1f} img/s   "
              f"ratio {ours / bare:.3f}")


if __name__ == "__main__":
    main()
