"""Using a trained model: predict on new images of any size, bundles, load_trained, ONNX.

One real run (tiny-fcn on a generated folder dataset of bright discs on dark noise, 12 images of different sizes)
is trained once for the module; it learns the task (test mDSC > 0.8), so label maps hold both classes and the
checks below are not vacuous. A realdata test does the same with Kvasir-SEG images.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import segarena
from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec, SegarenaError
from segarena.cli import main
from segarena.data.io import binarize, read_gray
from segarena.export import export_bundle, export_onnx
from segarena.inference import load_trained, predict
from segarena.metrics.overlap import confusion
from segarena.protocol import run


def make_disc_dataset(root: Path, n: int = 12) -> Path:
    """images/ + masks/ (0/255 PNG): a bright disc on dark noise; image sizes differ per case."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 40 + 2 * i, 52 - i
        yy, xx = np.mgrid[:h, :w]
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.45) * min(h, w)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8) * 255
        img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        img[mask > 0] = rng.integers(170, 255, (int((mask > 0).sum()), 3))
        Image.fromarray(img).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i:02d}.png")
    return root


def train_tiny_run(base: Path) -> Path:
    ds = make_disc_dataset(base / "discs")
    spec = RunSpec(data=DataConfig(name="folder", options={"path": str(ds)}, num_folds=3),
                   model=ModelConfig(name="tiny-fcn"),
                   protocol=ProtocolConfig(input_size=32, epochs=3, batch_size=4, max_steps_per_epoch=4,
                                           augmentation="none", amp=False, lr=0.1, patience=None))
    return run(spec, base / "results", device="cpu").store.dir  # CPU even where CUDA exists: exact comparisons


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGARENA_CACHE", str(base / "cache"))
        run_dir = train_tiny_run(base)
    assert json.loads((run_dir / "summary.json").read_text())["metrics"]["mdsc"] > 0.8
    return {"run": run_dir, "data": base / "discs"}


def _new_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Inputs of every kind predict must take: sizes, RGB/gray/RGBA/16-bit, PNG and JPEG."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    sizes = {}
    for name, (h, w) in {"small": (21, 17), "wide": (40, 120), "tall": (90, 33)}.items():
        img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 220
        Image.fromarray(img).save(folder / f"{name}.png")
        sizes[name] = (h, w)
    gray = np.full((35, 44), 30, np.uint8)
    gray[10:25, 10:30] = 230
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(np.dstack([np.full((30, 30, 3), 200, np.uint8), np.full((30, 30), 128, np.uint8)])).save(
        folder / "rgba.png")
    deep = np.full((33, 47), 500, np.uint16)
    deep[5:20, 5:30] = 3900  # 12-bit data in a 16-bit PNG
    Image.fromarray(deep).save(folder / "deep16.png")
    Image.fromarray(rng.integers(0, 255, (50, 61, 3)).astype(np.uint8)).save(folder / "photo.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image: ignored by suffix")
    sizes.update(gray=(35, 44), rgba=(30, 30), deep16=(33, 47), photo=(50, 61))
    return sizes


def test_predict_folder_of_mixed_images(trained, tmp_path):
    sizes = _new_images(tmp_path / "in")
    res = predict(trained["run"], tmp_path / "in", tmp_path / "out", batch_size=3, probabilities="png",
                  overlays=True, progress=False)
    assert not res.skipped
    assert sorted(p.stem for p in res.label_maps) == sorted(sizes)
    for stem, (h, w) in sizes.items():
        lab = np.asarray(Image.open(tmp_path / "out" / f"{stem}.png")) // 255  # viewable: 0/255
        assert lab.shape == (h, w) and lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1}
        prob = np.asarray(Image.open(tmp_path / "out" / "probabilities" / f"{stem}_foreground.png"))
        assert prob.shape == (h, w) and prob.dtype == np.uint8
        # label 1 <=> sigmoid > 0.5, so the 0-255 map is >= 128 there and <= 128 elsewhere
        assert (prob[lab == 1] >= 128).all() and (prob[lab == 0] <= 128).all()
        ov = np.asarray(Image.open(tmp_path / "out" / "overlays" / f"{stem}.png"))
        assert ov.shape == (h, w, 3)
    # the model learned "bright = foreground": the bright square is found, the dark border is not
    wide = np.asarray(Image.open(tmp_path / "out" / "wide.png")) / 255
    assert wide[15:25, 40:80].mean() > 0.9 and wide[:5].mean() < 0.1
    deep = np.asarray(Image.open(tmp_path / "out" / "deep16.png")) / 255  # 16-bit input scaled, not clipped
    assert deep[8:17, 8:27].mean() > 0.9 and deep[25:].mean() < 0.1
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert manifest["labels"] == ["background", "foreground"] and manifest["skipped"] == []
    assert not list((tmp_path / "out").rglob(".*tmp*"))  # atomic writes leave no temporaries


def test_predict_npy_probabilities_and_library_equals_files(trained, tmp_path):
    sizes = _new_images(tmp_path / "in")
    res = predict(trained["run"], tmp_path / "in", tmp_path / "out", probabilities="npy", progress=False)
    tm = load_trained(trained["run"])
    for stem, (h, w) in sizes.items():
        p = np.load(tmp_path / "out" / "probabilities" / f"{stem}.npy")
        assert p.dtype == np.float16 and p.shape == (1, h, w) and 0 <= p.min() and p.max() <= 1
    src = next(tmp_path.glob("in/wide.png"))
    from_file = np.asarray(Image.open(tmp_path / "out" / "wide.png")) // 255
    assert np.array_equal(tm.predict(np.asarray(Image.open(src))), from_file)
    assert tm.predict_proba(np.asarray(Image.open(src))).shape == (1, *sizes["wide"])
    assert len(res) == len(sizes) * 2 + 1  # label maps + npy + predictions.json


def test_predict_reproduces_the_runs_test_records(trained, tmp_path):
    """predict() preprocesses exactly like the protocol: on the run's own test images it gives its records."""
    run_dir, data = trained["run"], trained["data"]
    test_ids = json.loads((run_dir / "split.json").read_text())["test"]
    (tmp_path / "in").mkdir()
    for cid in test_ids:
        shutil.copy(data / "images" / f"{cid}.png", tmp_path / "in")
    predict(run_dir, tmp_path / "in", tmp_path / "out", batch_size=4, device="cpu", raw_labels=True, progress=False)
    rec = pd.read_parquet(run_dir / "records.parquet").set_index("case_id")
    for cid in test_ids:
        pred = np.asarray(Image.open(tmp_path / "out" / "labels" / f"{cid}.png"))  # raw class indices
        assert np.array_equal(pred * 255, np.asarray(Image.open(tmp_path / "out" / f"{cid}.png")))
        ref = (np.asarray(Image.open(data / "masks" / f"{cid}.png")) > 0).astype(np.uint8)
        c = confusion(pred, ref, 2)
        row = rec.loc[cid]
        assert (int(row["height"]), int(row["width"])) == pred.shape
        tp, fp, fn, _ = (int(v) for v in c[1])
        # same images, same batch (4 test cases, sorted), same float path: the counts agree exactly
        assert (tp, fp, fn) == (row["tp"], row["fp"], row["fn"])


def test_bundle_round_trip(trained, tmp_path):
    run_dir = trained["run"]
    path = export_bundle(run_dir, tmp_path / "bundle")
    info = json.loads(path.read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert info["format"] == "segarena-bundle" and info["labels"] == ["background", "foreground"]
    assert info["model"]["name"] == "tiny-fcn" and info["model"]["num_outputs"] == 1
    assert info["model"]["card"]["name"] == "tiny-fcn" and info["model"]["params"] > 0
    assert info["preprocessing"]["input_size"] == 32 and len(info["preprocessing"]["mean"]) == 3
    assert info["preprocessing"]["mean"] == [0.485, 0.456, 0.406]  # the card's ImageNet values, RGB
    assert info["test_metrics"] == summary["metrics"] and info["training"]["run_id"] == summary["run_id"]
    assert info["spec"]["model"]["name"] == "tiny-fcn" and info["versions"]["exported_with"]["torch"]
    assert (tmp_path / "bundle" / "model.safetensors").read_bytes() == \
        (run_dir / "checkpoint" / "model.safetensors").read_bytes()
    # moved elsewhere, without the run folder: the same model, the same predictions
    moved = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(tmp_path / "bundle", moved)
    a, b = segarena.load_trained(run_dir), segarena.load_trained(moved)
    assert isinstance(b, segarena.TrainedModel) and b.labels == ("background", "foreground")
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    _new_images(tmp_path / "in")
    predict(run_dir, tmp_path / "in", tmp_path / "out_run", progress=False)
    predict(moved, tmp_path / "in", tmp_path / "out_bundle", progress=False)
    for f in (tmp_path / "out_run").glob("*.png"):
        assert f.read_bytes() == (tmp_path / "out_bundle" / f.name).read_bytes()
    # re-exporting into the same bundle folder replaces it
    assert export_bundle(run_dir, tmp_path / "bundle") == path


def test_trained_model_accepts_arrays_of_any_kind(trained):
    tm = load_trained(trained["run"] / "checkpoint")  # the checkpoint folder alone works too
    gray = np.zeros((20, 30), np.uint8)
    gray[5:15, 5:25] = 240
    lab = tm.predict(gray)
    assert lab.shape == (20, 30) and lab[8:12, 10:20].all() and not lab[:3].any()
    assert np.array_equal(tm.predict(gray[..., None]), lab)
    assert np.array_equal(tm.predict(np.dstack([gray] * 3)), lab)
    assert np.array_equal(tm.predict(gray.astype(np.uint16) * 16), lab)  # 16-bit: scaled by its maximum
    assert np.array_equal(tm.predict(gray.astype(bool)), tm.predict(gray.astype(bool).astype(np.uint8) * 255))
    with pytest.raises(SegarenaError, match="not an image"):
        tm.predict(np.zeros((4, 5, 6, 7)))


def test_onnx_export_matches_pytorch(trained, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    report = export_onnx(trained["run"], tmp_path / "m.onnx", opset=17)
    assert report["max_abs_diff"] < 1e-4 and report["path"].is_file()
    tm = load_trained(trained["run"])
    imgs = [np.asarray(Image.open(p)) for p in sorted((trained["data"] / "images").glob("*.png"))[:3]]
    x = tm.preprocess(imgs)  # a batch of 3 real images: the batch axis is dynamic
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = tm.model(x).numpy()
    assert got.shape == want.shape == (3, 1, 32, 32) and np.abs(got - want).max() < 1e-4
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["labels"] == "background,foreground" and props["input_size"] == "32"


def test_cli_predict_and_export(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    _new_images(tmp_path / "in")
    assert main(["predict", str(trained["run"]), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out"), "--probabilities", "--overlays", "--batch-size", "2"]) == 0
    assert "wrote 7 mask(s)" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "probabilities").glob("*.png"))) == 7
    assert main(["predict", str(trained["run"]), "--input", str(tmp_path / "in" / "tall.png"), "--output",
                 str(tmp_path / "one"), "--device", "cpu"]) == 0
    assert np.asarray(Image.open(tmp_path / "one" / "tall.png")).shape == (90, 33)
    assert main(["export", str(trained["run"]), "--out", str(tmp_path / "bundle"), "--onnx"]) == 0
    out = capsys.readouterr().out
    assert "bundle:" in out and "onnx:" in out
    info = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert info["onnx"]["max_abs_diff_vs_pytorch"] < 1e-4 and (tmp_path / "bundle" / "model.onnx").is_file()
    assert main(["predict", str(tmp_path / "bundle"), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out2")]) == 0
    assert (tmp_path / "out2" / "wide.png").read_bytes() == (tmp_path / "out" / "wide.png").read_bytes()


@pytest.mark.realdata
def test_kvasir_run_predicts_its_test_images(real_data_root, tmp_path):
    """Like the smoke test: tiny-unet on 30 real Kvasir-SEG images; predict on its test images (native sizes
    differ) reproduces the run's native-resolution records."""
    spec = RunSpec(data=DataConfig(name="kvasir-seg", root=str(real_data_root), limit=30),
                   model=ModelConfig(name="tiny-unet"),
                   protocol=ProtocolConfig(input_size=48, epochs=1, batch_size=4, max_steps_per_epoch=3,
                                           augmentation="none", amp=False, lr=1e-3))
    run_dir = run(spec, tmp_path / "results", device="cpu").store.dir
    test_ids = json.loads((run_dir / "split.json").read_text())["test"][:4]
    (tmp_path / "in").mkdir()
    for cid in test_ids:
        shutil.copy(real_data_root / "kvasir-seg" / "images" / f"{cid}.jpg", tmp_path / "in")
    predict(run_dir, tmp_path / "in", tmp_path / "out", device="cpu", progress=False)
    rec = pd.read_parquet(run_dir / "records.parquet").set_index("case_id")
    for cid in test_ids:
        pred = np.asarray(Image.open(tmp_path / "out" / f"{cid}.png")) // 255
        assert pred.shape == (rec.loc[cid, "height"], rec.loc[cid, "width"])
        ref = binarize(read_gray(real_data_root / "kvasir-seg" / "masks" / f"{cid}.jpg"))  # as the adapter does
        tp, fp, fn, _ = (int(v) for v in confusion(pred, ref, 2)[1])
        tol = max(5, int(0.001 * pred.size))
        row = rec.loc[cid]
        assert abs(tp - row["tp"]) <= tol and abs(fp - row["fp"]) <= tol and abs(fn - row["fn"]) <= tol
