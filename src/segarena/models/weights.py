"""Pretrained-weight loading: resolve a checkpoint (cache, URL or Hugging Face hub, offline mode), read it safely,
map official keys onto our modules with a converter, and load strictly.

Safety: nothing in a checkpoint is ever executed. ``.safetensors`` is preferred; torch files (zip or legacy
format) are read with ``torch.load(weights_only=True)`` only: torch's restricted unpickler, which builds tensors
and plain containers and calls nothing else. Training checkpoints that pickle a config object beside the weights
(a yacs ``CfgNode``, an ``argparse.Namespace``) name a class that this unpickler refuses; such a name is mapped to
an inert stand-in (an empty mapping that never imports or calls the named class) and the file is read again, still
with ``weights_only=True``. A file that still cannot be read safely is refused with the fix: convert it once to
safetensors on a machine where you trust it (``segarena convert-weights``, see docs/models.md).
Downloads are checked against their pinned sha256 before they are read (``data.download.fetch``).
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from .._errors import SegarenaError
from .._paths import is_offline
from ..data.download import cache_dir, fetch
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
            path = Path(hf_hub_download(repo, filename or "model.safetensors", local_files_only=is_offline()))
        except Exception as exc:  # noqa: BLE001 - hub errors come in many classes
            raise SegarenaError(f"weights {src} are not available ({type(exc).__name__})",
                                fix="connect to the network once to cache them, or pass a local checkpoint file") from None
        if weights.sha256 is None:  # the hub cache names an LFS blob by the sha256 its pointer declares
            blob = path.resolve().name
            return verify_digest(path, blob, src) if re.fullmatch(r"[0-9a-f]{64}", blob) else path
        return verify_digest(path, weights.sha256, src)
    if src.startswith("package:"):
        return package_file(src, weights.sha256)
    if src.startswith(("http://", "https://", "file://")):
        name = src.rstrip("/").split("/")[-1].split("?")[0]
        path = fetch(src, weights_dir() / name, weights.sha256)
        if weights.sha256 is None:
            prefix = _FILENAME_DIGEST.search(name)
            if prefix:  # torchvision / OpenMMLab convention: the name carries the start of the sha256
                verify_digest(path, prefix.group(1), src, prefix=True)
        return path
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


_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")
_MAX_STAND_INS = 32


def _stand_in(full_name: str) -> type:
    """An inert class registered under ``full_name`` for torch's restricted unpickler: constructing it (NEWOBJ or
    a call) returns an empty ``OrderedDict``, which the unpickler may fill with plain data; the real class is never
    imported and nothing from the file runs."""
    module, _, name = full_name.rpartition(".")

    def __new__(cls, *args: object, **kwargs: object) -> OrderedDict:
        return OrderedDict()

    return type(name, (), {"__new__": __new__, "__module__": module, "__qualname__": name})


def _torch_load_safe(path: Path) -> object:
    """``torch.load(weights_only=True)``, with inert stand-ins for the non-tensor globals it names (config
    objects of training checkpoints); gives up after a bounded number of them."""
    import pickle

    stand_ins: list[tuple[type, str]] = []
    while True:
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            m = _UNSUPPORTED_GLOBAL.search(str(exc))
            # torch names builtins without their module: those (exec, eval, getattr, ...) are never a config
            # object, and a checkpoint that calls one is hostile or broken: refuse it
            if m is None or "." not in m.group(1) or len(stand_ins) >= _MAX_STAND_INS or \
                    any(n == m.group(1) for _, n in stand_ins):
                raise
            stand_ins.append((_stand_in(m.group(1)), m.group(1)))


CONVERT_FIX = ("if you trust this file, convert it once to safetensors: "
               "segarena convert-weights {path} --out {out} --trust-file, then pass the .safetensors file")


#: ``resnet50-0676ba61.pth``, ``mscan_t_20230227-119e8c9f.pth``: the hex after the last ``-`` is a sha256 prefix
_FILENAME_DIGEST = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin)$")


def verify_digest(path: Path, expected: str | None, what: str, *, prefix: bool = False) -> Path:
    """Check ``path`` against its pinned sha256 (or, with ``prefix``, the sha256 prefix its official file name
    carries, as ``torch.hub`` does) before anything reads it; a mismatch deletes nothing of the user's and is
    refused with the fix. ``expected=None``: nothing is pinned (docs/models.md lists those weights)."""
    if not expected:
        return path
    from ..data.download import sha256_file

    digest = sha256_file(path)
    if not (digest.startswith(expected) if prefix else digest == expected):
        raise SegarenaError(f"{path}: sha256 {digest[:16]}… does not match the pinned {expected[:16]}… of {what}",
                            fix=f"delete {path} so it is downloaded again; if it persists the file changed upstream "
                                "— report it")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint, read without running any code from it (module docstring). Wrapper keys
    (``state_dict``, ``model``, ``module``, ``model_state``) are unwrapped; non-tensor entries dropped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SegarenaError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})",
                                fix="download or convert the checkpoint again") from None
    try:
        obj = _torch_load_safe(path)
    except Exception as exc:  # noqa: BLE001 - torch raises many classes for foreign or damaged files
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch colours part of its message
        named = re.search(r"GLOBAL ([\w.]+)", text)
        if named:
            name = named.group(1) if "." in named.group(1) else f"builtins.{named.group(1)}"  # torch drops it
            why = f"it references {name}, which the restricted unpickler does not run"
        else:
            why = f"{type(exc).__name__}: " + next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:160]
        out = path.with_suffix(".safetensors")
        raise SegarenaError(f"{path}: cannot be read safely as a checkpoint ({why})",
                            fix=CONVERT_FIX.format(path=path, out=out)) from None
    state = _tensors_of(obj, path)
    if not state:
        raise SegarenaError(f"{path}: holds no tensors", fix="pass the checkpoint file of the weights themselves")
    return state


def _tensors_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The named tensors of a loaded checkpoint: unwrapped from ``state_dict``/``model``/``module``/``model_state``
    containers, non-tensor entries dropped; anything that is not a mapping is refused."""
    for key in ("state_dict", "model", "module", "model_state"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise SegarenaError(f"{path}: expected a state dict, found {type(obj).__name__}",
                            fix="pass a checkpoint that holds the model's tensors (a state dict)")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def convert_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike, *, trust_file: bool = False) -> int:
    """Write the tensors of checkpoint ``src`` to ``dst`` (safetensors); returns how many tensors were written.

    Without ``trust_file`` the file is read exactly as loading reads it (nothing executes). With it, the file is
    unpickled by plain ``torch.load`` — this RUNS whatever code the file contains, so use it only for a file from
    a source you trust, once, and load the safetensors file from then on."""
    from safetensors.torch import save_file

    from .._io import atomic_write

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise SegarenaError(f"{src} not found", fix="check the checkpoint path")
    if trust_file:
        try:
            obj = torch.load(src, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise SegarenaError(f"{src}: not a torch checkpoint ({type(exc).__name__})",
                                fix="pass the checkpoint file itself") from None
        state = _tensors_of(obj, src)
    else:
        state = read_state_dict(src)
    if not state:
        raise SegarenaError(f"{src}: holds no tensors", fix="pass the checkpoint file of the weights themselves")
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}  # shared storages cannot be saved
    atomic_write(dst, lambda tmp: save_file(state, str(tmp)), suffix=".safetensors")
    return len(state)


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
