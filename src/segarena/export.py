"""Export a finished run: a self-describing bundle (safetensors + ``bundle.json``), optionally ONNX.

A bundle is what you hand to someone who should use the model without the study: ``model.safetensors`` (the
checkpoint chosen on validation, byte for byte), and ``bundle.json`` with the model card, builder arguments,
class labels, the exact preprocessing, the run's test metrics, its resolved spec and the versions it was trained
with. ``segarena.load_trained(bundle)`` rebuilds it; ``segarena predict BUNDLE`` uses it.

ONNX needs the optional extra ``segarena[onnx]`` (``onnx`` + ``onnxruntime``). The graph takes the normalized
image batch ``[N, C, S, S]`` at the bundle's ``input_size`` (batch size free) and returns logits ``[N, K, S, S]``;
resizing, normalization and the upsampling to native size stay outside, as ``bundle.json`` describes step by step
(``preprocessing.steps``, with exactly one mean/std value per input channel; the same values are in the ONNX
file's metadata). Every export
is checked against PyTorch with onnxruntime before it is kept.
"""
from __future__ import annotations

import hashlib
import inspect
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from ._errors import SegarenaError
from ._io import atomic_path, atomic_write, read_json, write_json
from .inference import BUNDLE_FILE, BUNDLE_FORMAT, RESIZE_RULE, TrainedModel, _locate, load_trained

BUNDLE_VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_out_dir(out: Path, run_dir: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SegarenaError(f"--out {out} is a file", fix="choose a new folder for the bundle")
    if out.resolve() == run_dir.resolve():
        raise SegarenaError(f"--out {out} is the run folder itself", fix="choose a new folder for the bundle")
    if out.is_dir() and not (out / BUNDLE_FILE).is_file() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise SegarenaError(f"--out {out} is not empty and holds no segarena bundle",
                            fix="choose a new or empty folder so nothing of yours gets overwritten")


def export_bundle(run_dir: str | Path, out_dir: str | Path, *, onnx: bool = False, opset: int = 17) -> Path:
    """Write the bundle of the finished run ``run_dir`` into ``out_dir`` (created; an older bundle there is
    replaced file by file, atomically). With ``onnx``, also ``model.onnx`` (see :func:`export_onnx`).
    Returns the path of ``bundle.json``, written last so that its presence marks a complete bundle."""
    run_dir, out = Path(run_dir).expanduser(), Path(out_dir).expanduser()
    if (run_dir / BUNDLE_FILE).is_file():
        raise SegarenaError(f"{run_dir} is already a bundle", fix="copy the folder, or export from the run folder")
    if not (run_dir / "checkpoint" / "model.json").is_file() or not (run_dir / "spec.json").is_file():
        _locate(run_dir)  # the precise reason: missing, a results folder, a run without checkpoint, ...
        raise SegarenaError(f"{run_dir} is not a run folder", fix="export results/runs/<name>")
    status = read_json(run_dir / "status.json") if (run_dir / "status.json").is_file() else {}
    if status.get("state") != "complete" or not (run_dir / "summary.json").is_file():
        raise SegarenaError(f"run {run_dir} is not complete (status: {status.get('state', 'unknown')}), so it has "
                            f"no test metrics", fix="finish the run first (`segarena run` resumes it)")
    _check_out_dir(out, run_dir)
    tm = load_trained(run_dir, "cpu")  # also proves that the checkpoint rebuilds
    summary = read_json(run_dir / "summary.json")
    spec = read_json(run_dir / "spec.json") if (run_dir / "spec.json").is_file() else {}
    src = run_dir / "checkpoint" / "model.safetensors"
    atomic_write(out / "model.safetensors", lambda tmp: shutil.copyfile(src, tmp), suffix=".safetensors")
    digest = _sha256(out / "model.safetensors")
    if digest != _sha256(src):
        raise SegarenaError(f"{out / 'model.safetensors'}: the copy differs from {src}",
                            fix="check the disk and export again")
    info = tm.info
    bundle: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "usage": "segarena.load_trained(<this folder>).predict(image) or `segarena predict <this folder> "
                 "--input ... --output ...`",
        "model": {"name": info["model"], "kwargs": info.get("kwargs", {}), "num_outputs": info["num_outputs"],
                  "in_channels": info["in_channels"], "params": sum(p.numel() for p in tm.model.parameters()),
                  "card": tm.model.card.to_dict()},
        "labels": list(info["labels"]),
        "preprocessing": preprocessing_spec(info),
        "postprocessing": {
            "upsample": "logits bilinear (align_corners=False) to the image's native size",
            "labels": "one logit: label 1 where logit > 0 (sigmoid > 0.5); K logits: argmax",
        },
        "loss": info.get("loss"),
        "weights": {"file": "model.safetensors", "format": "safetensors", "sha256": digest,
                    "selected_epoch": info.get("epoch")},
        "training": {k: summary.get(k) for k in ("run_id", "run_name", "dataset", "fold", "seed", "best_epoch",
                                                  "epochs_run", "stopped_early", "n_train", "n_val", "n_test",
                                                  "eval_resolution", "device")},
        "test_metrics": summary.get("metrics", {}),
        "test_per_class": summary.get("per_class", {}),
        "spec": spec,
        "versions": {"exported_with": {"segarena": __version__, "torch": torch.__version__,
                                       "python": platform.python_version()},
                     "trained_with": summary.get("versions", {})},
    }
    if onnx:
        report = export_onnx(tm, out / "model.onnx", opset=opset)
        bundle["onnx"] = {"file": "model.onnx", "opset": opset, "sha256": _sha256(out / "model.onnx"),
                          "input": f"float32 [N, {info['in_channels']}, {info['input_size']}, {info['input_size']}]"
                                   ": the image after every step of preprocessing.steps",
                          "output": "logits [N, K, S, S] (upsample and label as in postprocessing)",
                          "max_abs_diff_vs_pytorch": report["max_abs_diff"]}
    elif (out / "model.onnx").is_file():
        (out / "model.onnx").unlink()  # a stale graph of an older bundle would not match these weights
    write_json(out / BUNDLE_FILE, bundle)
    return out / BUNDLE_FILE


def preprocessing_spec(info: dict[str, Any]) -> dict[str, Any]:
    """Exactly what the network (and the ONNX graph) expects, step by step, with one mean/std value per input
    channel: the values ``predict`` applies (:func:`segarena.data.augment.channel_stats`), not the card's."""
    from .data.augment import channel_stats

    c, s = int(info["in_channels"]), int(info["input_size"])
    mean, std = channel_stats(tuple(info["mean"]), tuple(info["std"]), c)
    colour = "RGB" if c == 3 else "grayscale (PIL convert('L'): ITU-R 601 luma of RGB)"
    return {
        "input_size": s, "channels": c, "mean": list(mean), "std": list(std), "resize": RESIZE_RULE,
        "scale": "uint8 / 255 (16-bit images: by their own maximum first), then (x - mean[c]) / std[c]",
        "steps": [f"decode to uint8 {colour}, [H, W, {c}]",
                  f"resize to {s} x {s}: {RESIZE_RULE}",
                  "convert to float32 and divide by 255",
                  f"subtract mean {list(mean)} and divide by std {list(std)}, per channel",
                  f"transpose to [1, {c}, {s}, {s}] (NCHW); stack images for a batch"],
    }


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise SegarenaError("ONNX export needs the packages onnx and onnxruntime",
                            fix="pip install segarena[onnx]") from None
    return onnx, onnxruntime


def export_onnx(source: str | Path | TrainedModel, path: str | Path, opset: int = 17, *, atol: float = 1e-3,
                batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """Export a run or bundle to ONNX and check it: onnxruntime (CPU) and PyTorch run the same random normalized
    batch; the file is kept only if the largest absolute logit difference is below ``atol``.

    Returns ``{"path", "opset", "input_shape", "max_abs_diff"}``.
    """
    onnx, ort = _require_onnx()
    tm = source if isinstance(source, TrainedModel) else load_trained(source, "cpu")
    if tm.device.type != "cpu":
        tm = TrainedModel(tm.model.to("cpu"), tm.info, tm.source, torch.device("cpu"))
    path = Path(path).expanduser()
    s, c = tm.input_size, tm.in_channels
    x = torch.randn(batch, c, s, s, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = tm.model(x).float().numpy()
    with atomic_path(path, suffix=".onnx") as tmp:
        kwargs: dict[str, Any] = {"opset_version": opset, "input_names": ["image"], "output_names": ["logits"],
                                  "dynamic_axes": {"image": {0: "batch"}, "logits": {0: "batch"}}}
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False  # the TorchScript exporter: needs no onnxscript, gives a dynamic batch axis
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(tm.model, (x[:1],), str(tmp), **kwargs)
        except Exception as exc:  # exporter limits (unsupported ops) are reported, not hidden
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise SegarenaError(f"model {tm.info['model']!r} cannot be exported to ONNX opset {opset}: {first}",
                                fix="try another --opset, or use the safetensors bundle with PyTorch") from exc
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        pre = preprocessing_spec(tm.info)
        meta = {"segarena_model": tm.info["model"], "labels": ",".join(tm.labels), "input_size": str(s),
                "channels": str(c), "mean": ",".join(repr(v) for v in pre["mean"]),
                "std": ",".join(repr(v) for v in pre["std"]), "preprocessing": " -> ".join(pre["steps"]),
                "resize": RESIZE_RULE, "segarena_version": __version__}
        onnx.helper.set_model_props(model, meta)
        onnx.save(model, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"image": x.numpy()})[0]
        if got.shape != expected.shape:
            raise SegarenaError(f"ONNX export of {tm.info['model']!r}: output shape {got.shape} != PyTorch "
                                f"{expected.shape}", fix="report this model; use the safetensors bundle meanwhile")
        diff = float(abs(got - expected).max())
        if not diff < atol:
            raise SegarenaError(f"ONNX export of {tm.info['model']!r} differs from PyTorch by {diff:.3g} "
                                f"(> {atol:g}); nothing was written", fix="try another --opset, or use the bundle")
    return {"path": path, "opset": opset, "input_shape": [batch, c, s, s], "max_abs_diff": diff}


__all__ = ["BUNDLE_VERSION", "export_bundle", "export_onnx", "preprocessing_spec"]
