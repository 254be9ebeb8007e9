"""SegNeXt, VWFormer and UPerNet beyond the registry contract: parameter counts against the papers, the
Hamburger/NMF module, the varying-window machinery, Swin at arbitrary sizes, and every converter on a checkpoint
written locally in the official key layout and loaded through the same code path as a downloaded one."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from segarena import SegarenaError
from segarena.models import create_model
from segarena.models.weights import adapt_first_conv
from segarena.models.zoo.heads import UPerNetHead
from segarena.models.zoo.segnext import _SPECS, NMF2D, Hamburger, SegNeXt
from segarena.models.zoo.upernet import TimmPyramid, convert_timm_backbone
from segarena.models.zoo.vwformer import (VWFormerHead, copy_shift_pad, fold_blocks, from_windows, to_windows,
                                          window_contexts)


def n_params(m: torch.nn.Module) -> float:
    return sum(p.numel() for p in m.parameters()) / 1e6


# ------------------------------------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize(("variant", "paper_m"), [("t", 4.3), ("s", 13.9), ("b", 27.6), ("l", 48.9)])
def test_segnext_params_match_segnext_paper(variant, paper_m):
    """Guo et al., SegNeXt, NeurIPS 2022 (arXiv:2209.08575), ADE20K results table (150 classes): T 4.3M,
    S 13.9M, B 27.6M, L 48.9M (the expected values are the paper's, not read from the module's specs)."""
    spec = _SPECS[variant]
    assert math.isclose(n_params(SegNeXt(spec, 150)), paper_m, rel_tol=0.01)
    assert spec.params_m == paper_m  # the number the card prints


def test_upernet_head_params():
    """UPerHead(512) on Swin/ConvNeXt-T widths: PPM 4x(768x512) + bottleneck 3x3 (768+2048 -> 512) + laterals +
    3 FPN 3x3 convs + 3x3 fusion of 4x512 = 31.42M (the MMSeg UPerNet-T models are ~60M with a 28M backbone and
    a ~0.9M auxiliary head)."""
    head = UPerNetHead([96, 192, 384, 768], 512, num_classes=150)
    assert math.isclose(n_params(head), 31.50, rel_tol=0.005)
    out = head([torch.randn(2, c, 32 // s, 40 // s) for c, s in zip([96, 192, 384, 768], [1, 2, 4, 8])])
    assert out.shape == (2, 150, 32, 40)


# --------------------------------------------------------------------------------------------------- Hamburger/NMF
def test_nmf_output_shape_non_negative_and_reconstructs_low_rank():
    torch.manual_seed(0)
    w, h = torch.rand(2, 32, 4), torch.rand(2, 4, 100)
    x = torch.bmm(w, h).reshape(2, 32, 10, 10)  # non-negative, rank 4
    nmf = NMF2D(rank=8).eval()
    y = nmf(x)
    assert y.shape == x.shape
    assert (y >= 0).all() and torch.isfinite(y).all()
    rel = (y - x).norm() / x.norm()
    assert rel < 0.2, f"NMF reconstruction error {rel:.3f}"
    torch.manual_seed(0)
    no_iter = NMF2D(rank=8, eval_steps=0).eval()(x)  # the multiplicative updates must improve the fit
    assert (no_iter - x).norm() / x.norm() > 1.5 * rel
    assert not torch.allclose(NMF2D(rank=8)(x), x.new_zeros(x.shape))


def _nmf_by_hand(x: np.ndarray, bases: np.ndarray, steps: int, eps: float = 1e-6) -> np.ndarray:
    """Lee & Seung's multiplicative updates for X (C x HW) ~ B C^T, written out in float64 numpy as the
    Hamburger paper (Geng et al., ICLR 2021) runs them: coef from a softmax of X^T B, ``steps`` updates of coef
    then bases, one last coef update, reconstruction B C^T."""
    out = []
    for xb, b in zip(x, bases):
        b = b / np.linalg.norm(b, axis=0, keepdims=True)
        proj = xb.T @ b
        coef = np.exp(proj - proj.max(1, keepdims=True))
        coef /= coef.sum(1, keepdims=True)
        for _ in range(steps):
            coef = coef * (xb.T @ b) / (coef @ (b.T @ b) + eps)
            b = b * (xb @ coef) / (b @ (coef.T @ coef) + eps)
        coef = coef * (xb.T @ b) / (coef @ (b.T @ b) + eps)
        out.append(b @ coef.T)
    return np.stack(out)


def test_nmf_evaluation_uses_fixed_bases_and_matches_a_hand_computation():
    """Evaluation draws its bases from a fixed generator (seed 0), so a prediction never depends on the global
    random state; the result is the textbook NMF from those bases. Training draws fresh bases."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((2, 16, 6, 5))).float()
    nmf = NMF2D(rank=4).eval()
    bases = torch.rand(2, 16, 4, generator=torch.Generator().manual_seed(0)).double().numpy()
    want = _nmf_by_hand(x.double().reshape(2, 16, 30).numpy(), bases, nmf.eval_steps).reshape(2, 16, 6, 5)
    torch.manual_seed(123)
    np.testing.assert_allclose(nmf(x).double().numpy(), want, rtol=1e-4, atol=1e-6)
    torch.manual_seed(456)  # another global random state: the same prediction
    np.testing.assert_allclose(nmf(x).double().numpy(), want, rtol=1e-4, atol=1e-6)
    nmf.train()
    torch.manual_seed(7)
    a = nmf(x)
    torch.manual_seed(8)
    assert not torch.allclose(a, nmf(x))  # training bases are random


def test_segnext_prediction_does_not_depend_on_the_global_random_state():
    m = create_model("segnext-t", 1).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(1)
        a = m(x)
        torch.manual_seed(2)
        b = m(x)
        m.train()
        torch.manual_seed(1)
        c = m(x)
        torch.manual_seed(2)
        d = m(x)
    assert torch.equal(a, b)
    assert not torch.equal(c, d)  # the control: in training mode the NMF bases and drop path are random


@pytest.mark.parametrize("grad", ["full", "one_step"])
def test_nmf_gradients_reach_the_input(grad):
    x = torch.rand(1, 16, 6, 6, requires_grad=True)
    NMF2D(rank=4, grad=grad)(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_nmf_rejects_unknown_grad_mode():
    with pytest.raises(ValueError, match="one_step"):
        NMF2D(grad="none")


def test_hamburger_runs_in_fp32_under_autocast():
    ham = Hamburger(32, rank=4)
    x = torch.randn(2, 32, 8, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ham(x)
    assert y.dtype == torch.float32 and (y >= 0).all()


def test_segnext_logits_at_one_eighth_and_one_step_kwarg():
    net = create_model("segnext-t", 2, nmf_grad="one_step").net
    assert net.decode_head.hamburger.ham.grad == "one_step"
    assert net(torch.randn(2, 3, 64, 96)).shape == (2, 2, 8, 12)


# ------------------------------------------------------------------------------------------- varying windows
def test_windows_round_trip_and_order():
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).reshape(2, 3, 16, 24)
    w = to_windows(x, 8, 8)
    assert w.shape == (128, 3, 2, 3)
    assert torch.equal(w[8 * 1 + 5], x[0, :, 2:4, 15:18])  # image 0, window row 1, column 5
    assert torch.equal(w[64 + 63], x[1, :, 14:16, 21:24])
    assert torch.equal(from_windows(w, 2, 8, 8), x)


@pytest.mark.parametrize("r", [2, 4, 8])
def test_contexts_are_centred_on_their_windows(r):
    """Each context is the r*p square centred on its window; its middle p x p block is the window itself."""
    p = 2
    x = torch.randn(1, 3, 8 * p, 8 * p)
    ctx = window_contexts(x, r, p, p)
    assert ctx.shape == (64, 3, r * p, r * p)
    off = (r - 1) * p // 2
    assert torch.equal(ctx[:, :, off:off + p, off:off + p], to_windows(x, 8, 8))
    if r < 8:  # inner windows see the true neighbourhood (for r = 8 every context reaches the padding)
        i = j = 4
        top = i * p - off
        assert torch.equal(ctx[i * 8 + j], x[0, :, top:top + r * p, j * p - off:j * p - off + r * p])


def test_copy_shift_padding_copies_content():
    x = torch.arange(16.0).reshape(1, 1, 1, 16).expand(1, 1, 16, 16)
    y = copy_shift_pad(x, 2, 2, 2)  # pad (r-1)p/2 = 1 column each side: columns [3:4] left, [-4:-3] right
    assert y.shape == (1, 1, 18, 18)
    assert y[0, 0, 5, 0] == 3 and y[0, 0, 5, -1] == 12


def test_fold_blocks_channel_order():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = fold_blocks(x, 2)
    assert y.shape == (1, 8, 2, 2)
    # channel index = (row_in_block * 2 + col_in_block) * c + channel
    for rh in range(2):
        for rw in range(2):
            for c in range(2):
                assert torch.equal(y[0, (rh * 2 + rw) * 2 + c], x[0, c, rh::2, rw::2])


def test_vwformer_head_needs_a_window_grid():
    head = VWFormerHead([8, 16, 24, 32], 2, channels=64, heads=2).eval()
    ok = [torch.randn(1, c, 64 // s, 64 // s) for c, s in zip([8, 16, 24, 32], [1, 2, 4, 8])]
    assert head(ok).shape == (1, 2, 64, 64)
    bad = [torch.randn(1, c, 48 // s, 48 // s) for c, s in zip([8, 16, 24, 32], [1, 2, 4, 8])]
    with pytest.raises(SegarenaError, match="multiple of 128"):
        head(bad)


def test_vwformer_attention_branches_start_as_shortcuts():
    """The output BN of every attention branch is zero-initialised, as in the official non-local block."""
    head = VWFormerHead([8, 16, 24, 32], 2, channels=64).eval()
    x = torch.randn(1, 64, 16, 16)
    q = to_windows(x, 8, 8)
    assert torch.allclose(head.attn[0](q, q), torch.zeros_like(q))


# -------------------------------------------------------------------------------------------------- Swin sizes
@pytest.mark.slow
def test_swin_pyramid_runs_at_arbitrary_sizes():
    body = TimmPyramid("swin_tiny_patch4_window7_224", img_size=512, strict_img_size=False).eval()
    with torch.no_grad():
        for h, w in [(160, 224), (96, 64)]:  # 40x56 / 24x16 at stride 4: not multiples of the 7x7 window
            feats = body(torch.randn(1, 3, h, w))
            assert [tuple(f.shape) for f in feats] == [(1, c, h // s, w // s) for c, s in
                                                       zip([96, 192, 384, 768], [4, 8, 16, 32])]


@pytest.mark.slow
def test_upernet_swin_any_input_size():
    model = create_model("upernet-swin-t", 2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 100, 70)).shape == (1, 2, 100, 70)


# ------------------------------------------------------------------------------------------------- converters
def _assert_loaded(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    assert expected, "nothing to compare"
    for k, v in expected.items():
        assert torch.equal(own[k], v), k


def _randomised(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in state.items()}


@pytest.mark.parametrize("layout", ["segnext", "mmseg1x"])
def test_mscan_checkpoint_loads(tmp_path, layout):
    ref = _randomised(SegNeXt(_SPECS["t"], 1).backbone.state_dict())
    official = {k: v for k, v in ref.items()}
    if layout == "mmseg1x":  # MMSeg 1.x re-export: flat depth-wise conv, wrapped under backbone.
        official = {"backbone." + k.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv."): v for k, v in official.items()}
    official["head.weight"], official["head.bias"] = torch.randn(1000, 256), torch.randn(1000)
    path = tmp_path / "mscan_t.pth"
    torch.save({"state_dict": official}, path)
    net = create_model("segnext-t", 1, pretrained=str(path)).net
    _assert_loaded(net.backbone, ref)
    # single-channel input: the stem's RGB filters are summed
    net1 = create_model("segnext-t", 1, in_channels=1, pretrained=str(path)).net
    w = net1.backbone.state_dict()["patch_embed1.proj.0.weight"]
    assert torch.allclose(w, ref["patch_embed1.proj.0.weight"].sum(1, keepdim=True))


def test_mscan_checkpoint_of_another_variant_is_refused(tmp_path):
    path = tmp_path / "mscan_s.pth"
    torch.save(SegNeXt(_SPECS["s"], 1).backbone.state_dict(), path)
    with pytest.raises(SegarenaError, match="does not match"):
        create_model("segnext-t", 1, pretrained=str(path))


@pytest.mark.slow
def test_mit_checkpoint_loads_into_vw_mit(tmp_path):
    import segmentation_models_pytorch as smp

    ref = _randomised(smp.encoders.get_encoder("mit_b3", in_channels=3, depth=5, weights=None).state_dict())
    official = dict(ref, **{"head.weight": torch.randn(1000, 512), "head.bias": torch.randn(1000)})
    path = tmp_path / "mit_b3.pth"
    torch.save(official, path)
    _assert_loaded(create_model("vw-mit", 1, pretrained=str(path)).net.backbone.encoder, ref)
    del official["block3.17.mlp.fc2.bias"]
    torch.save(official, path)
    with pytest.raises(SegarenaError, match="missing: encoder.block3.17.mlp.fc2.bias"):
        create_model("vw-mit", 1, pretrained=str(path))


def _convnext_to_fb(k: str) -> str:
    """timm ConvNeXt key -> facebookresearch/ConvNeXt release key (the inverse of timm's filter)."""
    k = k.replace("stem.", "downsample_layers.0.")
    k = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", k)
    k = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", k)
    k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
    return k.replace("head.norm.", "norm.").replace("head.fc.", "head.")


def _swin_to_ms(k: str) -> str:
    """timm Swin key -> microsoft/Swin-Transformer release key (downsampling at the end of the previous stage)."""
    k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
    return k.replace("head.fc.", "head.")


@pytest.mark.slow
@pytest.mark.parametrize("model_name,timm_name,to_official", [
    ("upernet-convnext-t", "convnext_tiny", _convnext_to_fb),
    ("upernet-swin-t", "swin_tiny_patch4_window7_224", _swin_to_ms),
])
def test_official_backbone_checkpoints_load(tmp_path, model_name, timm_name, to_official):
    import timm

    kwargs = {"img_size": 512, "strict_img_size": False} if "swin" in timm_name else {}
    cls = timm.create_model(timm_name, pretrained=False, **kwargs)
    ref = _randomised(cls.state_dict())
    official = {to_official(k): v for k, v in ref.items()}
    assert official.keys() != ref.keys()
    path = tmp_path / "official.pth"
    torch.save({"model": official}, path)
    body = create_model(model_name, 1, pretrained=str(path)).net.backbone.body
    expected = {re.sub(r"^([a-z_]+)\.(\d+)\.", r"\1_\2.", k): v for k, v in ref.items()
                if not k.startswith(("head.", "norm.")) and "relative_position_index" not in k}
    _assert_loaded(body, expected)


@pytest.mark.slow
def test_timm_layout_checkpoint_loads_into_vw_conv(tmp_path):
    from safetensors.torch import save_file

    pyramid = TimmPyramid("convnext_small", in_channels=1, drop_path_rate=0.4)
    import timm

    ref = _randomised(timm.create_model("convnext_small", pretrained=False).state_dict())
    path = tmp_path / "model.safetensors"
    save_file(ref, str(path))
    converted = convert_timm_backbone(dict(ref), pyramid)
    assert converted["stem_0.weight"].shape[1] == 1
    body = create_model("vw-conv", 1, in_channels=1, pretrained=str(path)).net.backbone.body
    _assert_loaded(body, {"stages_2.blocks.26.mlp.fc2.weight": ref["stages.2.blocks.26.mlp.fc2.weight"],
                          "stem_0.weight": ref["stem.0.weight"].sum(1, keepdim=True)})


def test_adapt_first_conv_tiles_for_other_channel_counts():
    w = torch.randn(8, 3, 3, 3)
    out = adapt_first_conv({"w": w}, "w", 4)["w"]
    assert out.shape == (8, 4, 3, 3)
    assert torch.allclose(out[:, 3], w[:, 0] * 0.75)
