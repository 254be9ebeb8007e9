"""The prepared cache: each dataset decoded once into memory-mappable arrays at the network size, plus the
original-resolution masks for evaluation and the hashes used for duplicate detection.

Layout of ``<cache>/prepared/<dataset>-<fingerprint>/`` (written to a staging folder, renamed when complete, so a
crash never leaves a half-prepared cache that looks complete):
  index.json            case ids, groups, original sizes, meta, byte SHA-256 and perceptual hash of each image
  images_<S>.npy        uint8 [N, S, S, C]   (one file per prepared size)
  masks_<S>.npy         uint8 [N, S, S]      (nearest-neighbour resized label maps)
  native/<i>.png        the label map at the image's original size (lossless)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError
from .._io import write_json
from . import DATASETS, discover
from .card import Case, DatasetCard
from .download import cache_dir

PREPARE_VERSION = 1


@dataclass
class PreparedDataset:
    """Memory-mapped arrays of one dataset at one size, plus per-case metadata."""

    card: DatasetCard
    folder: Path
    size: int
    index: dict[str, Any]
    images: np.ndarray  # uint8 [N, S, S, C] (memmap)
    masks: np.ndarray  # uint8 [N, S, S] (memmap)

    @property
    def ids(self) -> list[str]:
        return self.index["ids"]

    @property
    def groups(self) -> list[str]:
        return self.index["groups"]

    def __len__(self) -> int:
        return len(self.ids)

    def native_mask(self, i: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.folder / "native" / f"{i}.png") as im:
            return np.asarray(im, dtype=np.uint8)

    def native_shape(self, i: int) -> tuple[int, int]:
        h, w = self.index["shapes"][i]
        return int(h), int(w)

    def meta(self, i: int) -> dict[str, Any]:
        return self.index["meta"][i]


def _fingerprint(name: str, options: dict[str, Any], cases: list[Case], channels: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": PREPARE_VERSION, "name": name, "options": options, "channels": channels},
                        sort_keys=True, default=str).encode())
    for c in cases:
        for p in (c.image, *c.masks):
            st = p.stat()
            h.update(f"{c.id}|{p.name}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def _decode(adapter, case: Case, channels: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, int]:
    import imagehash
    from PIL import Image

    img = adapter.load_image(case, channels)
    mask = adapter.read_mask(case)
    if mask.shape != img.shape[:2]:
        raise DataError(f"{case.masks[0]}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                        f"{case.image} {img.shape[1]}x{img.shape[0]}",
                        fix="the mask must have the image's size; fix or remove this case")
    pil = Image.fromarray(img[..., 0] if channels == 1 else img)
    small = np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=3.0), dtype=np.uint8)
    small = small[..., None] if small.ndim == 2 else small
    msmall = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST), dtype=np.uint8)
    sha = hashlib.sha256(case.image.read_bytes()).hexdigest()
    phash = int(str(imagehash.phash(pil.convert("L"))), 16)
    return small, msmall, mask, sha, phash


def prepared_root() -> Path:
    return cache_dir() / "prepared"


def prepare(name: str, size: int, root: str | os.PathLike | None = None, options: dict[str, Any] | None = None,
            limit: int | None = None, progress: bool = False, workers: int = 2, *,
            download: bool | None = None) -> PreparedDataset:
    """Decode ``name`` once at ``size``; later calls with the same data reuse the memory-mapped result.
    ``download=False`` never downloads a missing dataset (``None``: only when ``--download`` asked for it)."""
    options = dict(options or {})
    card, cases, _ = discover(name, root, options, limit=limit, download=download)
    adapter = DATASETS.get(name)
    num_classes = card.num_classes
    fp = _fingerprint(name, options, cases, card.channels)
    folder = prepared_root() / f"{name}-{fp}"
    img_path, msk_path = folder / f"images_{size}.npy", folder / f"masks_{size}.npy"
    if (folder / "index.json").is_file() and img_path.is_file() and msk_path.is_file():
        return _open(card, folder, size)
    staging = folder.with_name(f".{folder.name}.{size}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "native").mkdir(parents=True)
    n, c = len(cases), card.channels
    images = np.lib.format.open_memmap(staging / img_path.name, mode="w+", dtype=np.uint8, shape=(n, size, size, c))
    masks = np.lib.format.open_memmap(staging / msk_path.name, mode="w+", dtype=np.uint8, shape=(n, size, size))
    shapes, shas, phashes = [None] * n, [None] * n, [None] * n
    have_native = (folder / "native").is_dir()
    try:
        from PIL import Image

        from ..progress import progress_bar

        def work(i: int) -> int:
            small, msmall, mask, sha, ph = _decode(adapter, cases[i], c, size)
            bad = np.unique(mask[mask >= num_classes])
            if bad.size:
                raise DataError(f"{cases[i].masks[0]}: unexpected mask values {bad[:8].tolist()} for "
                                f"{num_classes} classes ({', '.join(card.labels)})",
                                fix="map mask values to 0..K-1 (for your own data: data.options.mask_values)")
            images[i], masks[i] = small, msmall
            shapes[i], shas[i], phashes[i] = mask.shape, sha, f"{ph:016x}"
            if not have_native:
                Image.fromarray(mask).save(staging / "native" / f"{i}.png", optimize=False, compress_level=1)
            return i

        with ThreadPoolExecutor(max(1, workers)) as pool:
            it = pool.map(work, range(n))
            for _ in progress_bar(it, total=n, desc=f"prepare {name} @{size}", enabled=progress, unit="image"):
                pass
        images.flush()
        masks.flush()
        index = {
            "version": PREPARE_VERSION, "dataset": name, "options": options, "fingerprint": fp,
            "ids": [cs.id for cs in cases], "groups": [cs.group_id for cs in cases],
            "images": [str(cs.image) for cs in cases], "shapes": shapes, "sha256": shas, "phash": phashes,
            "meta": [_jsonable(cs.meta) for cs in cases], "labels": list(card.labels), "channels": c,
        }
        folder.mkdir(parents=True, exist_ok=True)
        for p in (img_path, msk_path):
            os.replace(staging / p.name, p)
        if not have_native:
            if (folder / "native").exists():
                shutil.rmtree(folder / "native")
            os.replace(staging / "native", folder / "native")
        write_json(folder / "index.json", index)  # last: its presence marks the cache complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _open(card, folder, size)


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(meta, default=str))


def _open(card: DatasetCard, folder: Path, size: int) -> PreparedDataset:
    index = json.loads((folder / "index.json").read_text())
    images = np.load(folder / f"images_{size}.npy", mmap_mode="r")
    masks = np.load(folder / f"masks_{size}.npy", mmap_mode="r")
    return PreparedDataset(card=card, folder=folder, size=size, index=index, images=images, masks=masks)
