"""HiFormer (Heidari et al., WACV 2023): a ResNet branch and a Swin branch fused by the Double-Level Fusion module.

Faithful to the official code (github.com/amirhossein-kz/HiFormer, ``models/`` and ``configs/HiFormer_configs.py``):

* **Pyramid**: a ResNet (50 for -B, 34 for -S/-L) truncated after ``layer3`` gives 1/4, 1/8, 1/16 maps; 1x1
  convolutions bring them to the Swin widths 96/192/384. Swin-T's first three stages (depths 2-2-6, heads 3-6-12,
  window 7, without their own patch merging) run on the 1/4 map and on the running sums of CNN and Swin features,
  with Swin-T's two patch-merging layers between the levels. Each of the two kept levels (1/4 and 1/16) gets a
  class token by global average pooling of its LayerNorm-ed tokens.
* **DLF** (double-level fusion): learned position embeddings, then CrossViT-style fusion: each level's class
  token, projected to the other level's width, attends over the other level's patch tokens (cross-attention), and
  is projected back. As in the official code, the per-level transformer blocks of this module are built (their
  parameters count) but their output is discarded (``outs_b`` in ``MultiScaleBlock.forward``), so they are not
  run here either: the outputs are identical and no time is spent.
* **Decoder**: the 1/16 tokens go through two conv-GroupNorm-ReLU-upsample steps, the 1/4 tokens through one
  conv-GroupNorm-ReLU; their sum -> 1x1 conv to 16 channels, ReLU, 4x upsampling -> 3x3 conv to the logits.

The position embeddings and the Swin windows are built for 224x224 (3136 + 196 tokens), so the card sets
``fixed_size=224`` and the wrapper resizes in and out. Variants -S/-B/-L follow the official configs.

Pretrained (ImageNet-1k, as in the paper): torchvision's ResNet checkpoint fills the CNN branch and the official
Swin-T checkpoint fills the Swin stages and the two patch-merging layers. The 1x1 channel convolutions, the level
norms, the DLF module and the decoder start from scratch. Note: the official code loads Swin-T and then re-runs its
truncated-normal initialisation over the whole encoder (``All2Cross._init_weights``), which overwrites every
loaded Swin linear and LayerNorm weight (only the relative position tables survive); we keep the loaded weights,
which is what the paper describes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..card import ModelCard, Weights, register_model
from ..weights import adapt_first_conv, load_checked, local_file, read_state_dict, resolve
from .swinunet import SWIN_BUFFERS, SWIN_T, SwinStage, init_official, swin_official_state

TV_RESNET = {
    "resnet50": Weights(source="https://download.pytorch.org/models/resnet50-0676ba61.pth",
                        license="BSD-3-Clause (torchvision)", dataset="ImageNet-1k",
                        target="all2cross.pyramid.cnn"),
    "resnet34": Weights(source="https://download.pytorch.org/models/resnet34-b627a593.pth",
                        license="BSD-3-Clause (torchvision)", dataset="ImageNet-1k",
                        target="all2cross.pyramid.cnn"),
}
SWIN_FOR_HIFORMER = Weights(source=SWIN_T.source, license=SWIN_T.license, dataset="ImageNet-1k",
                            target="all2cross.pyramid")


@dataclass(frozen=True)
class HiFormerConfig:
    cnn: str
    cnn_dims: tuple[int, int, int]
    #: DLF depth: (blocks on level 1, blocks on level 2, cross-attention depth; 0 = one block without MLP)
    depth: tuple[int, int, int]
    num_heads: tuple[int, int]
    mlp_ratio: tuple[float, float, float]


CONFIGS = {
    "s": HiFormerConfig("resnet34", (64, 128, 256), (1, 1, 0), (3, 3), (1.0, 1.0, 1.0)),
    "b": HiFormerConfig("resnet50", (256, 512, 1024), (1, 2, 0), (6, 12), (2.0, 2.0, 1.0)),
    "l": HiFormerConfig("resnet34", (64, 128, 256), (1, 4, 0), (6, 6), (4.0, 4.0, 1.0)),
}
SWIN_DIMS = (96, 192, 384)


class ResNetTrunk(nn.Module):
    """A torchvision-layout ResNet up to ``layer3`` (stride 16); the key names are torchvision's."""

    def __init__(self, name: str, in_channels: int) -> None:
        super().__init__()
        import timm

        r = timm.create_model(name, pretrained=False, in_chans=in_channels)
        self.conv1, self.bn1, self.act1, self.maxpool = r.conv1, r.bn1, r.act1, r.maxpool
        self.layer1, self.layer2, self.layer3 = r.layer1, r.layer2, r.layer3

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.maxpool(self.act1(self.bn1(self.conv1(x)))))


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, H, W, C] (the Swin layout)."""
    return x.permute(0, 2, 3, 1)


class PyramidFeatures(nn.Module):
    def __init__(self, cfg: HiFormerConfig, in_channels: int, img_size: int = 224) -> None:
        super().__init__()
        from timm.models.swin_transformer import PatchMerging

        self.cnn = ResNetTrunk(cfg.cnn, in_channels)
        res = img_size // 4
        depths, heads = (2, 2, 6), (3, 6, 12)
        dpr = torch.linspace(0, 0.1, sum(depths)).tolist()  # the official SwinTransformer default rate
        self.swin = nn.ModuleList(
            SwinStage(SWIN_DIMS[i], res // 2**i, depths[i], heads[i], 7,
                      drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])]) for i in range(3))
        c1, c2, c3 = cfg.cnn_dims
        self.p1_ch = nn.Conv2d(c1, SWIN_DIMS[0], 1)
        self.p1_pm = PatchMerging(SWIN_DIMS[0])
        self.norm_1 = nn.LayerNorm(SWIN_DIMS[0])
        self.p2_ch = nn.Conv2d(c2, SWIN_DIMS[1], 1)
        self.p2_pm = PatchMerging(SWIN_DIMS[1])
        self.p3_ch = nn.Conv2d(c3, SWIN_DIMS[2], 1)
        self.norm_2 = nn.LayerNorm(SWIN_DIMS[2])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fm1 = self.cnn.stem(x)
        f1 = _tokens(self.p1_ch(fm1))
        s1 = f1 + self.swin[0](f1)                                     # level 1 (1/4): CNN + Swin
        s2 = self.swin[1](self.p1_pm(s1))
        fm2 = self.cnn.layer2(fm1)
        s2 = self.p2_pm(_tokens(self.p2_ch(fm2)) + s2)                 # level 2 (1/8) feeds level 3 only
        fm3 = self.cnn.layer3(fm2)
        s3 = _tokens(self.p3_ch(fm3)) + self.swin[2](s2)               # level 3 (1/16)
        t1, t3 = s1.flatten(1, 2), s3.flatten(1, 2)
        cls1 = self.norm_1(t1).mean(1, keepdim=True)
        cls3 = self.norm_2(t3).mean(1, keepdim=True)
        return [torch.cat([cls1, t1], 1), torch.cat([cls3, t3], 1)]


class CrossAttention(nn.Module):
    """The class token (query) attends over all tokens of the sequence (keys and values)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        h = self.num_heads
        q = self.wq(x[:, :1]).view(n, 1, h, c // h).transpose(1, 2)
        k = self.wk(x).view(n, t, h, c // h).transpose(1, 2)
        v = self.wv(x).view(n, t, h, c // h).transpose(1, 2)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, 1, c))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention on the class token, with a residual (the DLF setting has no MLP)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.attn(self.norm1(x))


class MultiScaleBlock(nn.Module):
    """One DLF fusion step over the two levels (CrossViT's multi-scale block, as modified by HiFormer)."""

    def __init__(self, dims: tuple[int, int], cfg: HiFormerConfig) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        if cfg.depth[-1] != 0:
            raise ValueError("only the official DLF setting (one cross-attention block without MLP) is built")
        # built as in the official code, never run there: their output (outs_b) is discarded
        self.blocks = nn.ModuleList(
            nn.Sequential(*[Block(dims[d], cfg.num_heads[d], mlp_ratio=cfg.mlp_ratio[d], qkv_bias=True,
                                  norm_layer=nn.LayerNorm) for _ in range(cfg.depth[d])])
            for d in range(2) if cfg.depth[d] > 0)
        self.projs = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dims[d]), nn.GELU(), nn.Linear(dims[d], dims[1 - d])) for d in range(2))
        self.fusion = nn.ModuleList(CrossAttentionBlock(dims[1 - d], cfg.num_heads[1 - d]) for d in range(2))
        self.revert_projs = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dims[1 - d]), nn.GELU(), nn.Linear(dims[1 - d], dims[d])) for d in range(2))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for d in range(2):
            other = xs[1 - d]
            cls = self.projs[d](xs[d][:, :1])
            cls = self.fusion[d](torch.cat([cls, other[:, 1:]], 1))
            outs.append(torch.cat([self.revert_projs[d](cls), xs[d][:, 1:]], 1))
        return outs


class All2Cross(nn.Module):
    """Pyramid features + position embeddings + DLF blocks + per-level LayerNorm."""

    def __init__(self, cfg: HiFormerConfig, in_channels: int, img_size: int = 224) -> None:
        super().__init__()
        self.pyramid = PyramidFeatures(cfg, in_channels, img_size)
        dims = (SWIN_DIMS[0], SWIN_DIMS[2])
        n_tokens = ((img_size // 4) ** 2, (img_size // 16) ** 2)
        self.pos_embed = nn.ParameterList(nn.Parameter(torch.zeros(1, 1 + n_tokens[i], dims[i])) for i in range(2))
        self.blocks = nn.ModuleList([MultiScaleBlock(dims, cfg)])
        self.norm = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        for p in self.pos_embed:
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(init_official)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xs = [t + p for t, p in zip(self.pyramid(x), self.pos_embed)]
        for blk in self.blocks:
            xs = blk(xs)
        return [norm(t) for norm, t in zip(self.norm, xs)]


def _conv_up(cin: int, couts: list[int], upsample: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cout in couts:
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(32, cout), nn.ReLU()]
        if upsample:
            layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        cin = cout
    return nn.Sequential(*layers)


class HiFormer(nn.Module):
    def __init__(self, cfg: HiFormerConfig, in_channels: int = 3, num_classes: int = 9, img_size: int = 224) -> None:
        super().__init__()
        self.img_size = img_size
        self.all2cross = All2Cross(cfg, in_channels, img_size)
        self.conv_up_s = _conv_up(SWIN_DIMS[2], [128, 128], upsample=True)
        self.conv_up_l = _conv_up(SWIN_DIMS[0], [128], upsample=False)
        self.conv_pred = nn.Sequential(nn.Conv2d(128, 16, 1), nn.ReLU(inplace=True),
                                       nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False))
        self.segmentation_head = nn.Conv2d(16, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine, coarse = self.all2cross(x)
        n = x.shape[0]
        s1, s3 = self.img_size // 4, self.img_size // 16
        fine = fine[:, 1:].transpose(1, 2).reshape(n, -1, s1, s1)
        coarse = coarse[:, 1:].transpose(1, 2).reshape(n, -1, s3, s3)
        return self.segmentation_head(self.conv_pred(self.conv_up_l(fine) + self.conv_up_s(coarse)))


# ---------------------------------------------------------------------------------------------- pretrained weights
#: HiFormer layers no ImageNet checkpoint has (inside ``all2cross.pyramid``); the CNN is loaded separately
PYRAMID_NEW = ("cnn.", "p1_ch.", "p2_ch.", "p3_ch.", "norm_1.", "norm_2.")
_SWIN_MAP = {"layers.0.downsample.": "p1_pm.", "layers.1.downsample.": "p2_pm.",
             "layers.0.blocks.": "swin.0.blocks.", "layers.1.blocks.": "swin.1.blocks.",
             "layers.2.blocks.": "swin.2.blocks."}
#: Swin-T parts HiFormer does not use (the official code drops the same ones)
_SWIN_UNUSED = ("patch_embed.", "layers.2.downsample.", "layers.3.", "norm.", "head.")


def hiformer_from_swin(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Swin-T keys -> ``all2cross.pyramid`` keys: stages 0-2 -> ``swin.*``, the first two patch-merging
    layers -> ``p1_pm``/``p2_pm``; buffers and unused Swin-T parts dropped; keys of another layout pass through
    unchanged (and fail the strict load)."""
    out = {}
    for k, v in state.items():
        if k.startswith(_SWIN_UNUSED) or k.endswith(SWIN_BUFFERS):
            continue
        for old, new in _SWIN_MAP.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def resnet_from_torchvision(state: dict[str, torch.Tensor], in_channels: int = 3) -> dict[str, torch.Tensor]:
    """torchvision ResNet keys -> the truncated trunk: ``layer4`` and ``fc`` dropped, BatchNorm step counters added
    where old checkpoints lack them, the first kernel fitted to ``in_channels``."""
    out = {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}
    for k in [k for k in out if k.endswith(".running_mean")]:
        out.setdefault(k[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0))
    adapt_first_conv(out, "conv1.weight", in_channels)
    return out


def load_hiformer_pretrained(net: HiFormer, cfg: HiFormerConfig, pretrained: bool | str, in_channels: int) -> None:
    """``pretrained=True`` downloads both official checkpoints; a folder path must hold both under their official
    names (``resnet50-0676ba61.pth`` or ``resnet34-b627a593.pth``, and ``swin_tiny_patch4_window7_224.pth``)."""
    cnn_w = TV_RESNET[cfg.cnn]
    cnn_file = local_file(pretrained, [cnn_w.source.rsplit("/", 1)[-1]])
    swin_file = local_file(pretrained, [SWIN_T.source.rsplit("/", 1)[-1]])
    cnn_state = resnet_from_torchvision(read_state_dict(resolve(cnn_w, cnn_file)), in_channels)
    load_checked(net.get_submodule(cnn_w.target), cnn_state, what=f"HiFormer CNN branch ({cfg.cnn})")
    swin_state = hiformer_from_swin(swin_official_state(resolve(SWIN_FOR_HIFORMER, swin_file)))
    load_checked(net.get_submodule(SWIN_FOR_HIFORMER.target), swin_state, what="HiFormer Swin branch (Swin-T)",
                 keep_init=PYRAMID_NEW)


_PARAMS = {"b": 26.0}


def _register(variant: str) -> None:
    cfg = CONFIGS[variant]
    card = ModelCard(
        name=f"hiformer-{variant}", family="medical",
        title=f"HiFormer-{variant.upper()} ({cfg.cnn} + Swin-T stages + double-level fusion)",
        paper="Heidari et al., HiFormer: Hierarchical Multi-scale Representations Using Transformers for Medical "
              "Image Segmentation, WACV 2023, arXiv:2207.08518",
        repo="https://github.com/amirhossein-kz/HiFormer", license="MIT (official code)",
        params_paper_m=_PARAMS.get(variant), fixed_size=224, input_divisor=32, min_size=32,
        pretrained={"imagenet-cnn": TV_RESNET[cfg.cnn], "imagenet-swin": SWIN_FOR_HIFORMER},
        gradcam_layer="conv_pred", gradcam_reshape=None,
        notes="Runs internally at 224x224 (fixed position embeddings and Swin windows; the wrapper resizes in and "
              "out). pretrained=True loads both ImageNet checkpoints (torchvision ResNet, Swin-T); a folder path "
              "must hold both official files. The DLF per-level transformer blocks exist but are not run, as in "
              "the official code. Unlike the official code, loaded Swin weights are not re-initialised.",
    )

    @register_model(card)
    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> nn.Module:
        net = HiFormer(cfg, in_channels, num_classes)
        if pretrained:
            load_hiformer_pretrained(net, cfg, pretrained, in_channels)
        return net


for _v in ("s", "b", "l"):
    _register(_v)
