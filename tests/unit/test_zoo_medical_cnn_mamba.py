"""Medical zoo part 2: the selective scan against a sequential reference, Swin-UMamba's VMamba checkpoint
converter, nnU-Net's 2D planner and network (parity with nnU-Net's own library where installed), Attention U-Net,
and the local-checkpoint path of the smp-based UNet++ / VGG-16 U-Net."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segarena import SegarenaError
from segarena.models.zoo import nnunet, swin_umamba, unet_variants
from segarena.models.zoo._selective_scan import linear_scan, selective_scan, selective_scan_torch


# ------------------------------------------------------------------------------------------ selective scan
def _reference_scan(u, delta, A, B, C, D, z, delta_bias, softplus):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t ; y_t = C_t h_t + D u_t, one time step at a time."""
    b, d, length = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    B = B.repeat_interleave(d // B.shape[1], dim=1)  # [b, d, n, L]
    C = C.repeat_interleave(d // C.shape[1], dim=1)
    h = torch.zeros(b, d, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[..., t] * u[:, :, t, None]
        ys.append((h * C[..., t]).sum(-1) + (D * u[:, :, t] if D is not None else 0))
    y = torch.stack(ys, dim=-1)
    return y * F.silu(z) if z is not None else y


@pytest.mark.parametrize("groups,length,chunk", [(4, 37, 4), (1, 300, 16), (2, 16, 16), (4, 1, 16)])
def test_selective_scan_matches_sequential_recurrence(groups, length, chunk):
    torch.manual_seed(0)
    b, dg, n = 2, 3, 5
    d = groups * dg
    u, delta, z = torch.randn(b, d, length), torch.randn(b, d, length), torch.randn(b, d, length)
    A = -torch.exp(torch.randn(d, n))
    shape = (b, groups, n, length) if groups > 1 else (b, n, length)
    B, C = torch.randn(shape), torch.randn(shape)
    D, bias = torch.randn(d), torch.randn(d)
    ref = _reference_scan(u, delta, A, B, C, D, z, bias, True)
    out = selective_scan_torch(u, delta, A, B, C, D, z, bias, True, chunk=chunk)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the dispatcher takes the same path on CPU
    torch.testing.assert_close(selective_scan(u, delta, A, B, C, D, z, bias, True), out)


def test_selective_scan_gradients_match_reference():
    torch.manual_seed(1)
    b, d, n, length = 1, 4, 3, 70
    leaves = [torch.randn(b, d, length), torch.randn(b, d, length) - 1, -torch.rand(d, n) * 4,
              torch.randn(b, 2, n, length), torch.randn(b, 2, n, length), torch.randn(d)]
    grads = []
    for fn in (_reference_scan, selective_scan_torch):
        xs = [t.clone().double().requires_grad_() for t in leaves]
        fn(*xs, None, None, True).pow(2).sum().backward()
        grads.append([x.grad for x in xs])
    for g_ref, g in zip(*grads):
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)  # ours computes in float32


def test_linear_scan_is_stable_for_strong_decay():
    # decays of exp(-60) per step: a log-space cumulative-sum formulation would overflow float32 within a chunk
    a = torch.full((1, 64), math.exp(-60.0))
    x = torch.ones(1, 64)
    h = linear_scan(a, x, chunk=16)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, torch.ones(1, 64))


# ------------------------------------------------------------------------------------------------ Swin-UMamba
def _official_vmamba_state(net: swin_umamba.SwinUMamba) -> dict[str, torch.Tensor]:
    """Random tensors in the official VMamba-Tiny v0 ImageNet key layout (inverse of our converter)."""
    import re

    torch.manual_seed(3)
    state = {}
    for k, v in net.vssm_encoder.state_dict().items():
        if k.startswith("patch_embed."):
            continue
        state[re.sub(r"^downsamples\.(\d+)\.", r"layers.\1.downsample.", k)] = torch.randn_like(v)
    state.update({"patch_embed.proj.weight": torch.randn(96, 3, 4, 4), "patch_embed.proj.bias": torch.randn(96),
                  "patch_embed.norm.weight": torch.randn(96), "patch_embed.norm.bias": torch.randn(96),
                  "norm.weight": torch.randn(768), "norm.bias": torch.randn(768),
                  "head.weight": torch.randn(1000, 768), "head.bias": torch.randn(1000)})
    return state


def _training_config():
    """The yacs config object that VMamba's training checkpoints (Swin Transformer's ``save_checkpoint``) pickle
    beside the weights: a real ``yacs.config.CfgNode`` with a nested node, frozen as the training script does."""
    yacs = pytest.importorskip("yacs.config")
    cfg = yacs.CfgNode()
    cfg.MODEL = yacs.CfgNode()
    cfg.MODEL.TYPE, cfg.MODEL.DROP_PATH_RATE, cfg.MODEL.DEPTHS = "vssm", 0.1, [2, 2, 9, 2]
    cfg.TRAIN = yacs.CfgNode({"EPOCHS": 300, "BASE_LR": 1e-3})
    cfg.freeze()
    return cfg


@pytest.fixture(scope="module")
def swin_umamba_net():
    return swin_umamba.build_swin_umamba(2, in_channels=1)


def test_swin_umamba_loads_official_vmamba_checkpoint(swin_umamba_net, tmp_path):
    net = swin_umamba_net
    official = _official_vmamba_state(net)
    assert "layers.0.downsample.reduction.weight" in official and "layers.2.blocks.8.self_attention.A_logs" in official
    path = tmp_path / "vssmtiny_dp01_ckpt_epoch_292.pth"
    torch.save({"model": official, "config": _training_config(), "epoch": 292, "max_accuracy": 82.2,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}}, path)
    with pytest.raises(Exception, match="yacs.config.CfgNode"):  # torch's weights-only reader refuses the config
        torch.load(path, weights_only=True)
    patch_before = net.vssm_encoder.patch_embed.proj.weight.detach().clone()
    swin_umamba.load_vmamba(net, local=path)  # ours reads it (still weights_only) with the config made inert
    own = net.vssm_encoder.state_dict()
    torch.testing.assert_close(own["downsamples.1.reduction.weight"], official["layers.1.downsample.reduction.weight"])
    torch.testing.assert_close(own["layers.2.blocks.8.self_attention.x_proj_weight"],
                               official["layers.2.blocks.8.self_attention.x_proj_weight"])
    torch.testing.assert_close(own["patch_embed.proj.weight"], patch_before)  # stem input differs: not loaded


def test_swin_umamba_checkpoint_missing_a_block_is_refused(swin_umamba_net, tmp_path):
    official = _official_vmamba_state(swin_umamba_net)
    del official["layers.3.blocks.1.self_attention.Ds"]
    path = tmp_path / "broken.pth"
    torch.save({"model": official}, path)
    with pytest.raises(SegarenaError, match=r"missing: layers\.3\.blocks\.1\.self_attention\.Ds"):
        swin_umamba.load_vmamba(swin_umamba_net, local=path)


def test_swin_umamba_deep_supervision_puts_full_resolution_first(swin_umamba_net):
    net = swin_umamba_net
    net.deep_supervision = True
    try:
        with torch.no_grad():
            outs = net.eval()(torch.randn(1, 1, 64, 64))
    finally:
        net.deep_supervision = False
    assert [tuple(o.shape[-3:]) for o in outs] == [(2, 64, 64), (2, 32, 32), (2, 16, 16), (2, 8, 8)]


# ----------------------------------------------------------------------------------------------------- nnU-Net
def test_plan_2d_for_512_isotropic_is_nnunets_2d_configuration():
    plan = nnunet.plan_2d((512, 512), (1.0, 1.0))
    assert plan.patch_size == (512, 512) and plan.n_stages == 8 and plan.divisor == (128, 128)
    assert plan.features_per_stage == (32, 64, 128, 256, 512, 512, 512, 512)
    assert plan.strides == ((1, 1),) + ((2, 2),) * 7 and plan.kernel_sizes == ((3, 3),) * 8
    assert plan.n_blocks_per_stage == (2,) * 8 and plan.n_conv_per_stage_decoder == (2,) * 7
    assert plan.batch_size == 12
    resenc = nnunet.plan_2d((512, 512), preset="resenc-m")
    assert resenc.n_blocks_per_stage == (1, 3, 4, 6, 6, 6, 6, 6) and resenc.n_conv_per_stage_decoder == (1,) * 7


def test_plan_2d_is_anisotropy_aware():
    # y has 3x the spacing of x: x pools first (and y keeps 1-wide kernels) until their spacings are comparable
    plan = nnunet.plan_2d((512, 512), (3.0, 1.0))
    assert plan.strides[:3] == ((1, 1), (1, 2), (2, 2))
    assert plan.kernel_sizes[0] == (1, 3) and plan.kernel_sizes[1] == (3, 3)
    assert plan.divisor == (64, 128)


def test_plan_2d_shrinks_the_patch_to_fit_gpu_memory():
    big = nnunet.plan_2d((2048, 2048), gpu_memory_gb=8)
    small = nnunet.plan_2d((2048, 2048), gpu_memory_gb=2)
    assert small.patch_size[0] < big.patch_size[0] <= 2048
    assert small.vram_estimate / 12 * 2 <= 85_000_000 * 2 / 8
    assert small.batch_size == 2
    capped = nnunet.plan_2d((512, 512), num_images=20)  # 5% of 20 images is one patch: the minimum of 2 applies
    assert capped.batch_size == 2


def test_plan_2d_rejects_bad_input():
    with pytest.raises(SegarenaError, match="preset"):
        nnunet.plan_2d((512, 512), preset="resenc-xxl")
    with pytest.raises(SegarenaError, match="2D"):
        nnunet.plan_2d((512, 512, 40), (1.0, 1.0, 3.0))
    with pytest.raises(SegarenaError, match="too small"):
        nnunet.plan_2d((6, 6))


@pytest.mark.parametrize("preset", ["plain", "resenc-m"])
def test_nnunet_small_plan_forward_and_deep_supervision(preset):
    plan = nnunet.plan_2d((64, 48), preset=preset, num_classes=3)
    net = nnunet.NNUNet2D(plan, 1, 3, deep_supervision=True)
    x = torch.randn(2, 1, 70, 50)  # not a multiple of the plan's divisor: padded, then cropped back
    outs = net(x)
    assert outs[0].shape == (2, 3, 70, 50) and len(outs) == plan.n_stages - 1
    assert outs[1].shape[-2:] == (35, 25)
    outs[0].mean().backward()
    net.decoder.deep_supervision = False
    assert net(x).shape == (2, 3, 70, 50)


def test_nnunet_parity_with_dynamic_network_architectures():
    """Same keys (after dropping the library's aliases), same outputs and the same memory estimate as nnU-Net's
    own network library (``dynamic-network-architectures``, a test extra), for a plain and a residual-encoder
    plan."""
    try:
        import dynamic_network_architectures.architectures.unet as dna
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise AssertionError("dynamic-network-architectures is missing: pip install -e '.[test]'") from exc
    torch.manual_seed(0)
    for preset, size, spacing in (("plain", (160, 96), (2.5, 1.0)), ("resenc-m", (96, 128), (1.0, 1.3))):
        plan = nnunet.plan_2d(size, spacing, preset=preset, num_classes=3)
        kw = {"input_channels": 2, "n_stages": plan.n_stages, "features_per_stage": plan.features_per_stage,
              "conv_op": torch.nn.Conv2d, "kernel_sizes": plan.kernel_sizes, "strides": plan.strides,
              "num_classes": 3, "n_conv_per_stage_decoder": plan.n_conv_per_stage_decoder, "conv_bias": True,
              "norm_op": torch.nn.InstanceNorm2d, "norm_op_kwargs": {"eps": 1e-5, "affine": True},
              "nonlin": torch.nn.LeakyReLU, "nonlin_kwargs": {"inplace": True}}
        ref = (dna.PlainConvUNet(n_conv_per_stage=plan.n_blocks_per_stage, **kw) if preset == "plain" else
               dna.ResidualEncoderUNet(n_blocks_per_stage=plan.n_blocks_per_stage, **kw))
        ref.apply(ref.initialize)
        ours = nnunet.NNUNet2D(plan, 2, 3)
        ours.load_state_dict(nnunet.convert_nnunet_checkpoint(ref.state_dict()), strict=True)
        assert plan.vram_estimate == ref.compute_conv_feature_map_size(plan.patch_size)
        x = torch.randn(1, 2, *plan.patch_size)
        with torch.no_grad():
            torch.testing.assert_close(ours.eval()(x), ref.eval()(x))


def test_nnunet_checkpoint_converter_drops_alias_keys():
    net = nnunet.NNUNet2D(nnunet.plan_2d((32, 32)), 1, 2)
    own = net.state_dict()
    official = dict(own)
    for k, v in own.items():  # the library registers each conv/norm twice and the encoder again in the decoder
        if k.endswith((".conv.weight", ".conv.bias")):
            official[k.replace(".conv.", ".all_modules.0.")] = v
        if k.startswith("encoder."):
            official["decoder." + k] = v
    assert set(nnunet.convert_nnunet_checkpoint(official)) == set(own)


def test_nnunet_has_no_pretrained_weights():
    with pytest.raises(SegarenaError, match="from scratch"):
        nnunet.build_nnunet_plain(1, pretrained=True)


# ------------------------------------------------------------------------------------------------ U-Net variants
def test_attention_unet_gates_are_probabilities():
    net = unet_variants.AttentionUNet(1, 2, base=8).eval()
    x = torch.randn(1, 1, 48, 64)
    with torch.no_grad():
        c3 = net.conv3(net.pool(net.conv2(net.pool(net.conv1(x)))))
        c4 = net.conv4(net.pool(c3))
        gated, att = net.attentionblock4.gate_block_1(c4, net.gating(net.center(net.pool(c4))))
        assert att.shape == (1, 1, 6, 8) and gated.shape == c4.shape
        assert ((att > 0) & (att < 1)).all()
        assert net(x).shape == (1, 2, 48, 64)


def _torchvision_layout(encoder_state: dict[str, torch.Tensor], head: str, width: int) -> dict[str, torch.Tensor]:
    """An official torchvision ImageNet checkpoint: the encoder keys plus a 1000-class classifier, and (like the
    2017 files) no batch-norm ``num_batches_tracked`` buffers."""
    torch.manual_seed(5)
    state = {k: torch.randn_like(v) for k, v in encoder_state.items() if not k.endswith("num_batches_tracked")}
    state[f"{head}.weight"], state[f"{head}.bias"] = torch.randn(1000, width), torch.randn(1000)
    return state


@pytest.mark.parametrize("name,head,width,first", [("unetplusplus", "fc", 512, "conv1.weight"),
                                                   ("unet-vgg16", "classifier.6", 4096, "features.0.weight")])
def test_smp_models_load_local_official_encoder_checkpoint(name, head, width, first, tmp_path):
    from segarena.models import MODELS

    build = MODELS.get(name).build
    official = _torchvision_layout(build(1).encoder.state_dict(), head, width)
    path = tmp_path / "imagenet.pth"
    torch.save(official, path)
    net = build(1, in_channels=3, pretrained=str(path))
    for k, v in net.encoder.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(v, official[k])
    gray = build(2, in_channels=1, pretrained=str(path))  # RGB kernels summed for one channel, as smp does
    torch.testing.assert_close(gray.encoder.state_dict()[first], official[first].sum(1, keepdim=True))
    broken = {k: v for k, v in official.items() if not k.endswith("running_var")}
    torch.save(broken, path)
    with pytest.raises(SegarenaError, match="missing"):
        build(1, pretrained=str(path))


def test_smp_models_refuse_hub_download_offline():
    with pytest.raises(SegarenaError, match="offline"):
        unet_variants.build_unetplusplus(1, pretrained=True)
