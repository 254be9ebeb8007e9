"""The bad-input corpus: every way a user can hand segarena broken data, configs or folders.

Each case runs the real CLI entry (``segarena.cli.main``) or the library call and checks the contract of
``_errors.py``: exit code 2 / ``SegarenaError``, ONE line on stderr that names the file or option and gives a fix
(`` — `` separates them), no traceback, and every file written before (a results folder holding a finished run,
earlier predictions, a bundle) is byte-identical afterwards. 16-bit images are the one "odd" input that must work.
"""
from __future__ import annotations

import errno
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec, SegarenaError
from segarena.cli import main
from segarena.protocol import run


# ---- fixtures and helpers -----------------------------------------------------------------------------------
def make_dataset(root: Path, n: int = 6) -> Path:
    """images/ + masks/ of a bright disc on dark noise (0/255 PNG masks), sizes differing per case."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 40 + 2 * i, 52 - i
        yy, xx = np.mgrid[:h, :w]
        mask = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) <= (0.35 * min(h, w)) ** 2).astype(np.uint8) * 255
        img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        img[mask > 0] = 220
        Image.fromarray(img).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A results folder with one finished run, earlier predictions and a bundle: the things that must survive."""
    return build_world(tmp_path_factory.mktemp("world"))


def build_world(base: Path) -> dict[str, Path]:
    """The body of the ``world`` fixture (shared with the corpus' second file)."""
    from segarena.export import export_bundle
    from segarena.inference import predict

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGARENA_CACHE", str(base / "cache"))
        ds = make_dataset(base / "good", n=9)
        spec = RunSpec(data=DataConfig(name="folder", options={"path": str(ds)}, num_folds=3),
                       model=ModelConfig(name="tiny-fcn"),
                       protocol=ProtocolConfig(input_size=32, epochs=1, batch_size=3, max_steps_per_epoch=2,
                                               augmentation="none", amp=False, lr=0.1))
        run_dir = run(spec, base / "results", device="cpu").store.dir
        predict(run_dir, ds / "images", base / "predictions", device="cpu", progress=False)
        export_bundle(run_dir, base / "bundle")
    return {"results": base / "results", "run": run_dir, "predictions": base / "predictions",
            "bundle": base / "bundle", "images": ds / "images"}


def snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def assert_unchanged(before: dict[Path, bytes]) -> None:
    """Every file is byte-identical; an append-only log (``commands.log``) may only have grown at its end."""
    for p, data in before.items():
        assert p.is_file(), f"{p} disappeared"
        now = p.read_bytes()
        assert now.startswith(data) if p.name == "commands.log" else now == data, f"{p} changed"


def _has_fix(line: str) -> bool:
    """``what — fix``; unknown names carry their fix as ``did you mean ...`` (the registry's wording)."""
    return " — " in line or "did you mean" in line


def cli_error(argv: list[str], capsys, *needles: str) -> str:
    """Run the CLI; expect exit 2 and one line ``segarena: error: <what> — <fix>`` naming ``needles``."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    line = err[err.index("segarena: error: "):].strip()  # a progress bar may precede it on the same line
    assert _has_fix(line), f"no fix in: {line}"
    for n in needles:
        assert n in line, f"{n!r} not in: {line}"
    return line


def lib_error(fn, *needles: str) -> str:
    with pytest.raises(SegarenaError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and _has_fix(msg), msg
    for n in needles:
        assert n in msg, f"{n!r} not in: {msg}"
    return msg


def run_on(world, ds: Path, capsys, *needles: str) -> str:
    """``segarena run`` on a broken folder dataset into the results folder holding the finished run."""
    before = snapshot(world["results"])
    line = cli_error(["run", "--model", "tiny-fcn", "--dataset", "folder", "--results", world["results"],
                      "--set", f"data.options.path={ds}", "--set", "protocol.input_size=32",
                      "--set", "data.num_folds=3", "--set", "protocol.epochs=1"], capsys, *needles)
    assert_unchanged(before)
    return line


def _png_with_size(path: Path, w: int, h: int) -> None:
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


# ---- broken images and masks (through `segarena run`) ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["corrupt", "truncated_png", "truncated_jpeg", "text_as_png", "zero_bytes",
                                  "zero_sized"])
def test_broken_image_files(world, tmp_path, capsys, kind):
    ds = make_dataset(tmp_path / "ds")
    bad = ds / "images" / "case02.png"
    data = bad.read_bytes()
    if kind == "corrupt":
        bad.write_bytes(data[:40] + bytes(range(256)) * 4)
    elif kind == "truncated_png":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_jpeg":
        bad.unlink()
        bad = ds / "images" / "case02.jpg"
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (44, 50, 3), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:600])
    elif kind == "text_as_png":
        bad.write_text("this is a README, not a PNG\n")
    elif kind == "zero_bytes":
        bad.write_bytes(b"")
    else:
        _png_with_size(bad, 0, 0)
    run_on(world, ds, capsys, str(bad), "replace it with the original or remove the case")


def test_mask_of_the_wrong_size(world, tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(ds / "masks" / "case01.png")
    run_on(world, ds, capsys, str(ds / "masks" / "case01.png"), "12x10", "must have the image's size")


def test_mask_with_unexpected_values(world, tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    m = np.zeros((44, 50), np.uint8)  # case02 is 44 x 50
    m[5:10, 5:10], m[20:30, 20:30] = 7, 255
    Image.fromarray(m).save(ds / "masks" / "case02.png")
    run_on(world, ds, capsys, str(ds / "masks" / "case02.png"), "unexpected mask values", "mask_values")


def test_rgb_mask_with_unknown_colours(world, tmp_path, capsys):
    """A colour-coded multi-class mask in a folder dataset must not be merged into one class silently."""
    ds = make_dataset(tmp_path / "ds")
    m = np.zeros((42, 51, 3), np.uint8)  # case01 is 42 x 51
    m[5:15, 5:20] = (255, 0, 0)
    m[25:35, 25:45] = (0, 255, 0)
    Image.fromarray(m).save(ds / "masks" / "case01.png")
    run_on(world, ds, capsys, str(ds / "masks" / "case01.png"), "colour-coded", "green, red", "label map")


def test_sixteen_bit_images_are_read_and_scaled(world, tmp_path, capsys):
    """16-bit PNG and TIFF (12-bit data, as from scanners) are scaled by their maximum, not clipped at 255."""
    from segarena.data.io import read_image

    a = np.zeros((20, 30), np.uint16)
    a[:, 10:20], a[:, 20:] = 1000, 4000
    for suffix in (".png", ".tif"):
        Image.fromarray(a).save(tmp_path / f"deep{suffix}")
        gray = read_image(tmp_path / f"deep{suffix}", channels=1)
        assert gray.dtype == np.uint8 and gray.shape == (20, 30, 1)
        assert (gray[:, :10] == 0).all() and (gray[:, 10:20] == 64).all() and (gray[:, 20:] == 255).all()
        rgb = read_image(tmp_path / f"deep{suffix}", channels=3)
        assert rgb.shape == (20, 30, 3) and (rgb[..., 0] == gray[..., 0]).all()
    # and `segarena predict` takes them (output at the native size)
    (tmp_path / "in").mkdir()
    Image.fromarray(a).save(tmp_path / "in" / "deep.png")
    assert main(["predict", str(world["run"]), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out")]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "deep.png")).shape == (20, 30)


def test_empty_folders(world, tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    for p in (ds / "images").iterdir():
        p.unlink()
    run_on(world, ds, capsys, str(ds / "images"), "no images")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    before = snapshot(world["predictions"])
    cli_error(["predict", world["run"], "--input", tmp_path / "empty", "--output", world["predictions"]], capsys,
              f"--input {tmp_path / 'empty'}", "no images")
    assert_unchanged(before)


def test_duplicate_case_ids(world, tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    Image.open(ds / "images" / "case03.png").convert("RGB").save(ds / "images" / "case03.jpg")
    run_on(world, ds, capsys, "case03.jpg and case03.png", "one file per case id")
    before = snapshot(world["predictions"])
    cli_error(["predict", world["run"], "--input", ds / "images", "--output", world["predictions"]], capsys,
              "case03.jpg and case03.png", "rename")
    assert_unchanged(before)


# ---- names, configs, folders --------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["--model", "tiny-unett", "--dataset", "kvasir-seg"], "unknown model 'tiny-unett': did you mean tiny-unet"),
    (["--model", "tiny-fcn", "--dataset", "kvasirr"], "unknown dataset 'kvasirr'"),
    (["--model", "tiny-fcn", "--set", "protocol.epochs=abc"], "protocol.epochs: expected an integer, got 'abc'"),
    (["--model", "tiny-fcn", "--set", "protocol.lr=fast"], "protocol.lr: expected a number"),
    (["--model", "tiny-fcn", "--set", "protocol.amp=maybe"], "protocol.amp: expected true/false"),
    (["--model", "tiny-fcn", "--device", "gpu"], "--device 'gpu' is not a device"),
])
def test_unknown_names_and_wrong_types(world, capsys, argv, needle):
    before = snapshot(world["results"])
    cli_error(["run", "--results", world["results"], *argv], capsys, needle)
    assert_unchanged(before)


@pytest.mark.parametrize("text,needle", [
    ("protocol:\n  epochs: [10, 20]\n", "protocol.epochs: expected an integer, got [10, 20]"),
    ("protocol:\n  lr: {value: 1e-4}\n", "protocol.lr: expected a number"),
    ("- protocol\n- data\n", "expected a mapping with data/model/protocol sections, got a list"),
    ("protocol: [1, 2]\n", "protocol: expected a mapping"),
    ("protocol: {epochs: 3\n", "is not valid YAML"),
])
def test_yaml_config_with_wrong_types(world, tmp_path, capsys, text, needle):
    cfg = tmp_path / "study.yaml"
    cfg.write_text(text)
    before = snapshot(world["results"])
    cli_error(["run", "--config", cfg, "--results", world["results"]], capsys, str(cfg), needle)
    assert_unchanged(before)


def test_results_folder_that_is_not_one(world, tmp_path, capsys):
    mine = tmp_path / "my-thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    cli_error(["report", mine], capsys, str(mine), "not a segarena results folder")
    cli_error(["run", "--model", "tiny-fcn", "--results", mine], capsys, str(mine), "not a segarena results folder")
    cli_error(["predict", mine, "--input", world["images"], "--output", tmp_path / "out"], capsys, str(mine),
              "neither a run folder", "segarena export")
    cli_error(["predict", world["results"], "--input", world["images"], "--output", tmp_path / "out"], capsys,
              "is a results folder", str(world["run"]))
    cli_error(["export", mine, "--out", tmp_path / "b"], capsys, str(mine), "neither a run folder")
    assert [p.name for p in mine.iterdir()] == ["chapter1.tex"] and (mine / "chapter1.tex").read_text() == "precious"
    assert not (tmp_path / "out").exists() and not (tmp_path / "b").exists()


def test_unfinished_run_cannot_be_exported(world, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(world["run"], copy)
    (copy / "status.json").write_text(json.dumps({"state": "failed", "error": "interrupted"}))
    cli_error(["export", copy, "--out", tmp_path / "b"], capsys, str(copy), "not complete (status: failed)")
    shutil.rmtree(copy / "checkpoint")
    cli_error(["predict", copy, "--input", world["images"], "--output", tmp_path / "o"], capsys,
              "has no checkpoint yet")


def test_output_folders_that_would_destroy_files(world, tmp_path, capsys):
    before = snapshot(world["images"])
    cli_error(["predict", world["run"], "--input", world["images"], "--output", world["images"]], capsys,
              "is the input folder", "another output folder")
    assert_unchanged(before)
    mine = tmp_path / "docs"
    mine.mkdir()
    (mine / "notes.md").write_text("keep me")
    cli_error(["export", world["run"], "--out", mine], capsys, f"--out {mine}", "not empty")
    assert [p.name for p in mine.iterdir()] == ["notes.md"]
    cli_error(["predict", world["run"], "--input", world["images"], "--output", mine / "notes.md"], capsys,
              "is a file")


def test_bad_prediction_options(world, tmp_path, capsys):
    cli_error(["predict", world["run"], "--input", world["images"], "--output", tmp_path / "o", "--batch-size", "0"],
              capsys, "--batch-size 0")
    cli_error(["predict", world["run"], "--input", tmp_path / "nope.png", "--output", tmp_path / "o"], capsys,
              "--input", "does not exist")
    cli_error(["predict", world["run"], "--input", world["images"], "--output", tmp_path / "o", "--device",
               "cuda:7" if not _has_cuda() else "nodevice"], capsys, "--device")
    assert not (tmp_path / "o").exists()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_unreadable_inputs_are_skipped_and_listed(world, tmp_path, capsys):
    """Prediction goes on past bad files: one line per skipped input, exit code 1, good images written.
    A single unreadable input is an ordinary error (exit 2)."""
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("case00.png", "case01.png"):
        (inp / name).write_bytes((world["images"] / name).read_bytes())
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (inp / "empty.jpg").write_bytes(b"")
    rc = main(["predict", str(world["run"]), "--input", str(inp), "--output", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in err and "wrote 2 mask(s)" in out and "skipped 2" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith("segarena: skipped ") and " — " in ln for ln in lines)
    assert str(inp / "broken.png") in err and str(inp / "empty.jpg") in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["case00.png", "case01.png"]
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {Path(s["input"]).name for s in manifest["skipped"]} == {"broken.png", "empty.jpg"}
    cli_error(["predict", world["run"], "--input", inp / "broken.png", "--output", tmp_path / "out1"], capsys,
              str(inp / "broken.png"), "corrupt or truncated")


def test_damaged_bundle_is_refused(world, tmp_path, capsys):
    import shutil

    from segarena.inference import load_trained

    copy = tmp_path / "bundle"
    shutil.copytree(world["bundle"], copy)
    w = bytearray((copy / "model.safetensors").read_bytes())
    w[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(w))
    before = snapshot(copy)
    lib_error(lambda: load_trained(copy), str(copy / "model.safetensors"), "checksum")
    cli_error(["predict", copy, "--input", world["images"], "--output", tmp_path / "o"], capsys, "checksum",
              "export the bundle again")
    (copy / "bundle.json").write_text("{not json")
    cli_error(["predict", copy, "--input", world["images"], "--output", tmp_path / "o"], capsys,
              str(copy / "bundle.json"), "not valid JSON")
    before.pop(copy / "bundle.json")
    assert_unchanged(before)


def test_onnx_without_the_extra(world, tmp_path, monkeypatch):
    from segarena.export import export_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    lib_error(lambda: export_onnx(world["run"], tmp_path / "m.onnx"), "onnx", "pip install segarena[onnx]")
    assert not (tmp_path / "m.onnx").exists()


# ---- read-only folders and full disks -------------------------------------------------------------------------
def _raise(err: OSError):
    def fn(*args, **kwargs):
        raise err

    return fn


def test_read_only_output_simulated(world, tmp_path, capsys, monkeypatch):
    """CI runs as root, where chmod does not bite: the rename onto the target is refused instead."""
    monkeypatch.setattr(os, "replace", _raise(PermissionError(errno.EACCES, "Permission denied")))
    before = snapshot(world["predictions"], world["bundle"], world["results"])
    cli_error(["predict", world["run"], "--input", world["images"], "--output", world["predictions"]], capsys,
              "permission denied", "writable", "nothing was overwritten")
    cli_error(["export", world["run"], "--out", world["bundle"]], capsys, str(world["bundle"]), "permission denied")
    assert_unchanged(before)
    assert not [p for p in world["predictions"].rglob("*") if ".tmp" in p.name]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_output_chmod(world, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "case00.png").write_bytes(b"earlier result")
    ro.chmod(0o555)
    try:
        cli_error(["predict", world["run"], "--input", world["images"], "--output", ro], capsys,
                  str(ro), "permission denied", "writable")
        assert [p.name for p in ro.iterdir()] == ["case00.png"]
        assert (ro / "case00.png").read_bytes() == b"earlier result"
    finally:
        ro.chmod(0o755)


def test_full_disk_keeps_the_previous_file(world, tmp_path, capsys, monkeypatch):
    """ENOSPC while writing: the old file stays whole, no temporary is left, the message says to free space."""
    before = snapshot(world["predictions"], world["bundle"], world["results"])
    with monkeypatch.context() as mp:
        mp.setattr(os, "fsync", _raise(OSError(errno.ENOSPC, "No space left on device")))
        cli_error(["predict", world["run"], "--input", world["images"], "--output", world["predictions"]], capsys,
                  "no space left on device", "free disk space", "nothing was overwritten")
        cli_error(["export", world["run"], "--out", world["bundle"]], capsys, "no space left", "free disk space")
    assert_unchanged(before)
    leftovers = [p for f in (world["predictions"], world["bundle"]) for p in f.rglob("*") if ".tmp" in p.name]
    assert not leftovers

