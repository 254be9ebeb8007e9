"""The checks of the study preflight (:mod:`.plan`) that look outside the code: where each pretrained checkpoint
would come from, and whether each dataset is on disk and decodes."""
from __future__ import annotations

import os
from typing import Any

from .._errors import SegarenaError


# ---- pretrained sources -------------------------------------------------------------------------------------
def weight_status(model: str, tag: str, weights: Any, pretrained: bool | str) -> dict[str, Any]:
    """Where ``model``'s checkpoint would come from: ``local``, ``cached``, ``downloadable`` (URL, checksum) or
    ``missing`` (with the fix)."""
    from pathlib import Path

    from .._paths import is_offline
    from ..models.weights import weights_dir

    row: dict[str, Any] = {"model": model, "tag": tag, "source": weights.source, "license": weights.license,
                           "sha256": weights.sha256, "url": None, "path": None, "fix": None}
    fix = (f"connect once with the network on (unset HF_HUB_OFFLINE / SEGARENA_OFFLINE) to cache it, or set "
           f"model_overrides.{model}.pretrained to a local official checkpoint")
    if isinstance(pretrained, str):
        p = Path(pretrained).expanduser()
        ok = p.exists()
        return {**row, "status": "local" if ok else "missing", "path": str(p),
                "fix": None if ok else f"{p} does not exist; download the official checkpoint there"}
    src = weights.source
    if src.startswith("hf-hub:"):
        repo, _, filename = src[len("hf-hub:"):].partition("::")
        filename = filename or "model.safetensors"
        row["url"] = f"https://huggingface.co/{repo}/resolve/main/{filename}"
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(repo, filename)
        except Exception:  # noqa: BLE001 - no hub client or a broken cache: not cached
            hit = None
        if isinstance(hit, str):
            return {**row, "status": "cached", "path": hit}
    elif src.startswith(("http://", "https://", "file://")):
        row["url"] = src
        cached = weights_dir() / src.rstrip("/").split("/")[-1].split("?")[0]
        if cached.is_file():
            return {**row, "status": "cached", "path": str(cached)}
    else:
        return {**row, "status": "missing", "fix": f"weights source {src!r} cannot be resolved; {fix}"}
    if is_offline():
        return {**row, "status": "missing", "fix": f"not cached and offline: {fix}"}
    return {**row, "status": "downloadable"}


# ---- datasets ---------------------------------------------------------------------------------------------
def check_data(name: str, root: str | os.PathLike | None, options: dict[str, Any],
               limit: int | None = None) -> dict[str, Any]:
    """Present and decodable? Lists the cases and decodes the first one (image and mask) — fast, no full scan."""
    import numpy as np

    from .._errors import DataError
    from ..data import DATASETS, dataset_root
    from .._paths import is_offline

    adapter = DATASETS.get(name)
    card = adapter.card_with(options)
    out: dict[str, Any] = {"dataset": name, "status": "missing", "folder": None, "cases": None, "problem": None,
                           "fix": None}
    try:
        folder = dataset_root(name, root, options, download=False)
    except DataError as exc:
        if card.download is not None and not is_offline():
            return {**out, "status": "downloadable", "url": card.download.url}
        return {**out, "problem": exc.message, "fix": exc.fix}
    out["folder"] = str(folder)
    try:
        kw = options if not adapter.card.folder else {}
        cases = sorted(adapter.find_cases(folder, **kw), key=lambda c: c.id)
        if not cases:
            raise DataError(f"dataset {name!r}: no cases found in {folder}", fix="check the dataset folder")
        first = cases[0]
        img = adapter.load_image(first, card.channels)
        mask = np.asarray(adapter.read_mask(first))
        if img.shape[:2] != mask.shape[:2]:
            raise DataError(f"dataset {name!r}: case {first.id} has a {img.shape[:2]} image and a {mask.shape[:2]} "
                            f"mask", fix="check the dataset's files")
        if mask.size and int(mask.max()) >= card.num_classes:
            raise DataError(f"dataset {name!r}: case {first.id} has label {int(mask.max())} but the dataset has "
                            f"{card.num_classes} classes", fix="check the mask files")
    except SegarenaError as exc:
        return {**out, "status": "broken", "problem": exc.message, "fix": exc.fix}
    except Exception as exc:  # noqa: BLE001 - an undecodable file is this dataset's problem, not a crash
        return {**out, "status": "broken", "problem": f"dataset {name!r} does not decode: {type(exc).__name__}: "
                f"{exc}".splitlines()[0], "fix": "check the dataset's files (segarena datasets check)"}
    n = len(cases) if limit is None else min(limit, len(cases))
    return {**out, "status": "present", "cases": n, "sample": {"id": first.id, "image": list(img.shape)}}
