"""Medical transformer zoo (HiFormer, MISSFormer, U-KAN, TransUNet, Swin-UNet): parameter counts equal to the
official implementations, the KAN layer's B-splines, and pretrained loading from checkpoints written locally in
each official key layout (random values, official names and shapes), through the same code path as a download."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from segarena import SegarenaError
from segarena.models import MODELS, create_model

# Snapshot: parameter counts of the official code instantiated with 2 output classes, counted when these models
# were written from github.com/amirhossein-kz/HiFormer (hiformer-s/b/l), ZhifangDeng/MISSFormer,
# Zhaoyi-Yan/U-KAN (ukan, ukan-l), HuCaoFighting/Swin-Unet and Beckschen/TransUNet (R50-ViT-B/16)
OFFICIAL_PARAMS = {
    "hiformer-s": 23_253_340, "hiformer-b": 25_511_100, "hiformer-l": 29_518_204,
    "missformer": 42_462_082, "ukan": 6_356_706, "ukan-l": 25_359_298, "swin-unet": 27_168_228,
    "transunet-r50-vit-b16": 105_276_066,
}


def _randomize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone() for k, v in state.items()}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_param_count_equals_official_code(name):
    net = MODELS.get(name).build(num_classes=2)
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_PARAMS[name]


def test_cards_are_medical_and_document_fixed_size():
    for name in OFFICIAL_PARAMS:
        card = MODELS.get(name).card
        assert card.family == "medical" and card.paper and "arXiv" in card.paper
        if card.fixed_size:
            assert card.fixed_size == 224 and "224" in card.notes


# --------------------------------------------------------------------------------------------------------- U-KAN
def test_kan_bsplines_partition_of_unity_and_fit():
    from segarena.models.zoo.ukan import KANLinear

    torch.manual_seed(0)
    kan = KANLinear(4, 3)
    x = torch.rand(50, 4) * 2 - 1  # inside the grid range [-1, 1]
    bases = kan.b_splines(x)
    assert bases.shape == (50, 4, 8)
    torch.testing.assert_close(bases.sum(-1), torch.ones(50, 4))
    y = torch.randn(50, 4, 3)
    coeff = kan.curve2coeff(x, y)  # least squares: the fitted splines reproduce y at 8 or more points
    fitted = torch.einsum("bic,oic->bio", bases, coeff)
    assert (fitted - y).pow(2).mean() < y.pow(2).mean()
    out = kan(x)
    assert out.shape == (50, 3) and torch.isfinite(out).all()


def test_ukan_l_widths_give_the_papers_25m():
    from segarena.models.zoo.ukan import UKAN

    n = sum(p.numel() for p in UKAN(3, 1, (256, 320, 512)).parameters())
    assert abs(n / 1e6 - 25.0) / 25.0 < 0.05


# ----------------------------------------------------------------------------------------------------- Swin parts
def _official_swin_t() -> dict[str, torch.Tensor]:
    """A Swin-T checkpoint in the official layout (depths 2-2-6-2, downsample at the end of stages 0-2, buffers,
    classifier head), made by renaming our Swin-UNet encoder keys through the inverse mapping."""
    return {k: v.clone() for k, v in _swin_t_cached().items()}


@functools.lru_cache(maxsize=1)
def _swin_t_cached() -> dict[str, torch.Tensor]:
    from segarena.models.zoo.swinunet import SwinUNet

    enc = {k: v for k, v in SwinUNet(3, 2).state_dict().items()
           if k.startswith(("patch_embed.", "layers.", "norm."))}
    for j in (2, 3, 4, 5):  # Swin-T's stage 2 has 6 blocks
        for k, v in list(enc.items()):
            if k.startswith(f"layers.2.blocks.{j % 2}."):
                enc[k.replace(f"blocks.{j % 2}.", f"blocks.{j}.", 1)] = v
    state = _randomize(enc)
    for k in [k for k in state if k.endswith("relative_position_bias_table")]:
        base = k[: -len("relative_position_bias_table")]
        state[base + "relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
        if int(k.split(".")[3]) % 2:
            state[base.replace("attn.", "") + "attn_mask"] = torch.zeros(4, 49, 49)
    state["head.weight"], state["head.bias"] = torch.randn(1000, 768), torch.randn(1000)
    return state


@pytest.mark.slow
def test_swinunet_loads_official_swin_t_with_mirror(tmp_path):
    from segarena.models.zoo.swinunet import SWINUNET_DECODER_ONLY

    ckpt = _official_swin_t()
    torch.save({"model": ckpt}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    net = create_model("swin-unet", 2, pretrained=str(tmp_path)).net
    sd = net.state_dict()
    torch.testing.assert_close(sd["layers.2.blocks.1.mlp.fc2.weight"], ckpt["layers.2.blocks.1.mlp.fc2.weight"])
    torch.testing.assert_close(sd["layers.1.downsample.reduction.weight"], ckpt["layers.1.downsample.reduction.weight"])
    torch.testing.assert_close(sd["norm.weight"], ckpt["norm.weight"])
    # the official mirror: encoder stage i -> decoder stage 3-i (Swin blocks only)
    torch.testing.assert_close(sd["layers_up.3.blocks.0.attn.qkv.weight"], ckpt["layers.0.blocks.0.attn.qkv.weight"])
    torch.testing.assert_close(sd["layers_up.1.blocks.1.attn.relative_position_bias_table"],
                               ckpt["layers.2.blocks.1.attn.relative_position_bias_table"])
    loaded = [k for k in sd if not k.startswith(SWINUNET_DECODER_ONLY)]
    assert len(loaded) > 150 and all(k in ckpt or k.startswith("layers_up.") for k in loaded)


@pytest.mark.slow
def test_swinunet_rejects_incomplete_or_foreign_checkpoints(tmp_path):
    ckpt = _official_swin_t()
    del ckpt["layers.3.blocks.1.mlp.fc1.bias"]
    torch.save({"model": ckpt}, tmp_path / "a.pth")
    with pytest.raises(SegarenaError, match="missing: layers.3.blocks.1.mlp.fc1.bias"):
        create_model("swin-unet", 2, pretrained=str(tmp_path / "a.pth"))
    ckpt = _official_swin_t()
    ckpt["layers.0.blocks.0.attn.extra"] = torch.zeros(3)
    torch.save({"model": ckpt}, tmp_path / "b.pth")
    with pytest.raises(SegarenaError, match="unexpected: layers.0.blocks.0.attn.extra"):
        create_model("swin-unet", 2, pretrained=str(tmp_path / "b.pth"))


# ------------------------------------------------------------------------------------------------------ HiFormer
def _torchvision_resnet(name: str) -> dict[str, torch.Tensor]:
    """torchvision ResNet layout (timm uses the same names), without BatchNorm step counters like the old files."""
    import timm

    sd = timm.create_model(name, pretrained=False).state_dict()
    return _randomize({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")})


@pytest.mark.slow
def test_hiformer_loads_both_official_checkpoints(tmp_path):
    swin = _official_swin_t()
    cnn = _torchvision_resnet("resnet34")
    torch.save({"model": swin}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    torch.save(cnn, tmp_path / "resnet34-b627a593.pth")
    net = create_model("hiformer-s", 1, in_channels=1, pretrained=str(tmp_path)).net
    pyr = net.all2cross.pyramid
    torch.testing.assert_close(pyr.cnn.layer3[5].conv2.weight, cnn["layer3.5.conv2.weight"])
    torch.testing.assert_close(pyr.cnn.conv1.weight, cnn["conv1.weight"].sum(1, keepdim=True))  # grayscale
    torch.testing.assert_close(pyr.swin[2].blocks[5].attn.qkv.weight, swin["layers.2.blocks.5.attn.qkv.weight"])
    torch.testing.assert_close(pyr.p1_pm.reduction.weight, swin["layers.0.downsample.reduction.weight"])
    torch.testing.assert_close(pyr.p2_pm.norm.bias, swin["layers.1.downsample.norm.bias"])
    # a ResNet-50 file for the -S variant (ResNet-34) is refused: missing file under the official name
    (tmp_path / "resnet34-b627a593.pth").rename(tmp_path / "resnet50-0676ba61.pth")
    with pytest.raises(SegarenaError, match="resnet34-b627a593.pth"):
        create_model("hiformer-s", 1, pretrained=str(tmp_path))


def test_hiformer_swin_converter_is_strict():
    from segarena.models.zoo.hiformer import CONFIGS, PYRAMID_NEW, HiFormer, hiformer_from_swin
    from segarena.models.weights import load_checked

    net = HiFormer(CONFIGS["s"], 3, 2)
    state = hiformer_from_swin(_official_swin_t())
    kept = load_checked(net.all2cross.pyramid, state, what="x", keep_init=PYRAMID_NEW)
    assert kept and all(k.startswith(PYRAMID_NEW) for k in kept)
    del state["swin.1.blocks.0.norm1.weight"]
    with pytest.raises(SegarenaError, match="swin.1.blocks.0.norm1.weight"):
        load_checked(net.all2cross.pyramid, state, what="x", keep_init=PYRAMID_NEW)


@pytest.mark.slow
def test_hiformer_dlf_branch_blocks_do_not_touch_the_output():
    """Official behaviour: MultiScaleBlock builds per-level transformer blocks but returns the fused tokens
    without them."""
    torch.manual_seed(0)
    net = MODELS.get("hiformer-s").build(num_classes=2).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        y = net(x)
        for p in net.all2cross.blocks[0].blocks.parameters():
            p.add_(1.0)
        assert torch.equal(net(x), y)


# ---------------------------------------------------------------------------------------------------- MISSFormer
@pytest.mark.slow
def test_missformer_loads_official_mit_b1(tmp_path):
    from segarena.models.zoo.missformer import MIT_NEW, MISSFormer

    enc = MISSFormer(3, 2).backbone.state_dict()
    mit = _randomize({k: v for k, v in enc.items() if not k.startswith(MIT_NEW)})
    mit["head.weight"], mit["head.bias"] = torch.randn(1000, 512), torch.randn(1000)
    torch.save(mit, tmp_path / "mit_b1.pth")
    torch.manual_seed(0)
    net = create_model("missformer", 2, pretrained=str(tmp_path / "mit_b1.pth")).net
    sd = net.backbone.state_dict()
    for k in ("patch_embed1.proj.weight", "block1.0.attn.sr.weight", "block4.1.mlp.dwconv.dwconv.weight", "norm4.bias"):
        torch.testing.assert_close(sd[k], mit[k])
    assert torch.equal(sd["block2.1.mlp.norm1.weight"], torch.ones(512))  # new in MISSFormer: initialised
    del mit["block3.0.attn.kv.weight"]
    torch.save(mit, tmp_path / "broken.pth")
    with pytest.raises(SegarenaError, match="missing: block3.0.attn.kv.weight"):
        create_model("missformer", 2, pretrained=str(tmp_path / "broken.pth"))


def test_missformer_runs_beyond_224():
    """The bridge's token counts follow the feature maps, so the bare net also runs at other multiples of 32."""
    net = MODELS.get("missformer").build(num_classes=3).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)


# ----------------------------------------------------------------------------------------------------- TransUNet
def _to_npz(enc) -> dict[str, np.ndarray]:
    """Our TransUNet encoder -> Google's Flax ``R50+ViT-B_16.npz`` layout (the inverse of the converter)."""
    s = {k: v.detach().numpy() for k, v in enc.state_dict().items()}
    w: dict[str, np.ndarray] = {}

    def conv(a: np.ndarray) -> np.ndarray:
        return a.transpose(2, 3, 1, 0)  # OIHW -> HWIO

    w["conv_root/kernel"] = conv(s.pop("resnet.root.conv.weight"))
    w["gn_root/scale"], w["gn_root/bias"] = s.pop("resnet.root.gn.weight"), s.pop("resnet.root.gn.bias")
    for k in [k for k in s if k.startswith("resnet.body.")]:
        _, _, b, u, name, p = k.split(".")
        v = s.pop(k)
        if name.startswith("conv") or name == "downsample":
            w[f"{b}/{u}/{'conv_proj' if name == 'downsample' else name}/kernel"] = conv(v)
        else:
            w[f"{b}/{u}/{name}/{'scale' if p == 'weight' else 'bias'}"] = v
    w["embedding/kernel"], w["embedding/bias"] = conv(s.pop("patch_embeddings.weight")), s.pop("patch_embeddings.bias")
    pe = s.pop("position_embeddings")
    w["Transformer/posembed_input/pos_embedding"] = np.concatenate([np.zeros_like(pe[:, :1]), pe], 1)
    w["Transformer/encoder_norm/scale"], w["Transformer/encoder_norm/bias"] = s.pop("encoder_norm.weight"), \
        s.pop("encoder_norm.bias")
    for i in range(12):
        src, dst = f"layer.{i}.", f"Transformer/encoderblock_{i}/"
        for a, b in (("attention_norm", "LayerNorm_0"), ("ffn_norm", "LayerNorm_2")):
            w[dst + b + "/scale"], w[dst + b + "/bias"] = s.pop(src + a + ".weight"), s.pop(src + a + ".bias")
        for a, b in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
            w[dst + f"MlpBlock_3/{b}/kernel"] = s.pop(src + f"ffn.{a}.weight").T.copy()
            w[dst + f"MlpBlock_3/{b}/bias"] = s.pop(src + f"ffn.{a}.bias")
        for a in ("query", "key", "value", "out"):
            kernel, bias = s.pop(src + f"attn.{a}.weight").T.copy(), s.pop(src + f"attn.{a}.bias")
            att = dst + f"MultiHeadDotProductAttention_1/{a}/"
            if a == "out":
                w[att + "kernel"], w[att + "bias"] = kernel.reshape(12, 64, 768), bias
            else:
                w[att + "kernel"], w[att + "bias"] = kernel.reshape(768, 12, 64), bias.reshape(12, 64)
    assert not s, f"unmapped keys: {list(s)[:4]}"
    w["cls"] = np.zeros((1, 1, 768), np.float32)
    w["head/kernel"], w["head/bias"] = np.zeros((768, 21843), np.float32), np.zeros(21843, np.float32)
    return w


@pytest.fixture(scope="module")
def r50_vit_npz(tmp_path_factory):
    from segarena.models.zoo.transunet import TransUNet

    torch.manual_seed(0)
    src = TransUNet(3, 2)
    with torch.no_grad():
        for p in src.encoder.parameters():
            p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("vit") / "R50+ViT-B_16.npz"
    np.savez(path, **_to_npz(src.encoder))
    return path, {k: v.clone() for k, v in src.encoder.state_dict().items()}


@pytest.mark.slow
def test_transunet_loads_official_npz(r50_vit_npz):
    path, ref = r50_vit_npz
    net = create_model("transunet-r50-vit-b16", 2, pretrained=str(path)).net
    got = net.encoder.state_dict()
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], msg=k)


@pytest.mark.slow
def test_transunet_resizes_position_embeddings_and_adapts_grayscale(r50_vit_npz):
    from segarena.models.zoo.transunet import resize_pos_embed

    path, ref = r50_vit_npz
    net = create_model("transunet-r50-vit-b16", 2, in_channels=1, pretrained=str(path), img_size=256).net
    assert net.encoder.position_embeddings.shape == (1, 256, 768)
    torch.testing.assert_close(net.encoder.position_embeddings,
                               resize_pos_embed(ref["position_embeddings"], (14, 14), (16, 16)))
    torch.testing.assert_close(net.encoder.resnet.root.conv.weight,
                               ref["resnet.root.conv.weight"].sum(1, keepdim=True))


@pytest.mark.slow
def test_transunet_rejects_other_npz(tmp_path, r50_vit_npz):
    path, _ = r50_vit_npz
    with np.load(path) as z:
        w = {k: z[k] for k in z.files if k != "Transformer/encoderblock_11/LayerNorm_2/scale"}
    np.savez(tmp_path / "cut.npz", **w)
    with pytest.raises(SegarenaError, match="encoderblock_11/LayerNorm_2/scale"):
        create_model("transunet-r50-vit-b16", 2, pretrained=str(tmp_path / "cut.npz"))
    np.savez(tmp_path / "vit.npz", **{"embedding/kernel": np.zeros((16, 16, 3, 768), np.float32)})
    with pytest.raises(SegarenaError, match="not an R50"):
        create_model("transunet-r50-vit-b16", 2, pretrained=str(tmp_path / "vit.npz"))
