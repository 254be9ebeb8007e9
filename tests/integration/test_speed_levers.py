"""The GPU speed levers are options of the one training loop (``protocol.channels_last``, ``protocol.compile``,
``protocol.data_on_device``): each reaches the training step, checkpoints stay plain and load strictly, the
device-gathered batches give the records of the host path, and an interrupted run with the levers on resumes."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena._errors import SegarenaError
from segarena.protocol import context, loop, run, speed
from segarena.protocol.checkpoint import build_from_checkpoint


def _folder(root, n: int = 12):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "images" / f"c{i:02d}.png")
        m = np.zeros((40, 48), np.uint8)
        m[6:10 + 2 * i, 8:30] = 255
        Image.fromarray(m).save(root / "masks" / f"c{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("speed") / "data")


def _spec(data_dir, model: str = "tiny-unet", **proto) -> RunSpec:
    p = dict(input_size=32, epochs=2, batch_size=2, max_steps_per_epoch=2, augmentation="paper", amp=False, lr=1e-3,
             patience=None)
    p.update(proto)
    return RunSpec(data=DataConfig(name="folder", num_folds=3, options={"path": str(data_dir)}),
                   model=ModelConfig(name=model), protocol=ProtocolConfig(**p))


def _spy_steps(monkeypatch) -> list[dict]:
    """Record, for every training step, the input's and the first convolution weight's memory format."""
    seen: list[dict] = []
    real = loop.train_step

    def spy(forward, x, y, loss_fn, opt, scaler, feed, grad_clip=None, params=None):
        conv = next(m for m in opt.param_groups[0]["params"] if m.ndim == 4)
        seen.append({"x": x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(),
                     "w": conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous(),
                     "forward": forward})
        return real(forward, x, y, loss_fn, opt, scaler, feed, grad_clip, params)

    monkeypatch.setattr(loop, "train_step", spy)
    return seen


def test_channels_last_reaches_the_training_step_and_evaluation(data_dir, tmp_path, monkeypatch):
    seen = _spy_steps(monkeypatch)
    inputs: list[bool] = []
    real_to_device = context.to_device

    def eval_spy(data, idx, feed):
        x, y, order = real_to_device(data, idx, feed)
        inputs.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return x, y, order

    monkeypatch.setattr(loop, "to_device", eval_spy)  # validation
    res = run(_spec(data_dir, channels_last=True), tmp_path / "cl")
    assert len(seen) == 4 and all(s["x"] and s["w"] for s in seen)
    assert inputs and all(inputs)
    assert res.summary["metrics"]["mdsc"] >= 0
    seen.clear()
    inputs.clear()
    run(_spec(data_dir), tmp_path / "plain")  # the default: plain NCHW, so the check above tells them apart
    assert len(seen) == 4 and not any(s["x"] or s["w"] for s in seen) and not any(inputs)


class _Compiled(torch.nn.Module):
    """Stands in for ``torch.compile``'s wrapper: the model under ``_orig_mod``, so saving the wrapper instead of the
    model would show as ``_orig_mod.`` keys; counts its calls."""

    def __init__(self, model):
        super().__init__()
        self._orig_mod = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self._orig_mod(x)


def test_compile_wraps_the_training_forward_and_checkpoints_keep_plain_keys(data_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    made: list[_Compiled] = []

    def fake_compile(model, *a, **k):
        made.append(_Compiled(model))
        return made[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    seen = _spy_steps(monkeypatch)
    res = run(_spec(data_dir, compile=True, channels_last=True), tmp_path)
    assert len(made) == 1 and made[0].calls == 4  # every training step, and only those (evaluation is uncompiled)
    assert all(s["forward"] is made[0] for s in seen)
    ckpt = res.store.dir / "checkpoint"
    keys = list(load_file(str(ckpt / "model.safetensors")))
    assert keys and not any("_orig_mod" in k for k in keys)
    model, _ = build_from_checkpoint(ckpt)  # a fresh model from model.json, weights loaded strictly
    fresh = model.net.state_dict()
    missing, unexpected = model.net.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=True)
    assert not missing and not unexpected and set(fresh) == set(keys)


def test_data_on_device_gathers_there_and_gives_the_records_of_the_host_path(data_dir, tmp_path, monkeypatch):
    calls = {"host": 0, "device": 0}
    real_host, real_gather = context.host_batch, speed.DeviceArrays.gather

    def host(*a, **k):
        calls["host"] += 1
        return real_host(*a, **k)

    def gather(self, idx):
        calls["device"] += 1
        return real_gather(self, idx)

    monkeypatch.setattr(context, "host_batch", host)
    monkeypatch.setattr(speed.DeviceArrays, "gather", gather)
    spec = _spec(data_dir, deterministic=True)
    a = run(spec, tmp_path / "host")
    assert calls["host"] > 0 and calls["device"] == 0 and a.summary["data_on_device"] is False
    calls.update(host=0, device=0)
    on = _spec(data_dir, deterministic=True, data_on_device=True)
    assert on.run_id == spec.run_id  # the same run, fed another way
    b = run(on, tmp_path / "device")
    assert calls["device"] > 0 and calls["host"] == 0 and b.summary["data_on_device"] is True
    pd.testing.assert_frame_equal(a.store.records(), b.store.records())
    la, lb = (json.loads((r.store.dir / "log.json").read_text()) for r in (a, b))
    assert [e["train_loss"] for e in la] == [e["train_loss"] for e in lb]
    calls.update(host=0, device=0)
    c = run(_spec(data_dir, deterministic=True, data_on_device="auto"), tmp_path / "auto")  # CPU: indexed in place
    assert calls["device"] > 0 and calls["host"] == 0 and c.summary["data_on_device"] is True


def test_device_arrays_on_cpu_are_the_cache_itself_and_on_cuda_only_when_they_fit(monkeypatch):
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    masks = (np.arange(16, dtype=np.uint8).reshape(4, 2, 2) % 2)
    images.setflags(write=False)  # like the read-only memory map
    assert speed.device_arrays(images, masks, torch.device("cpu"), False) is None
    arr = speed.device_arrays(images, masks, torch.device("cpu"), "auto")
    assert arr.images.data_ptr() == images.ctypes.data  # no copy on CPU
    x, y = arr.gather([1, 3])
    assert np.array_equal(x.numpy(), images[[1, 3]]) and y.dtype == torch.long
    assert np.array_equal(y.numpy(), masks[[1, 3]])

    need = speed.array_bytes(images, masks)  # 64 bytes
    monkeypatch.setattr(speed, "_copy", lambda a, device: torch.from_numpy(np.array(a)))
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * need, 10**12))
    assert speed.device_arrays(images, masks, cuda, "auto") is not None  # a quarter of the free memory: fits
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * need - 4, 10**12))
    assert speed.device_arrays(images, masks, cuda, "auto") is None  # just over a quarter: fed from the host
    assert speed.device_arrays(images, masks, cuda, True) is not None  # required, and it fits in the free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (need - 1, 10**12))
    with pytest.raises(SegarenaError, match="does not fit"):
        speed.device_arrays(images, masks, cuda, True)


def test_an_interrupted_run_with_the_levers_on_resumes_like_an_uninterrupted_one(data_dir, tmp_path, monkeypatch):
    spec = _spec(data_dir, epochs=3, channels_last=True, data_on_device=True, deterministic=True)
    real_validate = loop._validate
    calls = {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # after epoch 0 was saved
        return real_validate(*a, **k)

    monkeypatch.setattr(loop, "_validate", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "a")
    monkeypatch.setattr(loop, "_validate", real_validate)
    resumed = run(spec, tmp_path / "a")
    assert [e["epoch"] for e in json.loads((resumed.store.dir / "log.json").read_text())] == [0, 1, 2]
    straight = run(spec, tmp_path / "b")
    assert resumed.summary["metrics"]["mdsc"] == pytest.approx(straight.summary["metrics"]["mdsc"], abs=1e-6)


@pytest.mark.slow
def test_a_real_torch_compile_run_on_cpu(data_dir, tmp_path):
    """torch.compile itself (inductor, CPU): the run completes and its checkpoint is plain. Well under a minute."""
    res = run(_spec(data_dir, model="tiny-fcn", compile=True, epochs=1, augmentation="none"), tmp_path)
    assert res.summary["metrics"]["mdsc"] >= 0
    model, _ = build_from_checkpoint(res.store.dir / "checkpoint")
    assert not any("_orig_mod" in k for k in model.state_dict())
