"""Checkpoints: weights as safetensors plus the JSON that rebuilds the model; resume state for interrupted runs.

Resume state is a torch file of plain tensors/numbers only, read back with ``torch.load(weights_only=True)``
(optimizer state has no safetensors layout).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._errors import SegarenaError
from .._io import atomic_write, read_json, write_json
from ..models import SegModel, create_model


def save_weights(model: SegModel, folder: Path, info: dict[str, Any]) -> None:
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.safetensors", lambda tmp: save_model(model.net, str(tmp)), suffix=".safetensors")
    write_json(folder / "model.json", info)


def load_weights(model: SegModel, folder: Path) -> None:
    from safetensors.torch import load_model

    path = folder / "model.safetensors"
    if not path.is_file():
        raise SegarenaError(f"{path} not found", fix="run it first; if the run is complete, its checkpoint was "
                                                    "deleted: delete the run folder and rerun to train it again")
    missing, unexpected = load_model(model.net, str(path), strict=False)
    if missing or unexpected:
        raise SegarenaError(f"{path} does not match model {model.card.name!r} (missing {missing[:3]}, unexpected "
                            f"{unexpected[:3]})", fix="rebuild the model with the config in model.json")


def build_from_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[SegModel, dict[str, Any]]:
    """Rebuild a trained model from ``checkpoint/`` (``model.json`` + ``model.safetensors``)."""
    folder = Path(folder)
    info = read_json(folder / "model.json")
    model = create_model(info["model"], info["num_outputs"], in_channels=info["in_channels"], pretrained=False,
                         **info.get("kwargs", {}))
    load_weights(model, folder)
    return model.to(device).eval(), info


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp), suffix=".pt")


def load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable resume file means: start the run over
        path.unlink(missing_ok=True)
        return None
