"""Pretrained-weight loading: resolve a checkpoint (cache, URL or Hugging Face hub, offline mode), read it safely,
map official keys onto our modules with a converter, and load strictly.

Safety: ``.safetensors`` is preferred; torch pickles are read with ``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from .._errors import SegarenaError
from ..data.download import cache_dir, fetch, is_offline
from .card import Weights

Converter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def weights_dir() -> Path:
    return Path(os.environ.get("SEGARENA_WEIGHTS") or cache_dir() / "weights")


def resolve(weights: Weights, local: str | os.PathLike | None = None) -> Path:
    """Local path of a checkpoint: ``local`` if given, else the cache, else a download (unless offline)."""
    if local is not None:
        p = Path(local)
        if not p.is_file():
            raise SegarenaError(f"checkpoint {p} not found", fix="check the path given as pretrained weights")
        return p
    src = weights.source
    if src.startswith("hf-hub:"):
        repo, _, filename = src[len("hf-hub:"):].partition("::")
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:  # pragma: no cover - huggingface_hub comes with timm
            raise SegarenaError("huggingface_hub is needed for hub weights", fix="pip install huggingface_hub") from None
        try:
            return Path(hf_hub_download(repo, filename or "model.safetensors", local_files_only=is_offline()))
        except Exception as exc:  # noqa: BLE001 - hub errors come in many classes
            raise SegarenaError(f"weights {src} are not available ({type(exc).__name__})",
                                fix="connect to the network once to cache them, or pass a local checkpoint file") from None
    if src.startswith("package:"):
        return package_file(src, weights.sha256)
    if src.startswith(("http://", "https://", "file://")):
        name = src.rstrip("/").split("/")[-1].split("?")[0]
        return fetch(src, weights_dir() / name, weights.sha256)
    raise SegarenaError(f"weights source {src!r} cannot be resolved here",
                        fix="use an https:// URL, hf-hub:<repo>::<file>, package:<module>/<file>, or a local file")


def package_file(source: str, sha256: str | None) -> Path:
    """``package:<module>/<path>``: a checkpoint shipped inside an installed Python package (found with
    importlib, never imported), checked against its pinned ``sha256`` before use."""
    import importlib.resources
    import importlib.util

    from ..data.download import sha256_file

    module, _, rel = source[len("package:"):].partition("/")
    dist = module.replace("_", "-")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SegarenaError(f"weights {source}: the package {module!r} is not installed",
                            fix=f"pip install {dist}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise SegarenaError(f"weights {source}: {path} is missing from the installed package",
                            fix=f"reinstall it: pip install --force-reinstall {dist}")
    if sha256 and sha256_file(path) != sha256:
        raise SegarenaError(f"weights {source}: {path} does not match its pinned sha256 {sha256[:12]}…",
                            fix=f"the file was altered or is another release; reinstall it: "
                                f"pip install --force-reinstall {dist}")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise SegarenaError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})".split("\n")[0],
                            fix="use a .safetensors or a plain tensor state dict (.pth) file") from None
    for key in ("state_dict", "model", "module", "model_state"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise SegarenaError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_into(module: nn.Module, state: dict[str, torch.Tensor], *, what: str,
              ignore: tuple[str, ...] = ()) -> None:
    """Strict load: every key of ``module`` must be filled and every checkpoint key used (except ``ignore``
    prefixes, e.g. a classifier head). Mismatches raise with the key lists."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape:
        def fmt(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        parts = [f"missing: {fmt(missing)}" if missing else "", f"unexpected: {fmt(unexpected)}" if unexpected else "",
                 f"shape mismatch: {fmt(shape)}" if shape else ""]
        raise SegarenaError(f"checkpoint does not match {what}: " + "; ".join(p for p in parts if p),
                            fix="use the official checkpoint of this exact variant")
    # nn.Module's own loader: some libraries override load_state_dict without a ``strict`` argument (smp's MiT
    # encoder drops classifier keys there); the key sets were compared above, so the strict base method is right
    nn.Module.load_state_dict(module, state, strict=True)


def load_pretrained(net: nn.Module, weights: Weights, converter: Converter | None = None,
                    local: str | os.PathLike | None = None, ignore: tuple[str, ...] = ()) -> None:
    """Resolve, read, convert and strictly load ``weights`` into ``net.<weights.target>``."""
    state = read_state_dict(resolve(weights, local))
    if converter is not None:
        state = converter(state)
    target = net.get_submodule(weights.target) if weights.target else net
    load_into(target, state, what=f"{type(net).__name__}.{weights.target or ''}".rstrip("."), ignore=ignore)


# ---- helpers shared by the converters of the zoo ------------------------------------------------------------
def strip_prefixes(state: dict[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.``, ``backbone.``, ...) from every key that has them."""
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def adapt_first_conv(state: dict[str, torch.Tensor], key: str, in_channels: int) -> dict[str, torch.Tensor]:
    """Fit an RGB first-layer kernel to ``in_channels`` inputs, in place (the dict is also returned): summed for
    one channel (a grey image seen as R=G=B gives the same response), tiled and rescaled otherwise — timm's
    ``adapt_input_conv`` rule."""
    if key in state and state[key].shape[1] != in_channels:
        from timm.models import adapt_input_conv

        state[key] = adapt_input_conv(in_channels, state[key].float())
    return state


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], *, what: str, keep_init: tuple[str, ...] = (),
                 ignore: tuple[str, ...] = ()) -> list[str]:
    """Strict load with named exceptions: keys of ``module`` under a ``keep_init`` prefix that the checkpoint does
    not have (decoder-only parts, layers a paper added) keep their initialisation; every other key must come from
    the checkpoint, and every checkpoint key (except ``ignore`` prefixes) must be used. Returns the kept keys."""
    own = module.state_dict()
    kept = sorted(k for k in own if k not in state and k.startswith(keep_init)) if keep_init else []
    load_into(module, {**state, **{k: own[k] for k in kept}}, what=what, ignore=ignore)
    return kept


def local_file(pretrained: bool | str, names: Iterable[str]) -> str | None:
    """``pretrained`` given as a path: the file itself, or the first of ``names`` inside that folder."""
    if not isinstance(pretrained, (str, os.PathLike)):
        return None
    p = Path(pretrained)
    if p.is_dir():
        for n in names:
            if (p / n).is_file():
                return str(p / n)
        raise SegarenaError(f"none of {', '.join(names)} found in {p}",
                            fix="download the official checkpoint(s) into that folder")
    return str(p)
