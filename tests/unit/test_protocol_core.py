"""The protocol core: the losses that are trained on, the learning-rate schedule, how logits become labels, the
validation score that selects the checkpoint, and early stopping that restores the selected epoch.

Every expected value comes from something segarena did not write: MONAI's ``DiceLoss``/``DiceCELoss``,
``torch.nn`` losses, numpy hand computations in float64, or the REX formula of Chen et al. written out here.
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from segarena._errors import ConfigError
from segarena.protocol import loop
from segarena.protocol.losses import LOSSES, out_channels, resolve_loss, to_labels
from segarena.protocol.schedules import make_scheduler, rex_factor

monai_losses = pytest.importorskip("monai.losses")  # a test extra (pyproject [test]); always there in `make test`


def _logits_and_target(n: int, k: int, h: int = 12, w: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g) * 2
    target = torch.randint(0, 2 if k == 1 else k, (n, h, w), generator=g)
    return logits, target


# ------------------------------------------------------------------------------------------------------ losses
def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))


@pytest.mark.parametrize("seed", [0, 1])
def test_ce_is_the_mean_negative_log_likelihood(seed):
    logits, target = _logits_and_target(3, 4, seed=seed)
    x, t = logits.double().numpy(), target.numpy()
    logp = _np_log_softmax(x)
    want = -np.take_along_axis(logp, t[:, None], axis=1).mean()  # hand: mean over every pixel of -log p(true)
    got = LOSSES.get("ce").fn(logits, target)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(got) == pytest.approx(float(nn.CrossEntropyLoss()(logits, target)), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_bce_is_the_mean_binary_log_loss_of_one_logit(seed):
    logits, target = _logits_and_target(3, 1, seed=seed)
    x, t = logits[:, 0].double().numpy(), target.double().numpy()
    p = 1 / (1 + np.exp(-x))
    want = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    got = LOSSES.get("bce").fn(logits, target)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(got) == pytest.approx(float(nn.BCEWithLogitsLoss()(logits[:, 0], target.float())), rel=1e-6)


def _monai_dice_ce(k: int, **kw):
    # segarena's soft Dice: batch Dice (pixels pooled over the batch, as nnU-Net), foreground classes only,
    # smoothing 1 in numerator and denominator; CE over all K logits (BCE on the single logit for binary)
    common = dict(batch=True, smooth_nr=1.0, smooth_dr=1.0, **kw)
    if k == 1:
        return monai_losses.DiceLoss(sigmoid=True, **common), monai_losses.DiceCELoss(sigmoid=True, **common)
    common.update(include_background=False, to_onehot_y=True, softmax=True)
    return monai_losses.DiceLoss(**common), monai_losses.DiceCELoss(**common)


@pytest.mark.parametrize(("name", "k"), [("dice_ce", 2), ("dice_ce", 4), ("dice_bce", 1)])
def test_dice_losses_match_monai_values_and_gradients(name, k):
    logits, target = _logits_and_target(4, k, h=16, w=12, seed=k)
    dice_ref, dice_ce_ref = _monai_dice_ce(k)
    ours = LOSSES.get(name).fn
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = ours(a, target)
    want = dice_ce_ref(b, target[:, None].float() if k == 1 else target[:, None])
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    want.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    # the Dice term alone, too (the CE terms were checked above)
    ce = LOSSES.get("bce" if k == 1 else "ce").fn(logits, target)
    dice_only = float(ours(logits, target) - ce)
    assert dice_only == pytest.approx(float(dice_ref(logits, target[:, None].float() if k == 1 else target[:, None])),
                                      rel=1e-5)


def test_soft_dice_hand_computation_and_empty_foreground():
    # 1 image, 2 pixels, one sigmoid logit: p = sigmoid(0) = 0.5 and sigmoid(ln 3) = 0.75; target (1, 0)
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 1, 1, 2)
    target = torch.tensor([1, 0]).reshape(1, 1, 2)
    dice_term = float(LOSSES.get("dice_bce").fn(logits, target) - LOSSES.get("bce").fn(logits, target))
    # 1 - (2 * 0.5 + 1) / (0.5 + 0.75 + 1 + 1): smoothing 1 in numerator and denominator
    assert dice_term == pytest.approx(1 - 2.0 / 3.25, rel=1e-6)
    # a batch without foreground: the loss stays finite (the smoothing), and predicting nothing costs ~nothing
    logits, _ = _logits_and_target(2, 3)
    none = torch.zeros(2, 12, 10, dtype=torch.long)
    for name in ("dice_ce", "ce"):
        assert torch.isfinite(LOSSES.get(name).fn(logits, none))
    confident_background = torch.full((1, 1, 8, 8), -20.0)
    assert float(LOSSES.get("dice_bce").fn(confident_background, torch.zeros(1, 8, 8, dtype=torch.long))) < 1e-3


def test_losses_compute_in_float32_from_half_precision_logits():
    logits, target = _logits_and_target(2, 3)
    for name in ("ce", "dice_ce"):
        fn = LOSSES.get(name).fn
        got = fn(logits.to(torch.bfloat16), target)
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(float(fn(logits.to(torch.bfloat16).float(), target)), rel=1e-6)


def test_resolve_loss_auto_and_sigmoid_outputs():
    assert resolve_loss("auto", 2).name == "bce" and out_channels(resolve_loss("auto", 2), 2) == 1
    assert resolve_loss("auto", 4).name == "ce" and out_channels(resolve_loss("auto", 4), 4) == 4
    assert out_channels(resolve_loss("dice_ce", 2), 2) == 2
    with pytest.raises(ConfigError, match="binary tasks"):
        resolve_loss("dice_bce", 3)


# ---------------------------------------------------------------------------------------------------- schedules
def _rex(t: int, total: int) -> float:
    """REX, Chen, Wolfe & Kyrillidis, "REX: Revisiting Budgeted Training with an Improved Schedule", MLSys 2022
    (arXiv:2107.04197): lr_t = lr_0 * (1 - t/T) / (1/2 + 1/2 * (1 - t/T))."""
    z = t / total
    return (1 - z) / (0.5 + 0.5 * (1 - z))


@pytest.mark.parametrize("total", [1, 4, 7, 150])
def test_rex_learning_rate_at_every_epoch(total):
    lr0 = 3e-4
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr0)
    sched = make_scheduler("rex", opt, total)
    for epoch in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr0 * _rex(epoch, total), rel=1e-12, abs=1e-18), epoch
        assert rex_factor(epoch, total) == pytest.approx(_rex(epoch, total), rel=1e-12)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0  # t = T: the schedule ends at zero


def test_rex_hand_values_and_shape():
    # T = 4: 1, 0.75/0.875 = 6/7, 0.5/0.75 = 2/3, 0.25/0.625 = 2/5, 0
    assert [rex_factor(e, 4) for e in range(5)] == pytest.approx([1, 6 / 7, 2 / 3, 2 / 5, 0], rel=1e-12)
    f = [rex_factor(e, 100) for e in range(101)]
    assert all(a > b for a, b in zip(f, f[1:]))  # strictly decreasing
    assert all(r >= 1 - e / 100 for e, r in enumerate(f))  # above the linear schedule (the "reflected" profile)
    assert rex_factor(200, 100) == 0.0  # past the budget: stays at zero


def test_cosine_and_constant_schedules():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler("cosine", opt, 8)
    for epoch in range(8):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * epoch / 8)), abs=1e-12)
        opt.step()
        sched.step()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler("constant", opt, 8)
    for _ in range(8):
        assert opt.param_groups[0]["lr"] == 0.1
        opt.step()
        sched.step()


def test_rex_resumes_where_it_stopped():
    """A resumed run reloads the scheduler's state: the learning rate continues on the same curve."""
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = make_scheduler("rex", opt, 10)
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched2 = make_scheduler("rex", opt2, 10)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    for epoch in range(4, 10):
        assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3 * _rex(epoch, 10), rel=1e-12)
        opt2.step()
        sched2.step()


# ---------------------------------------------------------------------------------------------------- to_labels
def test_to_labels_binary_is_sigmoid_above_one_half():
    logits, _ = _logits_and_target(3, 1)
    logits[0, 0, 0, :3] = torch.tensor([0.0, 1e-6, -1e-6])  # sigmoid(0) = 0.5 is not foreground
    got = to_labels(logits)
    assert got.shape == (3, 12, 10) and got.dtype == torch.long
    want = (1 / (1 + np.exp(-logits[:, 0].double().numpy())) > 0.5).astype(np.int64)
    np.testing.assert_array_equal(got.numpy(), want)
    assert got[0, 0, :3].tolist() == [0, 1, 0]


def test_to_labels_multiclass_is_the_argmax_of_softmax():
    logits, _ = _logits_and_target(3, 4)
    got = to_labels(logits)
    assert got.shape == (3, 12, 10) and got.dtype == torch.long
    np.testing.assert_array_equal(got.numpy(), np.argmax(logits.numpy(), axis=1))
    assert set(np.unique(got.numpy())) == {0, 1, 2, 3}
    # two channels (softmax over background/foreground) is the argmax too, not a threshold on channel 1
    two = torch.tensor([[[[0.0]], [[0.5]]], [[[2.0]], [[1.0]]]])  # [2, 2, 1, 1]
    assert to_labels(two).flatten().tolist() == [1, 0]


# ---------------------------------------------------------------------- validation mDSC == test-time pooled mDSC
class _FixedLogits(nn.Module):
    """A fixed 1x1 convolution: deterministic, image-dependent logits."""

    def __init__(self, in_ch: int, k: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(in_ch, k, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(k, in_ch, 1, 1, generator=g) * 4)
            self.conv.bias.copy_(torch.randn(k, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x - 0.5)


def _hand_pooled_dice(preds: np.ndarray, refs: np.ndarray, k: int) -> float:
    """Borst & Kounev's mDSC by hand: 2 * sum_c |P_c & R_c| / (sum_c |P_c| + sum_c |R_c|) over foreground c."""
    inter = sum(int(((preds == c) & (refs == c)).sum()) for c in range(1, k))
    sizes = sum(int((preds == c).sum()) + int((refs == c).sum()) for c in range(1, k))
    return 2 * inter / sizes if sizes else 1.0


@pytest.mark.parametrize(("k", "bs"), [(2, 3), (3, 4), (4, 7)])
def test_validation_mdsc_equals_test_time_pooled_mdsc(k, bs):
    import pandas as pd

    from segarena.metrics.overlap import case_records, confusion, mdsc

    rng = np.random.default_rng(k)
    n, s = 7, 16
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    masks = rng.integers(0, k, (n, s, s), dtype=np.uint8)
    masks[2] = 0  # a case without foreground
    data = SimpleNamespace(images=images, masks=masks)
    spec = resolve_loss("auto", k)
    model = _FixedLogits(3, out_channels(spec, k), seed=k).eval()
    idx = [5, 0, 3, 2, 6, 1]  # unsorted, a batch size that does not divide it
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    val = loop._validate(model, data, idx, spec, loop.Feed(torch.device("cpu"), False, mean, std, bs))

    with torch.no_grad():  # the same predictions, made here from the raw arrays
        x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255
        preds = to_labels(model(x)).numpy()
    refs = masks[idx]
    records = []
    for case, p, r in zip(idx, preds, refs):
        records += case_records(f"c{case}", confusion(p, r, k), [f"l{c}" for c in range(k)])
    test_time = mdsc(pd.DataFrame.from_records(records))
    assert 0.05 < test_time < 0.95  # neither trivial
    assert val["val_mdsc"] == pytest.approx(test_time, abs=1e-12)
    assert val["val_mdsc"] == pytest.approx(_hand_pooled_dice(preds, refs, k), abs=1e-12)
    # val_loss: the case-weighted mean of the batch losses (each batch's loss is a mean over its pixels)
    logits = model(x).detach()
    want_loss = sum(float(spec.fn(logits[i:i + bs], torch.from_numpy(refs[i:i + bs]).long())) * len(refs[i:i + bs])
                    for i in range(0, len(idx), bs)) / len(idx)
    assert val["val_loss"] == pytest.approx(want_loss, rel=1e-5)


def test_validation_mdsc_of_nothing_to_find_is_one():
    data = SimpleNamespace(images=np.zeros((2, 8, 8, 3), np.uint8), masks=np.zeros((2, 8, 8), np.uint8))
    model = _FixedLogits(3, 1, seed=0)
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.fill_(-5.0)  # predicts background everywhere
    val = loop._validate(model, data, [0, 1], resolve_loss("auto", 2), loop.Feed(torch.device("cpu"), False,
                                                                               (0.0,) * 3, (1.0,) * 3, 2))
    assert val["val_mdsc"] == 1.0  # both empty: a correct "nothing here", as the test-time policy


# ------------------------------------------------------------------------------- early stopping and the checkpoint
def _tiny_spec(root, **proto):
    from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec

    p = dict(input_size=32, epochs=9, batch_size=4, max_steps_per_epoch=2, augmentation="none", amp=False,
             lr=3e-3, patience=2, eval_resolution="network")
    p.update(proto)
    return RunSpec(data=DataConfig(name="kvasir-seg", root=str(root), limit=24),
                   model=ModelConfig(name="tiny-unet"), protocol=ProtocolConfig(**p))


@pytest.mark.realdata
@pytest.mark.parametrize(("monitor", "scores"), [
    ("val_mdsc", [0.10, 0.40, 0.30, 0.35, 0.90, 0.95, 0.99, 0.99, 0.99]),  # best: epoch 1; 2 and 3 worse -> stop
    ("val_loss", [0.90, 0.80, 0.50, 0.60, 0.55, 0.10, 0.05, 0.01, 0.01]),  # best: epoch 2; 3 and 4 worse -> stop
])
def test_early_stopping_restores_the_best_epoch(real_data_root, tmp_path, monkeypatch, monitor, scores):
    """Validation scores are scripted (the real validation still runs); the weights of every epoch are captured
    from the resume state. The checkpoint must hold the best epoch's weights, the test predictions must be that
    epoch's, training must stop after ``patience`` epochs without improvement, and the learning rate of every
    epoch must follow REX."""
    from safetensors.torch import load_file

    from segarena.data.augment import normalize
    from segarena.data.prepare import prepare
    from segarena.models import create_model

    real_validate, real_save_state = loop._validate, loop.save_state
    calls: list[dict[str, float]] = []
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def scripted(*args, **kwargs):
        val = real_validate(*args, **kwargs)
        val[monitor] = scores[len(calls)]
        calls.append(val)
        return val

    def capture(path, state):
        weights[state["epoch"]] = {k: v.detach().clone() for k, v in state["model"].items()}
        real_save_state(path, state)

    monkeypatch.setattr(loop, "_validate", scripted)
    monkeypatch.setattr(loop, "save_state", capture)
    spec = _tiny_spec(real_data_root, monitor=monitor)
    res = loop.run(spec, tmp_path)
    s, log = res.summary, res.store.log()
    best = int(np.argmax(scores[:4]) if monitor == "val_mdsc" else np.argmin(scores[:5]))
    assert s["best_epoch"] == best and s["stopped_early"] is True
    assert s["epochs_run"] == len(log) == best + 1 + spec.protocol.patience
    assert [e[monitor] for e in log] == scores[:len(log)]
    ckpt = json.loads((res.store.dir / "checkpoint" / "model.json").read_text())
    assert ckpt["epoch"] == best and ckpt[monitor] == scores[best]
    for e in log:  # REX at every epoch that ran (the budget is the planned epochs, not the epochs run)
        assert e["lr"] == pytest.approx(spec.protocol.lr * _rex(e["epoch"], spec.protocol.epochs), rel=1e-12)

    saved = load_file(str(res.store.dir / "checkpoint" / "model.safetensors"))
    best_w = {k[len("net."):]: v for k, v in weights[best].items() if k.startswith("net.")}
    last_w = {k[len("net."):]: v for k, v in weights[len(log) - 1].items() if k.startswith("net.")}
    assert set(saved) == set(best_w)
    for key, value in saved.items():
        assert torch.equal(value, best_w[key]), key
    assert any(not torch.equal(saved[k], last_w[k]) for k in saved)  # it is not simply the last epoch

    # the test predictions were made with the best epoch's weights
    data = prepare("kvasir-seg", spec.protocol.input_size, root=str(real_data_root), limit=spec.data.limit)
    split = json.loads((res.store.dir / "split.json").read_text())
    pos = {cid: i for i, cid in enumerate(data.ids)}
    test_idx = [pos[c] for c in split["test"]]
    model = create_model("tiny-unet", 1, in_channels=3).eval()
    model.load_state_dict(weights[best])
    with torch.no_grad():
        x = normalize(torch.from_numpy(np.ascontiguousarray(data.images[test_idx])), model.card.mean, model.card.std)
        want = to_labels(model(x)).numpy().astype(np.uint8)
    stored = np.load(res.store.dir / "predictions.npz")
    assert list(stored["ids"]) == split["test"]
    np.testing.assert_array_equal(stored["labels"], want)
