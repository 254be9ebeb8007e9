"""Using a trained model: rebuild it from a run folder or an exported bundle, and predict label maps for new images.

Preprocessing is exactly the one the run was trained and tested with (``data/prepare.py``): decode to uint8
(16-bit images scaled by their own maximum), convert to the checkpoint's channel count, resize to
``input_size`` x ``input_size`` with PIL bilinear (``reducing_gap=3.0``), scale to [0, 1], normalize with the
model's mean/std. Logits are upsampled bilinearly (``align_corners=False``) to each image's native size and turned
into labels the way the test evaluation does (one logit: ``logit > 0``; K logits: argmax). So ``predict`` on a
run's own test images reproduces its native-resolution test records.

Weights are read from safetensors only (no pickle); rebuilding needs the model's code (a registered segarena model)
and nothing of the original study or data.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._errors import ConfigError, DataError, SegarenaError
from ._io import atomic_write, read_json, write_json
from .protocol.precision import autocast, pick_device, use_amp

#: what :meth:`TrainedModel.predict` takes: a file path, a PIL image, or an array ``[H, W]`` / ``[H, W, C]``
ImageLike = Any

#: palette colours of classes 1, 2, ... in multi-class masks (matplotlib's tab10 order; background is black)
CLASS_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                 (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))

#: how images are resized to the network size (recorded in bundles; mirrors data/prepare.py)
RESIZE_RULE = "PIL bilinear to input_size x input_size (reducing_gap=3.0), aspect ratio not kept"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
#: 2-D NIfTI inputs (nnU-Net's ``imagesTr/case_0000.nii.gz``), read by nibabel
NIFTI_ENDINGS = (".nii.gz", ".nii")
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "segarena-bundle"


class TrainedModel:
    """A trained segmentation model with the preprocessing it was trained with.

    ``model`` is the :class:`~segarena.models.SegModel` (logits ``[N, K, H, W]``), ``labels`` the class names
    (background first), ``info`` the checkpoint/bundle metadata. Build it with :func:`load_trained`.
    """

    def __init__(self, model: torch.nn.Module, info: dict[str, Any], source: Path, device: torch.device) -> None:
        self.model = model.eval()
        self.info = info
        self.source = source
        self.device = device

    labels = property(lambda self: tuple(self.info["labels"]), doc="class names, background first")
    input_size = property(lambda self: int(self.info["input_size"]), doc="network input side in pixels")
    in_channels = property(lambda self: int(self.info["in_channels"]), doc="1 (grayscale) or 3 (RGB)")
    num_outputs = property(lambda self: int(self.info["num_outputs"]), doc="logits: 1 (sigmoid) or K (softmax)")

    def __repr__(self) -> str:
        return (f"TrainedModel({self.info['model']!r}, labels={self.labels}, input_size={self.input_size}, "
                f"source={str(self.source)!r})")

    # -- preprocessing ---------------------------------------------------------------------------------------
    def to_uint8(self, image: np.ndarray) -> np.ndarray:
        """Any 2-D/3-D array -> uint8 ``[H, W, in_channels]`` (as ``data.io.read_image`` decodes files)."""
        from PIL import Image

        from .data.io import _to_uint8

        arr = np.asarray(image)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise DataError(f"an array of {arr.dtype} values (shape {arr.shape}) is not an image",
                            fix="pass a file path, a PIL image or a numeric array [H, W(, C)]")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape:
            raise DataError(f"image array of shape {arr.shape} is not an image",
                            fix="pass [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
        if arr.dtype != np.uint8:
            if arr.ndim == 3 and arr.shape[2] == 4:
                arr = arr[..., :3]
            arr = _to_uint8(arr)
        pil = Image.fromarray(arr)
        out = np.asarray(pil.convert("RGB" if self.in_channels == 3 else "L"), dtype=np.uint8)
        return np.ascontiguousarray(out if out.ndim == 3 else out[..., None])

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 ``[H, W, C]`` images -> normalized float batch ``[N, C, S, S]`` on the model's device."""
        from PIL import Image

        from .data.augment import normalize

        s = self.input_size
        small = []
        for img in images:
            pil = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
            arr = np.asarray(pil.resize((s, s), Image.BILINEAR, reducing_gap=3.0), dtype=np.uint8)
            small.append(arr if arr.ndim == 3 else arr[..., None])
        x = torch.from_numpy(np.stack(small)).to(self.device)
        return normalize(x, tuple(self.info["mean"]), tuple(self.info["std"]))

    # -- prediction ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def native_logits(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        """uint8 images -> one float32 logit tensor ``[K, H, W]`` per image, at the image's own size."""
        x = self.preprocess(images)
        with self._autocast():
            logits = self.model(x)
        logits = logits.float()
        return [F.interpolate(logits[j:j + 1], size=img.shape[:2], mode="bilinear", align_corners=False)[0]
                for j, img in enumerate(images)]

    def load_image(self, image: ImageLike) -> np.ndarray:
        """A file path, a PIL image or an array -> uint8 ``[H, W, in_channels]``, decoded as ``segarena predict``
        decodes files (16-bit by its own maximum, RGBA without alpha, palette images through RGB)."""
        if isinstance(image, (str, Path)):
            return _read(Path(image).expanduser(), self.in_channels)
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow is a core dependency
            Image = None
        if Image is not None and isinstance(image, Image.Image):
            if image.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                image = image.convert("RGBA" if "A" in image.mode else "RGB" if image.mode != "1" else "L")
            image = np.asarray(image)
        if not isinstance(image, np.ndarray) and not hasattr(image, "__array__"):
            raise DataError(f"cannot predict on a {type(image).__name__}",
                            fix="pass a file path, a PIL image or a numpy array [H, W(, C)]")
        return self.to_uint8(np.asarray(image))

    def predict(self, image: ImageLike) -> np.ndarray:
        """Label map ``uint8 [H, W]`` (0 = background, class indices as in ``labels``) at the image's size.
        ``image``: a file path, a PIL image or an array (see :meth:`load_image`)."""
        return labels_from_logits(self.native_logits([self.load_image(image)])[0])

    def predict_proba(self, image: ImageLike) -> np.ndarray:
        """Probabilities ``float32 [K-1, H, W]`` of the foreground classes (sigmoid for one logit, else softmax)."""
        return foreground_probabilities(self.native_logits([self.load_image(image)])[0])

    def _autocast(self):
        """Mixed precision as in the run's test evaluation (:func:`~segarena.protocol.precision.use_amp`): on CUDA,
        only if its protocol used AMP and the card does not ask for fp32 (SegNeXt)."""
        return autocast(self.device, use_amp(self.info.get("amp", True), self.device, getattr(self.model, "card", None)))


def labels_from_logits(logits: torch.Tensor) -> np.ndarray:
    """``[K, H, W]`` logits -> uint8 label map (the protocol's ``to_labels``)."""
    from .protocol.losses import to_labels

    return to_labels(logits[None])[0].to(torch.uint8).cpu().numpy()


def foreground_probabilities(logits: torch.Tensor) -> np.ndarray:
    """``[K, H, W]`` logits -> float32 ``[K-1, H, W]`` (one logit: ``[1, H, W]`` sigmoid)."""
    probs = logits.sigmoid() if logits.shape[0] == 1 else logits.softmax(0)[1:]
    return probs.cpu().numpy().astype(np.float32)


# ---- loading ----------------------------------------------------------------------------------------------
def load_trained(path: str | Path, device: str | torch.device | None = "cpu") -> TrainedModel:
    """Rebuild a trained model from a run folder (``results/runs/<name>``), its ``checkpoint/`` folder, or a
    bundle written by :func:`segarena.export.export_bundle`. Needs nothing of the original study or data."""
    path = Path(path).expanduser()
    dev = pick_device(device)
    kind, folder, info = _locate(path)
    from .models import create_model
    from .protocol.checkpoint import load_weights

    model = create_model(info["model"], int(info["num_outputs"]), in_channels=int(info["in_channels"]),
                         pretrained=False, **info.get("kwargs", {}))
    weights = folder / "model.safetensors"
    if kind == "bundle":
        _verify_sha256(weights, info.get("weights", {}).get("sha256"))
    try:
        load_weights(model, folder)
    except SegarenaError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors' decoder errors: a damaged file, not a bug
        raise DataError(f"{weights}: unreadable weights ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                        fix="copy or export the file again") from None
    return TrainedModel(model.to(dev), info, path, dev)


def _locate(path: Path) -> tuple[str, Path, dict[str, Any]]:
    """(kind, folder holding model.safetensors, normalized info) of a bundle, run or checkpoint folder."""
    if not path.exists():
        raise SegarenaError(f"{path} does not exist", fix="pass a run folder (results/runs/<name>) or a bundle")
    if not path.is_dir():
        raise SegarenaError(f"{path} is a file, not a run folder or bundle",
                            fix="pass the folder (results/runs/<name> or the bundle folder)")
    if (path / BUNDLE_FILE).is_file():
        info = read_json(path / BUNDLE_FILE)
        if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT:
            raise SegarenaError(f"{path / BUNDLE_FILE} is not a segarena bundle description",
                                fix="export the run again with `segarena export`")
        m = info["model"]
        flat = {"model": m["name"], "kwargs": m.get("kwargs", {}), "num_outputs": m["num_outputs"],
                "in_channels": m["in_channels"], "labels": info["labels"], **info["preprocessing"],
                "loss": info.get("loss"), "weights": info.get("weights", {}), "bundle": info,
                "amp": info.get("spec", {}).get("protocol", {}).get("amp", True)}
        return "bundle", path, flat
    for kind, folder in (("run", path / "checkpoint"), ("checkpoint", path)):
        if (folder / "model.json").is_file():
            info = read_json(folder / "model.json")
            if kind == "run" and (path / "status.json").is_file():
                info["status"] = read_json(path / "status.json").get("state")
            spec = folder.parent / "spec.json"
            if spec.is_file():  # the run's AMP setting, so CUDA predictions match its test evaluation
                info["amp"] = (read_json(spec).get("protocol") or {}).get("amp", True)
            return kind, folder, info
    if (path / "segarena-results.json").is_file():
        runs = sorted(p.name for p in (path / "runs").glob("*") if (p / "checkpoint" / "model.json").is_file())
        example = f" (e.g. {path / 'runs' / runs[0]})" if runs else ""
        raise SegarenaError(f"{path} is a results folder with {len(runs)} trained run(s), not one run",
                            fix=f"pass one run folder{example}")
    if (path / "spec.json").is_file():
        state = (read_json(path / "status.json") or {}).get("state") if (path / "status.json").is_file() else None
        if state == "complete":  # a finished run is never redone by `segarena run`: resuming would do nothing
            raise SegarenaError(f"run {path} is complete but its checkpoint was deleted",
                                fix="to train it again, delete the run folder and rerun the same `segarena run` "
                                    "(its scores stay in summary.json until then)")
        raise SegarenaError(f"run {path} has no checkpoint yet (status: {state or 'pending'})",
                            fix="finish the run first (`segarena run` resumes it)")
    raise SegarenaError(f"{path} is neither a run folder (no checkpoint/model.json) nor a bundle (no {BUNDLE_FILE})",
                        fix="pass results/runs/<name> or a folder written by `segarena export`")


def _verify_sha256(path: Path, expected: str | None) -> None:
    if not path.is_file():
        raise DataError(f"{path} not found", fix="the bundle is incomplete; export it again")
    if not expected:
        return
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise DataError(f"{path}: checksum does not match {BUNDLE_FILE} (file damaged or replaced)",
                        fix="copy or export the bundle again")


# ---- predict on files ---------------------------------------------------------------------------------------
class Predictions(list):
    """The paths written by :func:`predict` (a ``list[Path]``), plus ``label_maps`` and ``skipped``
    (``(input, reason)`` for every input that could not be read)."""

    def __init__(self) -> None:
        super().__init__()
        self.label_maps: list[Path] = []
        #: ``labels/<stem>.png`` class-index maps (with ``raw_labels``)
        self.raw_maps: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []


def output_stem(path: Path) -> str:
    """The name of a prediction: the input's stem, without nnU-Net's channel suffix ``_0000`` (``case_0000.png``
    -> ``case.png``, as nnU-Net names its predictions and labels), so ``evaluate --ref labelsTr`` matches."""
    low = path.name.lower()
    stem = next((path.name[: -len(e)] for e in NIFTI_ENDINGS if low.endswith(e)), path.stem)
    return stem[:-5] if len(stem) > 5 and stem.endswith("_0000") else stem


def list_inputs(inputs: str | Path) -> list[Path]:
    """One image file, or the image files (by suffix, not hidden, not recursive) of a folder, sorted."""
    inputs = Path(inputs).expanduser()
    if not inputs.exists():
        raise SegarenaError(f"--input {inputs} does not exist", fix="pass an image file or a folder of images")
    if inputs.is_file():
        return [inputs]
    files = sorted(p for p in inputs.iterdir()
                   if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.name.lower().endswith(NIFTI_ENDINGS))
                   and not p.name.startswith("."))
    if not files:
        raise SegarenaError(f"--input {inputs}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder",
                            fix="point --input at a folder that holds the images (subfolders are not searched)")
    extra = [p for p in files if re.search(r"_(?!0000)\d{4}$", p.stem)]
    if extra and all(re.search(r"_\d{4}$", p.stem) for p in files):
        raise SegarenaError(f"--input {inputs}: nnU-Net channel files such as {extra[0].name}; predict reads one "
                            f"image per case", fix="predict needs 1- or 3-channel images in one file (_0000)")
    stems: dict[str, Path] = {}
    for p in files:
        stem = output_stem(p)
        if stem in stems:
            raise SegarenaError(f"--input {inputs}: {stems[stem].name} and {p.name} share the name {stem!r}, so "
                                f"their outputs would overwrite each other", fix="rename or move one of them")
        stems[stem] = p
    return files


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "class"


def viewable_mask(labels: np.ndarray, num_classes: int):
    """A label map as an image any viewer shows: binary -> grayscale 0/255; more classes -> a palette PNG whose
    pixel values are still the class indices (``np.asarray(Image.open(f))`` gives the labels back) and whose
    palette gives each class a distinct colour (background black)."""
    from PIL import Image

    if num_classes <= 2:
        return Image.fromarray((labels > 0).astype(np.uint8) * 255)
    im = Image.fromarray(labels.astype(np.uint8)).convert("P")  # "L" -> "P" keeps the values as indices
    colours = [0, 0, 0] + [v for c in range(1, 256) for v in CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]]
    im.putpalette(colours)
    return im


def predict(source: str | Path | TrainedModel, inputs: str | Path, output: str | Path, *, batch_size: int = 8,
            device: str | torch.device | None = None, probabilities: bool | str = False, overlays: bool = False,
            raw_labels: bool = False, progress: bool = True) -> Predictions:
    """Predict masks for one image or a folder of images with a trained run or bundle.

    Writes ``<output>/<stem>.png``, a mask at the input's size that any viewer shows (:func:`viewable_mask`:
    0/255 for binary tasks, a palette PNG of class indices otherwise); with ``raw_labels``, also
    ``<output>/labels/<stem>.png`` (uint8 class indices 0..K-1, for scripts); with ``probabilities`` ``"png"``
    (or ``True``) ``<output>/probabilities/<stem>_<class>.png`` (uint8, probability x 255, one per foreground
    class) or ``"npy"`` ``<output>/probabilities/<stem>.npy`` (float16 ``[K-1, H, W]``), with ``overlays``
    ``<output>/overlays/<stem>.png``, and ``<output>/predictions.json`` (labels, model, skipped inputs). Every
    write is atomic. Inputs that cannot be decoded are skipped and listed in ``result.skipped``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size!r} must be a positive integer", fix="e.g. --batch-size 8")
    prob_fmt = {False: None, None: None, True: "png", "png": "png", "npy": "npy"}.get(probabilities, "?")
    if prob_fmt == "?":
        raise ConfigError(f"--probabilities {probabilities!r} is not a format", fix="use png or npy")
    files = list_inputs(inputs)
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise SegarenaError(f"--output {out} is a file", fix="choose a folder for the predictions")
    in_dirs = {p.parent.resolve() for p in files}
    if out.resolve() in in_dirs:
        raise SegarenaError(f"--output {out} is the input folder; label maps would overwrite the images",
                            fix="choose another output folder")
    tm = source if isinstance(source, TrainedModel) else load_trained(source, device)
    from .progress import progress_bar

    result = Predictions()
    batch: list[tuple[Path, np.ndarray]] = []
    for i, path in enumerate(progress_bar(files, desc="predict", unit="image", enabled=progress)):
        try:
            batch.append((path, _read(path, tm.in_channels)))
        except DataError as exc:
            if len(files) == 1:
                raise
            result.skipped.append((path, str(exc)))
        if batch and (len(batch) == batch_size or i == len(files) - 1):
            _write_batch(tm, batch, out, prob_fmt, overlays, result, raw_labels)
            batch = []
    if not result.label_maps:
        raise DataError(f"none of the {len(files)} images in {inputs} could be read (first: "
                        f"{result.skipped[0][1]})", fix="check that --input holds image files")
    manifest = out / "predictions.json"
    write_json(manifest, {
        "source": str(tm.source), "model": tm.info["model"], "labels": list(tm.labels),
        "input_size": tm.input_size, "resize": RESIZE_RULE, "probabilities": prob_fmt, "overlays": overlays,
        "masks": "0/255 grayscale (255 = foreground)" if len(tm.labels) <= 2 else
                 "palette PNG: pixel value = class index, colours for viewing",
        "raw_labels": "labels/<stem>.png, uint8 class indices" if raw_labels else None,
        "label_maps": [p.name for p in result.label_maps],
        "skipped": [{"input": str(p), "error": e} for p, e in result.skipped],
    })
    result.append(manifest)
    return result


def _read(path: Path, channels: int) -> np.ndarray:
    from .data.io import read_image

    return read_image(path, channels)


def _png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"), suffix=".png")


def _write_batch(tm: TrainedModel, batch: list[tuple[Path, np.ndarray]], out: Path, prob_fmt: str | None,
                 overlays: bool, result: Predictions, raw_labels: bool = False) -> None:
    logits = tm.native_logits([img for _, img in batch])
    fg_names = [_safe(n) for n in tm.labels[1:]]
    for (path, img), lg in zip(batch, logits):
        labels = labels_from_logits(lg)
        stem = output_stem(path)
        target = out / f"{stem}.png"
        mask = viewable_mask(labels, len(tm.labels))
        atomic_write(target, lambda tmp, m=mask: m.save(tmp, format="PNG"), suffix=".png")
        result.append(target)
        result.label_maps.append(target)
        if raw_labels:
            f = out / "labels" / f"{stem}.png"
            _png(f, labels)
            result.append(f)
            result.raw_maps.append(f)
        if prob_fmt:
            probs = foreground_probabilities(lg)
            if prob_fmt == "npy":
                f = out / "probabilities" / f"{stem}.npy"
                atomic_write(f, lambda tmp, p=probs: _save_npy(tmp, p.astype(np.float16)), suffix=".npy")
                result.append(f)
            else:
                for name, p in zip(fg_names, probs):
                    f = out / "probabilities" / f"{stem}_{name}.png"
                    _png(f, np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8))
                    result.append(f)
        if overlays:
            from .data.overlay import overlay

            f = out / "overlays" / f"{stem}.png"
            _png(f, overlay(img, np.zeros_like(labels), labels))
            result.append(f)


def _save_npy(tmp: Path, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, arr)


__all__ = ["RESIZE_RULE", "ImageLike", "Predictions", "TrainedModel", "foreground_probabilities", "labels_from_logits",
           "list_inputs", "load_trained", "predict", "viewable_mask"]
