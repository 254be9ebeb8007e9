"""InternImage (DCNv3) and TransNeXt (aggregated attention): operators against direct reference computations,
and official-checkpoint conversion through the builders' strict loading path (offline, on local files written in
the official key layout)."""
from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F

from segarena import SegarenaError
from segarena.models import MODELS
from segarena.models.zoo import internimage as ii
from segarena.models.zoo import transnext as tn
from segarena.models.zoo._dcnv3 import DCNv3, dcnv3_core, dcnv3_core_pytorch, has_compiled_dcnv3

# ----------------------------------------------------------------------------------------------- DCNv3 operator


def _dcnv3_loop(x, offset, mask, k, stride, pad, dil, group, offset_scale):
    """DCNv3 by definition: per output pixel, group and kernel point, one explicit bilinear sample (zeros outside)."""
    n, h, w, c = x.shape
    cg = c // group
    ho = (h + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    wo = (w + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    centre = dil * (k - 1) // 2
    out = torch.zeros(n, ho, wo, c, dtype=x.dtype)

    def pixel(b, yy, xx, g):
        if 0 <= yy < h and 0 <= xx < w:
            return x[b, yy, xx, g * cg:(g + 1) * cg]
        return torch.zeros(cg, dtype=x.dtype)

    for b, i, j, g in itertools.product(range(n), range(ho), range(wo), range(group)):
        acc = torch.zeros(cg, dtype=x.dtype)
        for kx, ky in itertools.product(range(k), range(k)):  # the official point order: x outer, y inner
            p = kx * k + ky
            dx, dy = offset[b, i, j, (g * k * k + p) * 2], offset[b, i, j, (g * k * k + p) * 2 + 1]
            px = j * stride - pad + centre + (kx * dil - centre) * offset_scale + dx * offset_scale
            py = i * stride - pad + centre + (ky * dil - centre) * offset_scale + dy * offset_scale
            x0, y0 = math.floor(px), math.floor(py)
            fx, fy = px - x0, py - y0
            sample = ((1 - fy) * (1 - fx) * pixel(b, y0, x0, g) + (1 - fy) * fx * pixel(b, y0, x0 + 1, g)
                      + fy * (1 - fx) * pixel(b, y0 + 1, x0, g) + fy * fx * pixel(b, y0 + 1, x0 + 1, g))
            acc = acc + mask[b, i, j, g * k * k + p] * sample
        out[b, i, j, g * cg:(g + 1) * cg] = acc
    return out


def _random_dcn_inputs(k, stride, pad, dil, dtype=torch.float64, n=1, h=5, w=4, group=2, cg=3):
    g = torch.Generator().manual_seed(k * 100 + stride * 10 + pad + dil)
    ho = (h + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    wo = (w + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    x = torch.randn(n, h, w, group * cg, generator=g, dtype=dtype)
    offset = torch.randn(n, ho, wo, group * k * k * 2, generator=g, dtype=dtype) * 1.5  # some samples fall outside
    mask = torch.rand(n, ho, wo, group * k * k, generator=g, dtype=dtype)
    return x, offset, mask


@pytest.mark.parametrize("k,stride,pad,dil,scale", [(3, 1, 1, 1, 1.0), (3, 2, 1, 1, 1.0), (3, 1, 0, 1, 0.5),
                                                    (5, 1, 2, 2, 1.0)])
def test_dcnv3_core_matches_per_pixel_bilinear_loop(k, stride, pad, dil, scale):
    x, offset, mask = _random_dcn_inputs(k, stride, pad, dil)
    ref = _dcnv3_loop(x, offset, mask, k, stride, pad, dil, 2, scale)
    got = dcnv3_core_pytorch(x, offset, mask, k, k, stride, stride, pad, pad, dil, dil, 2, 3, scale)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    got32 = dcnv3_core_pytorch(x.float(), offset.float(), mask.float(), k, k, stride, stride, pad, pad, dil, dil,
                               2, 3, scale)
    torch.testing.assert_close(got32.double(), ref, atol=1e-5, rtol=0)


def test_dcnv3_core_matches_torchvision_deform_conv():
    """Second reference: DCNv3 = modulated deformable conv with depth-wise unit weights and one offset group per
    DCNv3 group (torchvision orders points y-major and stores offsets as (dy, dx))."""
    tv_ops = pytest.importorskip("torchvision.ops")
    k, group = 3, 2
    x, offset, mask = _random_dcn_inputs(k, 1, 1, 1, n=2, h=6, w=7)
    n, ho, wo, c = x.shape
    off = offset.reshape(n, ho, wo, group, k, k, 2)  # [.., g, kx, ky, (dx, dy)]
    off_tv = off.permute(0, 3, 5, 4, 6, 1, 2).flip(4).reshape(n, group * k * k * 2, ho, wo)  # g, ky, kx, (dy, dx)
    mask_tv = mask.reshape(n, ho, wo, group, k, k).permute(0, 3, 5, 4, 1, 2).reshape(n, group * k * k, ho, wo)
    ref = tv_ops.deform_conv2d(x.permute(0, 3, 1, 2), off_tv, torch.ones(c, 1, k, k, dtype=x.dtype), padding=1,
                               mask=mask_tv).permute(0, 2, 3, 1)
    got = dcnv3_core_pytorch(x, offset, mask, k, k, 1, 1, 1, 1, 1, 1, group, c // group, 1.0)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_dcnv3_core_gradients_match_finite_differences():
    x, offset, mask = _random_dcn_inputs(3, 1, 1, 1, h=3, w=3, cg=1)
    inputs = tuple(t.clone().requires_grad_() for t in (x, offset, mask))
    assert torch.autograd.gradcheck(
        lambda a, b, m: dcnv3_core_pytorch(a, b, m, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1, 1.0), inputs, atol=1e-5)


def test_dcnv3_dispatch_uses_pytorch_on_cpu_and_refuses_a_missing_kernel():
    x, offset, mask = _random_dcn_inputs(3, 1, 1, 1, dtype=torch.float32)
    args = (3, 3, 1, 1, 1, 1, 1, 1, 2, 3, 1.0)
    torch.testing.assert_close(dcnv3_core(x, offset, mask, *args), dcnv3_core_pytorch(x, offset, mask, *args))
    if not has_compiled_dcnv3():
        with pytest.raises(RuntimeError, match="DCNv3 CUDA extension"):
            dcnv3_core(x, offset, mask, *args, use_compiled=True)


@pytest.mark.gpu
def test_dcnv3_official_cuda_kernel_matches_pytorch_path():
    """Where the official ``DCNv3`` extension is installed: same outputs and gradients as our PyTorch path."""
    if not (torch.cuda.is_available() and has_compiled_dcnv3()):
        pytest.skip("needs CUDA and the official DCNv3 extension (ops_dcnv3)")
    x, offset, mask = (t.float().cuda().requires_grad_() for t in _random_dcn_inputs(3, 1, 1, 1, n=2, h=9, w=7, cg=16))
    args = (3, 3, 1, 1, 1, 1, 1, 1, 2, 16, 1.0)
    fast = dcnv3_core(x, offset, mask, *args, use_compiled=True)
    slow = dcnv3_core(x, offset, mask, *args, use_compiled=False)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    g_fast = torch.autograd.grad(fast.square().sum(), (x, offset, mask))
    g_slow = torch.autograd.grad(slow.square().sum(), (x, offset, mask))
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_dcnv3_module_starts_as_softmax_weighted_3x3_mean():
    """Zero-initialised offsets and mask logits: each group averages its 3x3 neighbourhood (zeros outside)."""
    torch.manual_seed(0)
    m = DCNv3(channels=8, group=2)
    x = torch.randn(1, 5, 6, 8)
    with torch.no_grad():
        value = m.input_proj(x).permute(0, 3, 1, 2)
        mean = F.avg_pool2d(value, 3, stride=1, padding=1, count_include_pad=True).permute(0, 2, 3, 1)
        torch.testing.assert_close(m(x), m.output_proj(mean), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- InternImage checkpoints

def _to_official_internimage(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> the official InternImage layout (written independently of the converter under test)."""
    rules = [(r"^stem\.norm(\d)\.", r"patch_embed.norm\1.1."), (r"^stem\.", "patch_embed."),
             (r"\.blocks\.(\d+)\.norm(\d)\.", r".blocks.\1.norm\2.0."), (r"\.dcn\.dw_conv\.", ".dcn.dw_conv.0."),
             (r"\.dcn\.dw_norm\.", ".dcn.dw_conv.1.1."), (r"^stages\.(\d+)\.norm\.", r"stages.\1.norm.0."),
             (r"\.downsample\.norm\.", ".downsample.norm.1."), (r"^stages\.", "levels.")]
    out = {}
    for key, value in ours.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value.clone()
    return out


# key names and shapes of the official InternImage-T ImageNet checkpoint (internimage_t_1k_224.pth)
_OFFICIAL_T = {"patch_embed.conv1.weight": (32, 3, 3, 3), "patch_embed.norm1.1.weight": (32,),
               "patch_embed.norm2.1.bias": (64,), "levels.0.blocks.0.norm1.0.weight": (64,),
               "levels.0.blocks.0.dcn.dw_conv.0.weight": (64, 1, 3, 3), "levels.0.blocks.0.dcn.dw_conv.1.1.weight": (64,),
               "levels.0.blocks.0.dcn.offset.weight": (72, 64), "levels.0.blocks.0.dcn.mask.weight": (36, 64),
               "levels.2.blocks.17.dcn.offset.weight": (288, 256), "levels.0.blocks.0.mlp.fc1.weight": (256, 64),
               "levels.0.downsample.conv.weight": (128, 64, 3, 3), "levels.0.downsample.norm.1.weight": (128,),
               "levels.3.norm.0.weight": (512,)}


def _write_checkpoint(path, state):
    torch.save({"model": state}, path)
    return str(path)


@pytest.mark.slow
def test_internimage_t_loads_official_layout_strictly(tmp_path):
    torch.manual_seed(0)
    source = ii._build("t", 1, 3, False).encoder.state_dict()
    source = {k: torch.randn_like(v) for k, v in source.items()}
    official = {k: v for k, v in _to_official_internimage(source).items() if "gamma" not in k}  # T: no layer scale
    for key, shape in _OFFICIAL_T.items():
        assert tuple(official[key].shape) == shape, key
    assert len(official) == 625  # backbone keys of the official T classification checkpoint
    official.update({"conv_head.0.weight": torch.randn(768, 512, 1, 1), "conv_head.1.0.weight": torch.randn(768),
                     "conv_head.1.0.running_mean": torch.randn(768), "conv_head.1.0.num_batches_tracked":
                     torch.tensor(5), "head.weight": torch.randn(1000, 768), "head.bias": torch.randn(1000)})
    path = _write_checkpoint(tmp_path / "internimage_t_1k_224.pth", official)
    net = MODELS.get("internimage-t-upernet").build(1, in_channels=3, pretrained=path)
    loaded = net.encoder.state_dict()
    for key, value in source.items():
        if "gamma" in key:
            assert torch.equal(loaded[key], torch.ones_like(value)), key  # layer scale left at its init, as mmseg does
        else:
            assert torch.equal(loaded[key], value), key

    del official["levels.1.blocks.2.dcn.mask.bias"]
    with pytest.raises(SegarenaError, match=r"missing: stages\.1\.blocks\.2\.dcn\.mask\.bias"):
        MODELS.get("internimage-t-upernet").build(1, pretrained=_write_checkpoint(tmp_path / "bad.pth", official))


def test_internimage_post_norm_layout_and_grayscale_stem():
    """S/B layout (post-norm: no stage norms, layer scale in the checkpoint) and a 1-channel stem from RGB."""
    torch.manual_seed(0)
    enc = ii.InternImage(in_channels=1, channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), post_norm=True)
    rgb = ii.InternImage(in_channels=3, channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), post_norm=True)
    source = {k: torch.randn_like(v) for k, v in rgb.state_dict().items()}
    official = _to_official_internimage(source)
    assert not any(re.match(r"levels\.\d\.norm\.", k) for k in official)
    converted = ii.convert_official(official, enc)
    enc.load_state_dict(converted, strict=True)
    torch.testing.assert_close(enc.stem.conv1.weight, source["stem.conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(enc.stages[2].blocks[1].gamma2, source["stages.2.blocks.1.gamma2"])
    feats = enc.eval()(torch.randn(1, 1, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 16, 24), (1, 32, 8, 12), (1, 64, 4, 6), (1, 128, 2, 3)]


# ------------------------------------------------------------------------------- TransNeXt aggregated attention

def _aggregated_attention_loop(m: tn.AggregatedAttention, x: torch.Tensor, size, rel):
    """Aggregated attention by definition: for every query, its (in-image) 3x3 window and all pooled tokens."""
    (h, w), heads, d = size, m.heads, m.head_dim
    c = heads * d
    n = h * w
    sr = m.sr_ratio
    ph, pw = h // sr, w // sr
    q_all = m.q(x[0]).reshape(n, heads, d)
    k_all, v_all = m.kv(x[0]).reshape(n, 2, heads, d).unbind(1)
    # pooled tokens: 1x1 conv + GELU, then the mean of each sr x sr cell (sizes divide exactly here)
    img = m.act(m.sr(x[0].T.reshape(1, c, h, w)))[0]
    pooled = torch.stack([img[:, a * sr:(a + 1) * sr, b * sr:(b + 1) * sr].mean((1, 2))
                          for a in range(ph) for b in range(pw)])
    kp, vp = m.kv(m.norm(pooled)).reshape(ph * pw, 2, heads, d).unbind(1)
    pool_bias = m.position_bias(rel, size, (ph, pw))  # [heads, N, P]
    temp = F.softplus(m.temperature).reshape(heads)
    out = torch.zeros(n, c, dtype=x.dtype)
    r = m.window // 2
    for i, j, hd in itertools.product(range(h), range(w), range(heads)):
        qi = i * w + j
        q_unit = q_all[qi, hd] / q_all[qi, hd].norm()
        neighbours = [(l, (i + dy) * w + (j + dx)) for l, (dy, dx) in
                      enumerate(itertools.product(range(-r, r + 1), range(-r, r + 1)))
                      if 0 <= i + dy < h and 0 <= j + dx < w]
        scale = math.log(len(neighbours) + ph * pw)
        q_s = (q_unit + m.query_embedding[hd, 0]) * temp[hd] * scale
        logits = [q_s @ (k_all[t, hd] / k_all[t, hd].norm()) + m.relative_pos_bias_local[hd, l] for l, t in neighbours]
        logits += [q_s @ (kp[p, hd] / kp[p, hd].norm()) + pool_bias[hd, qi, p] for p in range(ph * pw)]
        weights = torch.softmax(torch.stack(logits), 0)
        acc = torch.zeros(d, dtype=x.dtype)
        for (l, t), wgt in zip(neighbours, weights):
            token = q_unit @ m.learnable_tokens[hd, :, l] + m.learnable_bias[hd, 0, l]
            acc = acc + (wgt + token) * v_all[t, hd]
        acc = acc + weights[len(neighbours):] @ vp[:, hd]
        out[qi, hd * d:(hd + 1) * d] = acc
    return m.proj(out)[None]


@pytest.mark.parametrize("size", [(6, 4), (4, 8)])
def test_aggregated_attention_matches_per_query_window_loop(size):
    torch.manual_seed(0)
    m = tn.AggregatedAttention(dim=8, heads=2, sr_ratio=2, window=3).double()
    with torch.no_grad():  # move the small/zero-initialised parameters away from their init
        for p in (m.relative_pos_bias_local, m.learnable_bias, m.learnable_tokens, m.query_embedding):
            p.normal_(0, 0.3)
        m.temperature.normal_(0, 1)
    h, w = size
    x = torch.randn(1, h * w, 8, dtype=torch.float64)
    index, table = tn.relative_coords(size, (h // 2, w // 2), (14, 14))
    rel = (index, table, size, (h // 2, w // 2))
    with torch.no_grad():
        torch.testing.assert_close(m(x, size, rel), _aggregated_attention_loop(m, x, size, rel), atol=1e-5, rtol=0)


@pytest.mark.parametrize("query,key,pretrain", [((8, 6), (2, 3), (14, 14)), ((5, 7), (5, 7), (7, 7)),
                                                ((16, 16), (4, 4), (56, 56))])
def test_relative_coords_equal_a_2d_unique_over_all_pairs(query, key, pretrain):
    """Our per-axis construction gives the table (and index) of the official all-pairs 2-D ``unique``."""
    def pooled_positions(nq, nk):
        return F.adaptive_avg_pool1d(torch.arange(nq, dtype=torch.float32)[None], nk)[0]

    qy, qx = torch.meshgrid(torch.arange(query[0]).float(), torch.arange(query[1]).float(), indexing="ij")
    ky, kx = torch.meshgrid(pooled_positions(query[0], key[0]), pooled_positions(query[1], key[1]), indexing="ij")
    dy = (qy.reshape(-1, 1) - ky.reshape(1, -1)) / (pretrain[0] - 1) * 8
    dx = (qx.reshape(-1, 1) - kx.reshape(1, -1)) / (pretrain[1] - 1) * 8
    table, index = torch.unique(torch.stack([dy, dx], -1).reshape(-1, 2), return_inverse=True, dim=0)
    table = torch.sign(table) * torch.log2(table.abs() + 1) / math.log2(8)
    got_index, got_table = tn.relative_coords(query, key, pretrain)
    assert torch.equal(got_index, index.reshape(-1))
    torch.testing.assert_close(got_table, table, atol=0, rtol=0)


def test_position_bias_modes_agree_at_the_nominal_size_and_differ_elsewhere():
    torch.manual_seed(0)
    kw = {"dims": (8, 16, 32, 64), "heads": (1, 2, 4, 8), "depths": (1, 1, 1, 1), "drop_path": 0.0, "img_size": 64}
    interp = tn.TransNeXt(pos_bias="interpolate", **kw).eval()
    extrap = tn.TransNeXt(pos_bias="extrapolate", **kw).eval()
    with torch.no_grad():  # a position-bias MLP far from its near-zero init, so the biases matter
        for name, p in interp.named_parameters():
            if "cpb_fc" in name:
                p.normal_(0, 1)
    extrap.load_state_dict(interp.state_dict(), strict=True)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        for a, b in zip(interp(x), extrap(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # at another size the interpolated and the recomputed biases are different maps (same shape)
        size, pool = (24, 16), (3, 2)
        si, se = interp.stages[0], extrap.stages[0]
        bi = si.blocks[0].attn.position_bias(si.relative(size), size, pool)
        be = se.blocks[0].attn.position_bias(se.relative(size), size, pool)
        assert bi.shape == be.shape == (1, 24 * 16, 3 * 2)
        assert (bi - be).abs().max() > 0.1 * bi.abs().mean()


# ---------------------------------------------------------------------------------- TransNeXt checkpoints

def _to_official_transnext(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> the official TransNeXt layout (1-based ``patch_embed{i}``, ``block{i}.{j}``, ``norm{i}``)."""
    out = {}
    for key, value in ours.items():
        stage, rest = re.match(r"^stages\.(\d)\.(.*)$", key).groups()
        i = int(stage) + 1
        rest = re.sub(r"^blocks\.(\d+)\.", rf"block{i}.\1.", rest)
        rest = re.sub(r"^patch_embed\.", f"patch_embed{i}.", rest)
        rest = re.sub(r"^norm\.", f"norm{i}.", rest)
        out[rest.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")] = value.clone()
    return out


# key names and shapes of the official TransNeXt-Micro ImageNet checkpoint (transnext_micro_224_1k.pth)
_OFFICIAL_MICRO = {"patch_embed1.proj.weight": (48, 3, 7, 7), "patch_embed1.norm.weight": (48,),
                   "block1.0.attn.relative_pos_bias_local": (2, 9), "block1.0.attn.learnable_tokens": (2, 24, 9),
                   "block1.0.attn.learnable_bias": (2, 1, 9), "block1.0.attn.temperature": (2, 1, 1),
                   "block1.0.attn.cpb_fc1.weight": (512, 2), "block1.0.attn.sr.weight": (48, 48, 1, 1),
                   "block1.0.mlp.fc1.weight": (512, 48), "block1.0.mlp.dwconv.dwconv.weight": (256, 1, 3, 3),
                   "block3.14.attn.kv.weight": (384, 192), "block4.1.attn.qkv.weight": (1152, 384),
                   "block4.1.attn.query_embedding": (16, 1, 24), "norm4.weight": (384,)}


@pytest.mark.slow
def test_transnext_micro_loads_official_layout_strictly(tmp_path):
    torch.manual_seed(0)
    source = {k: torch.randn_like(v) for k, v in tn._build("micro", 1, 3, False).encoder.state_dict().items()}
    official = _to_official_transnext(source)
    for key, shape in _OFFICIAL_MICRO.items():
        assert tuple(official[key].shape) == shape, key
    assert len(official) == 615  # backbone keys of the official micro classification checkpoint
    official.update({"head.weight": torch.randn(1000, 384), "head.bias": torch.randn(1000)})
    path = _write_checkpoint(tmp_path / "transnext_micro_224_1k.pth", official)
    net = MODELS.get("transnext-micro-upernet").build(1, in_channels=1, pretrained=path)
    loaded = net.encoder.state_dict()
    for key, value in source.items():
        expect = value.sum(1, keepdim=True) if key == "stages.0.patch_embed.proj.weight" else value
        torch.testing.assert_close(loaded[key], expect, atol=1e-6, rtol=0, msg=key)

    official["block2.1.attn.extra.weight"] = torch.randn(3)
    with pytest.raises(SegarenaError, match=r"unexpected: stages\.1\.blocks\.1\.attn\.extra\.weight"):
        MODELS.get("transnext-micro-upernet").build(1, pretrained=_write_checkpoint(tmp_path / "bad.pth", official))


def test_pretrained_true_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SegarenaError, match="not available"):
        MODELS.get("transnext-micro-upernet").build(1, pretrained=True)
