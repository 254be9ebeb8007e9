"""What `predict` hands a user: viewable masks, raw label maps on request, any kind of image input, and ONNX
bundles whose stated preprocessing reproduces `segarena predict` pixel for pixel with onnxruntime alone.

Two real tiny runs (1-channel and 3-channel) on generated bright-disc data; the ONNX side of the parity test uses
only PIL, numpy, onnxruntime and torch's interpolate, following bundle.json -- none of segarena's preprocessing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec, SegarenaError
from segarena.cli import main
from segarena.export import export_bundle
from segarena.inference import TrainedModel, load_trained, predict, viewable_mask
from segarena.models import create_model
from segarena.protocol import run


def _discs(root: Path, n: int = 12) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        h, w = 36 + 3 * i, 50 - i
        yy, xx = np.mgrid[:h, :w]
        cy, cx, r = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w, rng.uniform(0.3, 0.4) * min(h, w)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8) * 255
        img = rng.integers(0, 70, (h, w, 3)).astype(np.uint8)
        img[mask > 0] = rng.integers(160, 255, (int((mask > 0).sum()), 3))
        Image.fromarray(img).save(root / "images" / f"d{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"d{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("runs")
    data = _discs(base / "discs")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGARENA_CACHE", str(base / "cache"))
        for channels in (1, 3):
            spec = RunSpec(data=DataConfig(name="folder", num_folds=3,
                                           options={"path": str(data), "channels": channels}),
                           model=ModelConfig(name="tiny-fcn"),
                           protocol=ProtocolConfig(input_size=32, epochs=3, batch_size=4, max_steps_per_epoch=4,
                                                   augmentation="none", amp=False, lr=0.1, patience=None))
            out[channels] = run(spec, base / "results", device="cpu").store.dir
    out["data"] = data
    return out


def _user_side_onnx_labels(bundle: Path, image_file: Path) -> np.ndarray:
    """What a user does with bundle.json and model.onnx, without segarena."""
    import onnxruntime as ort

    info = json.loads((bundle / "bundle.json").read_text())
    pre = info["preprocessing"]
    c, s = pre["channels"], pre["input_size"]
    im = Image.open(image_file).convert("RGB" if c == 3 else "L")
    small = np.asarray(im.resize((s, s), Image.BILINEAR, reducing_gap=3.0), np.float32) / 255.0
    small = small.reshape(s, s, c)
    x = ((small - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)).transpose(2, 0, 1)[None]
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(sess.run(None, {"image": x.astype(np.float32)})[0])
    up = F.interpolate(logits, size=(im.height, im.width), mode="bilinear", align_corners=False)[0]
    return (up[0] > 0).numpy().astype(np.uint8) if up.shape[0] == 1 else up.argmax(0).numpy().astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_onnx_bundle_matches_predict_pixel_for_pixel(runs, channels, tmp_path):
    pytest.importorskip("onnxruntime")
    bundle = tmp_path / "bundle"
    export_bundle(runs[channels], bundle, onnx=True)
    info = json.loads((bundle / "bundle.json").read_text())
    pre = info["preprocessing"]
    assert pre["channels"] == channels and len(pre["mean"]) == len(pre["std"]) == channels
    if channels == 1:  # the card's three ImageNet means, averaged: the one value predict subtracts
        assert pre["mean"] == [pytest.approx((0.485 + 0.456 + 0.406) / 3)]
    import onnx

    props = {p.key: p.value for p in onnx.load(str(bundle / "model.onnx")).metadata_props}
    assert [float(v) for v in props["mean"].split(",")] == pre["mean"] and props["channels"] == str(channels)
    images = sorted((runs["data"] / "images").glob("*.png"))
    predict(runs[channels], runs["data"] / "images", tmp_path / "pred", raw_labels=True, device="cpu",
            progress=False)
    foreground = 0
    for f in images:
        want = np.asarray(Image.open(tmp_path / "pred" / "labels" / f.name))
        got = _user_side_onnx_labels(bundle, f)
        assert got.shape == want.shape and np.array_equal(got, want), f.name
        foreground += int(want.sum())
    assert foreground > 0  # the runs learned the discs: both classes occur


def test_masks_are_viewable_and_raw_labels_on_request(runs, tmp_path):
    predict(runs[3], runs["data"] / "images", tmp_path / "a", device="cpu", progress=False)
    assert not (tmp_path / "a" / "labels").exists()
    res = predict(runs[3], runs["data"] / "images", tmp_path / "b", raw_labels=True, device="cpu", progress=False)
    assert len(res.raw_maps) == len(res.label_maps) == 12
    values = set()
    for f in res.label_maps:
        im = Image.open(f)
        mask, raw = np.asarray(im), np.asarray(Image.open(tmp_path / "b" / "labels" / f.name))
        assert im.mode == "L" and np.array_equal(mask, raw * 255)
        values |= set(np.unique(mask).tolist())
    assert values == {0, 255}
    manifest = json.loads((tmp_path / "b" / "predictions.json").read_text())
    assert "0/255" in manifest["masks"] and manifest["raw_labels"]


def test_multiclass_masks_are_palette_pngs(tmp_path):
    torch.manual_seed(0)
    net = create_model("tiny-fcn", 3, in_channels=3)
    info = {"model": "tiny-fcn", "num_outputs": 3, "in_channels": 3, "labels": ["background", "a", "b"],
            "input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    tm = TrainedModel(net, info, tmp_path, torch.device("cpu"))
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(tmp_path / "in" / "x.png")
    predict(tm, tmp_path / "in", tmp_path / "out", raw_labels=True, progress=False)
    im = Image.open(tmp_path / "out" / "x.png")
    assert im.mode == "P"
    labels = tm.predict(tmp_path / "in" / "x.png")
    assert np.array_equal(np.asarray(im), labels)  # pixel values are the class indices
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "labels" / "x.png")), labels)
    rgb = np.asarray(im.convert("RGB"))
    assert (rgb[labels == 0] == 0).all()
    colours = {tuple(rgb[labels == k][0]) for k in np.unique(labels) if k}
    assert len(colours) == len(set(np.unique(labels)) - {0})  # a distinct colour per class
    assert np.asarray(viewable_mask(np.array([[0, 2]], np.uint8), 3).convert("RGB"))[0, 1].tolist() == [255, 127, 14]


def test_trained_model_predict_takes_a_path_a_pil_image_or_an_array(runs, tmp_path):
    tm = load_trained(runs[3])
    f = sorted((runs["data"] / "images").glob("*.png"))[0]
    want = tm.predict(np.asarray(Image.open(f)))
    assert want.any()
    assert np.array_equal(tm.predict(str(f)), want)  # the issue: a path used to fail with "array of shape ()"
    assert np.array_equal(tm.predict(f), want)
    assert np.array_equal(tm.predict(Image.open(f)), want)
    assert np.array_equal(tm.predict(Image.open(f).convert("RGBA")), want)
    pal = Image.open(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    assert tm.predict(pal).shape == want.shape  # palette images go through RGB
    assert tm.predict_proba(str(f)).shape == (1, *want.shape)
    with pytest.raises(SegarenaError, match="does not exist|not found|cannot"):
        tm.predict(str(tmp_path / "missing.png"))
    with pytest.raises(SegarenaError, match="cannot predict on a dict"):
        tm.predict({"x": 1})
    with pytest.raises(SegarenaError, match="not an image"):
        tm.predict(np.array("file.png"))


def test_cli_predict_raw_labels(runs, tmp_path, capsys):
    f = sorted((runs["data"] / "images").glob("*.png"))[0]
    assert main(["predict", str(runs[1]), "--input", str(f), "--output", str(tmp_path / "o"), "--raw-labels",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "wrote 1 mask(s)" in out and "1 label map(s)" in out
    assert (tmp_path / "o" / "labels" / f.name).is_file()
