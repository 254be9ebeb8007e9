"""No code runs from a weight file: crafted checkpoints through every public entry point.

Each payload is a real pickle exploit (``__reduce__`` -> ``exec``) written the way an attacker would: inside a
zip-format ``torch.save`` file, inside a legacy-format one, and as the very first pickle of a legacy file (which
torch's legacy loader reads with the pickle module it is given before anything else — the hole the old
Swin-UMamba reader had). A control shows every payload is live (plain ``torch.load(weights_only=False)`` runs it);
then each entry point must refuse the file (or read only its tensors) while the marker file never appears.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segarena import SegarenaError
from segarena.cli import main


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _Config:
    """A harmless object pickled beside the weights, as training scripts store their config."""

    def __init__(self) -> None:
        self.lr, self.depths = 1e-3, [2, 2, 9, 2]


def _payloads(folder: Path, marker: Path, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, Path]:
    """The three malicious files (each also holding plausible weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = tensors if tensors is not None else {"weight": torch.zeros(3, 3)}
    obj = {"model": tensors, "config": _Exploit(marker)}
    out = {"zip": folder / "evil_zip.pth", "legacy": folder / "evil_legacy.pth",
           "legacy-first-record": folder / "evil_first.pth"}
    torch.save(obj, out["zip"])
    torch.save(obj, out["legacy"], _use_new_zipfile_serialization=False)
    buf = io.BytesIO()
    torch.save(tensors, buf, _use_new_zipfile_serialization=False)
    out["legacy-first-record"].write_bytes(pickle.dumps(_Exploit(marker), protocol=2) + buf.getvalue()[2:])
    return out


@pytest.fixture
def evil(tmp_path) -> tuple[dict[str, Path], Path]:
    marker = tmp_path / "PWNED"
    files = _payloads(tmp_path / "evil", marker)
    for kind, path in files.items():  # control: the payloads do run when unpickled without restriction
        with contextlib.suppress(Exception):  # the first-record file is no valid checkpoint after its payload
            torch.load(path, map_location="cpu", weights_only=False)
        assert marker.is_file(), f"{kind}: the control payload did not run"
        marker.unlink()
    return files, marker


def test_readers_never_run_the_payload(evil):
    from segarena.models.weights import convert_to_safetensors, read_state_dict
    from segarena.models.zoo.swin_umamba import read_training_checkpoint

    files, marker = evil
    for kind, path in files.items():
        for reader in (read_state_dict, read_training_checkpoint):
            try:
                state = reader(path)
            except SegarenaError as exc:
                assert "\n" not in str(exc) and str(path) in str(exc)
            else:  # the tensors may be read; the exploit object only ever became an inert stand-in
                assert set(state) == {"weight"}, kind
            assert not marker.exists(), f"{kind} ran code through {reader.__name__}"
        out = path.with_suffix(".safetensors")
        try:
            convert_to_safetensors(path, out)  # without --trust-file: the safe reader
        except SegarenaError:
            pass
        assert not marker.exists(), f"{kind} ran code through convert_to_safetensors"


def test_the_first_record_exploit_is_refused_with_the_convert_fix(evil):
    from segarena.models.weights import read_state_dict

    files, marker = evil
    with pytest.raises(SegarenaError, match="cannot be read safely.*segarena convert-weights"):
        read_state_dict(files["legacy-first-record"])
    assert not marker.exists()


def test_cli_run_with_a_malicious_pretrained_file(evil, tmp_path, capsys):
    """``model.pretrained=PATH`` through ``segarena run``: a one-line error, exit 2, nothing executed."""
    files, marker = evil
    for kind, path in files.items():
        rc = main(["run", "--model", "segformer-b0", "--dataset", "folder", "--results", str(tmp_path / f"r-{kind}"),
                   "--set", f"data.options.path={tmp_path}", "--set", f"model.pretrained={path}",
                   "--set", "protocol.input_size=32", "--set", "protocol.epochs=1"])
        err = capsys.readouterr().err
        assert rc != 0 and "Traceback" not in err, err
        assert not marker.exists(), f"{kind} ran code through segarena run"


def test_convert_weights_command(tmp_path, capsys):
    """A training checkpoint with a pickled object: read safely and written to safetensors (the documented fix)."""
    from safetensors.torch import load_file

    marker = tmp_path / "PWNED"
    files = _payloads(tmp_path / "evil", marker)
    train_ckpt = tmp_path / "train.pth"
    torch.save({"model": {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}, "config": _Config(),
                "epoch": 3}, train_ckpt)
    out = tmp_path / "clean.safetensors"
    assert main(["convert-weights", str(train_ckpt), "--out", str(out)]) == 0
    got = load_file(str(out))
    assert set(got) == {"a", "b"}
    torch.testing.assert_close(got["a"], torch.arange(6.0).reshape(2, 3))
    for path in files.values():  # the exploits: refused, with the trust flag named as the way out
        rc = main(["convert-weights", str(path), "--out", str(tmp_path / "x.safetensors")])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and "--trust-file" in err and not marker.exists(), err
    assert not (tmp_path / "x.safetensors").exists()
    # with --trust-file the user explicitly accepts plain unpickling (documented as running the file's code)
    good = tmp_path / "trusted.pth"
    torch.save({"state_dict": {"w": torch.ones(2, 2)}}, good, _use_new_zipfile_serialization=False)
    assert main(["convert-weights", str(good), "--out", str(tmp_path / "t.safetensors"), "--trust-file"]) == 0
    assert set(load_file(str(tmp_path / "t.safetensors"))) == {"w"}


def test_npz_with_pickled_objects_is_refused(tmp_path):
    """TransUNet reads the official Flax ``.npz`` with ``allow_pickle=False``: an object array is refused."""
    from segarena.models.zoo.transunet import read_npz

    marker = tmp_path / "PWNED"
    arr = np.empty(1, dtype=object)
    arr[0] = _Exploit(marker)
    np.savez(tmp_path / "evil.npz", w=arr)
    with pytest.raises(SegarenaError):
        read_npz(tmp_path / "evil.npz")
    assert not marker.exists()


def _trained_run(tmp_path: Path) -> Path:
    from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
    from segarena.protocol import run
    from tests.unit.test_bad_inputs import make_dataset

    ds = make_dataset(tmp_path / "ds", n=6)
    spec = RunSpec(data=DataConfig(name="folder", options={"path": str(ds)}, num_folds=3),
                   model=ModelConfig(name="tiny-fcn"),
                   protocol=ProtocolConfig(input_size=32, epochs=1, batch_size=2, max_steps_per_epoch=1,
                                           augmentation="none", amp=False))
    return run(spec, tmp_path / "results", device="cpu").store.dir


def test_trained_model_entry_points_refuse_pickles(tmp_path, capsys, monkeypatch):
    """load_trained / predict / export / resume on a run or bundle whose weight file was swapped for a pickle."""
    from segarena.export import export_bundle
    from segarena.inference import load_trained

    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path / "cache"))
    run_dir = _trained_run(tmp_path)
    export_bundle(run_dir, tmp_path / "bundle")
    marker = tmp_path / "PWNED"
    files = _payloads(tmp_path / "evil", marker)
    images = tmp_path / "ds" / "images"
    for kind, evil_file in files.items():
        run_copy, bundle_copy = tmp_path / f"run-{kind}", tmp_path / f"bundle-{kind}"
        shutil.copytree(run_dir, run_copy)
        shutil.copytree(tmp_path / "bundle", bundle_copy)
        shutil.copyfile(evil_file, run_copy / "checkpoint" / "model.safetensors")
        shutil.copyfile(evil_file, bundle_copy / "model.safetensors")
        for target in (run_copy, bundle_copy):
            with pytest.raises(SegarenaError):
                load_trained(target)
            assert main(["predict", str(target), "--input", str(images), "--output", str(tmp_path / "o")]) == 2
        assert main(["export", str(run_copy), "--out", str(tmp_path / f"b2-{kind}")]) != 0 or \
            main(["predict", str(tmp_path / f"b2-{kind}"), "--input", str(images), "--output",
                  str(tmp_path / "o2")]) == 2
        assert "Traceback" not in capsys.readouterr().err
        assert not marker.exists(), f"{kind} ran code through a trained-model entry point"
    # a resume state replaced by a pickle: read with weights_only (refused and discarded), never executed
    from segarena.protocol.checkpoint import load_state

    state = tmp_path / "last.pt"
    shutil.copyfile(files["legacy-first-record"], state)
    assert load_state(state) is None and not marker.exists()


# one model per loader module: every family's own pretrained-file path
_FAMILY_LOADERS = ["segformer-b0", "swin-unet", "swin-umamba", "missformer", "hiformer-s", "transnext-micro-upernet",
                   "internimage-t-upernet", "segnext-t", "upernet-convnext-t", "vw-conv", "vw-mit", "unetplusplus",
                   "unet-vgg16", "dinov2-s-linear", "sam-vit-b", "mask2former-swin-t"]


@pytest.mark.slow
@pytest.mark.parametrize("name", _FAMILY_LOADERS)
def test_every_model_family_refuses_or_neutralises_malicious_pretrained(name, tmp_path):
    from segarena.models import create_model

    if name == "mask2former-swin-t":
        pytest.importorskip("transformers")
    marker = tmp_path / "PWNED"
    files = _payloads(tmp_path / "evil", marker)
    for kind, path in files.items():
        with pytest.raises(SegarenaError):  # wrong weights for any model, or unreadable: refused either way
            create_model(name, 1, in_channels=3, pretrained=str(path))
        assert not marker.exists(), f"{name}: {kind} ran code"
    folder = tmp_path / "folder"  # loaders that take a folder of official files (hiformer) look inside it
    folder.mkdir()
    for n in ("resnet34-b627a593.pth", "resnet50-0676ba61.pth", "swin_tiny_patch4_window7_224.pth"):
        shutil.copyfile(files["legacy-first-record"], folder / n)
    try:
        create_model(name, 1, in_channels=3, pretrained=str(folder))
    except SegarenaError:
        pass
    assert not marker.exists(), f"{name}: a folder of payloads ran code"


# ---- pinned digests: a file served in place of the official one is refused before it is read ------------------
def _served(tmp_path: Path, name: str, data: bytes) -> str:
    src = tmp_path / "server" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    return src.as_uri()


def test_downloads_are_checked_against_their_pinned_digest(tmp_path, monkeypatch):
    import hashlib

    from segarena.models.card import Weights
    from segarena.models.weights import resolve

    monkeypatch.delenv("SEGARENA_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("SEGARENA_WEIGHTS", str(tmp_path / "cache"))
    good = b"official weights"
    digest = hashlib.sha256(good).hexdigest()
    # a full pin (SAM, VMamba): the served file must match exactly
    ok = resolve(Weights(source=_served(tmp_path, "ok.pth", good), license="x", sha256=digest))
    assert ok.read_bytes() == good
    with pytest.raises(SegarenaError, match="checksum mismatch"):
        resolve(Weights(source=_served(tmp_path, "evil.pth", b"attacker"), license="x", sha256=digest))
    assert not (tmp_path / "cache" / "evil.pth").exists()
    # a torchvision-style name carries the sha256 prefix, checked like torch.hub does
    name = f"resnet-{digest[:8]}.pth"
    assert resolve(Weights(source=_served(tmp_path, name, good), license="x")).is_file()
    (tmp_path / "cache" / name).unlink()
    (tmp_path / "cache" / (name + ".sha256")).unlink()
    with pytest.raises(SegarenaError, match="does not match the pinned"):
        resolve(Weights(source=_served(tmp_path / "other", name, b"attacker"), license="x"))


def test_hub_downloads_are_checked_against_their_pinned_digest(tmp_path, monkeypatch):
    import hashlib

    import huggingface_hub

    from segarena.models.card import Weights
    from segarena.models.weights import resolve

    served = tmp_path / "model.safetensors"
    served.write_bytes(b"not what was pinned")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(served))
    pinned = hashlib.sha256(b"the official file").hexdigest()
    with pytest.raises(SegarenaError, match="does not match the pinned"):
        resolve(Weights(source="hf-hub:org/repo::model.safetensors", license="x", sha256=pinned))
    assert resolve(Weights(source="hf-hub:org/repo::model.safetensors", license="x",
                           sha256=hashlib.sha256(served.read_bytes()).hexdigest())) == served


def test_every_downloadable_weight_is_pinned_or_listed():
    """Each checkpoint a model card downloads has a full sha256, a digest in its official file name, or is one of
    the documented exceptions (docs/models/checkpoint-safety.md), whose loading is still weights_only."""
    import re

    from segarena.models import MODELS, list_models

    documented = (Path(__file__).resolve().parents[2] / "docs" / "models" / "checkpoint-safety.md").read_text()
    for name in list_models():
        for w in (MODELS.get(name).card.pretrained or {}).values():
            if w.sha256 or re.search(r"-[0-9a-f]{8,64}\.(pth|pt|bin)$", w.source):
                continue
            if w.source.startswith("library:"):  # smp/timm by-name models: the library downloads and loads them
                assert "`library:smp/...` or `library:timm/...`" in documented
                continue
            assert w.source.split("::")[0] in documented, f"{name}: {w.source} is neither pinned nor documented"


def test_unpinned_hub_files_are_checked_against_their_lfs_digest(tmp_path, monkeypatch):
    """Without a pin, a hub file is checked against the sha256 its LFS pointer declares, which the hub cache uses
    as the blob's name (``snapshots/<rev>/<file>`` -> ``blobs/<sha256>``): a blob changed afterwards is refused."""
    import hashlib

    import huggingface_hub

    from segarena.models.card import Weights
    from segarena.models.weights import resolve

    data = b"the hub's file"
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snap.mkdir(parents=True)
    blob = blobs / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    (snap / "model.safetensors").symlink_to(blob)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(snap / "model.safetensors"))
    w = Weights(source="hf-hub:org/repo::model.safetensors", license="x")
    assert resolve(w) == snap / "model.safetensors"
    blob.write_bytes(b"swapped in the cache")
    with pytest.raises(SegarenaError, match="does not match the pinned"):
        resolve(w)
