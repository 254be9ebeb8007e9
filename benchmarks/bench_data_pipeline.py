"""Data pipeline: images per second from the prepared cache (memory-mapped, 'paper' augmentation, batched) versus
decoding the original files each epoch (a typical Dataset + DataLoader), with 0/1/2 loader workers.
Target: >= 5x over decoding the originals.

    python benchmarks/bench_data_pipeline.py --size 512 --images 200
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from _common import data_root, device_name, parser, sync

from segarena.data import DATASETS, discover
from segarena.data.augment import AUGMENTATIONS, augment, normalize_unit, to_unit
from segarena.data.prepare import prepare

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DecodeEachEpoch(Dataset):
    """The baseline: decode the JPEG image and mask, resize, flip — per sample, per epoch."""

    def __init__(self, cases, size: int) -> None:
        self.cases, self.size = cases, size
        self.adapter = DATASETS.get("kvasir-seg")

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int):
        from PIL import Image

        c = self.cases[i]
        img = Image.open(c.image).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        m = Image.fromarray(self.adapter.read_mask(c)).resize((self.size, self.size), Image.NEAREST)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
        x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        y = torch.from_numpy(np.asarray(m).copy()).long()
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x, y


def decode_rate(cases, size: int, batch: int, workers: int) -> float:
    loader = DataLoader(DecodeEachEpoch(cases, size), batch_size=batch, shuffle=True, num_workers=workers)
    t = time.perf_counter()
    n = sum(len(x) for x, _ in loader)
    return n / (time.perf_counter() - t)


def prepared_rate(size: int, batch: int, limit: int, device: torch.device, preset_name: str = "paper") -> float:
    data = prepare("kvasir-seg", size, data_root(), limit=limit)
    gen = torch.Generator().manual_seed(0)
    preset = AUGMENTATIONS.get(preset_name)
    order = torch.randperm(len(data), generator=gen).numpy()
    sync(device)
    t = time.perf_counter()
    for b in range(0, len(order), batch):
        idx = np.sort(order[b:b + batch])
        x = to_unit(torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(device))
        y = torch.from_numpy(np.ascontiguousarray(data.masks[idx])).to(device).long()
        x, y = augment(x, y, preset, gen)
        normalize_unit(x, MEAN, STD)
    sync(device)
    return len(order) / (time.perf_counter() - t)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (min/median/max printed)")
    a = p.parse_args()
    if a.tiny:
        a.size, a.images, a.repeats = 64, 16, 1
    device = torch.device(a.device)
    _, cases, _ = discover("kvasir-seg", data_root(), limit=a.images)
    prepare("kvasir-seg", a.size, data_root(), limit=a.images)  # built once, outside the timing
    workers = [0] if a.tiny else [0, 1, 2]
    print(f"device: {device_name(device)}; {a.images} Kvasir-SEG images at {a.size}x{a.size}, batch {a.batch}; "
          f"{a.repeats} interleaved rounds (each: light, paper, decoding with {'/'.join(map(str, workers))} "
          "loader workers)")
    rounds = []
    for _ in range(a.repeats):  # interleaved: every configuration once per round, so load changes hit all alike
        r = {"light": prepared_rate(a.size, a.batch, a.images, device, "light"),
             "paper": prepared_rate(a.size, a.batch, a.images, device, "paper")}
        r |= {w: decode_rate(cases, a.size, a.batch, w) for w in workers}
        rounds.append(r)

    def mmm(values) -> str:
        return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"

    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"prepared cache + 'light' augmentation (flips, the baseline's work) on {device.type}: "
          f"{med['light']:.0f} images/s (median)")
    print(f"prepared cache + 'paper' augmentation (kornia: blur, affine, colour, flips) on {device.type}: "
          f"{med['paper']:.0f} images/s (median)")
    for w in workers:
        print(f"decoding originals, {w} loader worker(s): {med[w]:.0f} images/s (median)")
    best = [max(r[w] for w in workers) for r in rounds]  # the baseline at its best worker count, per round
    print(f"ratio prepared / best decoding, min / median / max over rounds: "
          f"{mmm([r['light'] / b for r, b in zip(rounds, best)])}x with the same augmentation (target >= 5x); "
          f"{mmm([r['paper'] / b for r, b in zip(rounds, best)])}x even with the full 'paper' augmentation")


if __name__ == "__main__":
    main()
