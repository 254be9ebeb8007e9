"""Swin-UMamba (Liu et al., MICCAI 2024, arXiv:2402.03302): a VMamba-Tiny encoder (VSS blocks with the 2D
selective scan SS2D, four scan directions) inside a UNETR-style U-shaped decoder, ImageNet-pretrained encoder.

Layout as in the official ``SwinUMamba`` (github.com/JiarunLiu/Swin-UMamba, ``nnunetv2/nets/SwinUMamba.py``):

* stem: 7x7 stride-2 conv to 48 channels + affine instance norm; then VMamba-Tiny with a 2x2 patch embedding
  (so the encoder sees the image at 1/4, like the ImageNet model), depths (2, 2, 9, 2), widths 96-768,
  d_state 16, expand 2, drop path 0.2, patch merging between stages;
* skips: a residual block on the raw input (full resolution, 48 ch) and one on each encoder output
  (48/96/192/384/768 ch at 1/2 ... 1/16), the bottleneck is the last VMamba stage (768 ch at 1/32);
* decoder: transposed conv x2 + concatenation + residual block per level (MONAI ``UnetrUpBlock`` semantics:
  bias-free convs, non-affine instance norm, LeakyReLU 0.01), 1x1 output convs (four, for deep supervision).

Module names follow the official model (which uses MONAI blocks), so the authors' trained checkpoints load
as they are; the blocks themselves are written here in plain PyTorch to avoid a MONAI dependency. The selective
scan runs on ``mamba_ssm``'s CUDA kernel when available, else on our exact PyTorch scan
(:mod:`._selective_scan`). 59.9M parameters for one output logit (Borst & Kounev report 60M).

Pretrained: the official VMamba-Tiny ImageNet-1k checkpoint the paper used (``vssmtiny_dp01_ckpt_epoch_292``,
"vanilla" v0 VMamba). As in the official loader, the classifier (``head``, final ``norm``) is dropped and the
patch embedding is left at its initialisation (the stem changes its input: 48 channels at stride 2 instead of
RGB); everything else is loaded strictly.
"""
from __future__ import annotations

import math
import os
import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard, Weights, register_model
from ..weights import load_into, read_state_dict, resolve
from ._init import init_official
from ._selective_scan import selective_scan

VMAMBA_TINY = Weights(
    source="https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth",
    license="MIT (VMamba)", dataset="ImageNet-1k", target="vssm_encoder",
    # VMamba's release page publishes no checksum; this digest (91,649,482 bytes) is the one a public project that
    # provisions this exact file verifies against (found in stored public sources; see docs/models.md)
    sha256="dbc0cc4f5ec0e45db5fba7c939d2c7d9b617e891ac10766912a8d604c37c5e47")


# --------------------------------------------------------------------------------------------- VMamba encoder
class PatchEmbed2D(nn.Module):
    """Non-overlapping patch embedding; returns channels-last ``[N, H/p, W/p, C]``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging2D(nn.Module):
    """Swin patch merging: 2x2 neighbours concatenated (4C), normalised, projected to 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SS2D(nn.Module):
    """2D selective scan: depthwise conv, then four S6 scans (row-major, column-major, and both reversed) whose
    outputs are summed, gated by ``silu(z)`` and projected back. Parameters of the four directions are stacked
    (``x_proj_weight`` ``[4, R+2N, D]``, ``dt_projs_*``, ``A_logs`` ``[4D, N]``, ``Ds`` ``[4D]``) as in VMamba."""

    K = 4

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: float = 2.0,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        self.d_state = d_state
        self.d_inner = d_inner = int(expand * d_model)
        self.dt_rank = rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=True)
        bound = d_inner ** -0.5  # nn.Linear's default init, as the official per-direction Linear layers had
        self.x_proj_weight = nn.Parameter(torch.empty(self.K, rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(self.K, d_inner, rank).uniform_(-rank ** -0.5, rank ** -0.5))
        # dt bias: softplus(bias) log-uniform in [dt_min, dt_max] (Mamba's initialisation)
        dt = torch.exp(torch.rand(self.K, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation A = -(1..N); kept in log space
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.K * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(self.K * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _scan(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        length = h * w
        rows = x.reshape(b, d, length)
        cols = x.transpose(2, 3).reshape(b, d, length)
        xs = torch.stack([rows, cols], dim=1)
        xs = torch.cat([xs, xs.flip(-1)], dim=1)  # [b, 4, d, L]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        As = -torch.exp(self.A_logs.float())
        y = selective_scan(xs.float().reshape(b, -1, length).contiguous(),
                           dts.float().reshape(b, -1, length).contiguous(), As,
                           Bs.float().contiguous(), Cs.float().contiguous(), self.Ds.float(),
                           delta_bias=self.dt_projs_bias.float().reshape(-1), delta_softplus=True)
        y = y.float().view(b, self.K, d, length)
        back = y[:, 2:].flip(-1)  # undo the reversal of directions 2 and 3
        col_sum = (y[:, 1] + back[:, 1]).view(b, d, w, h).transpose(2, 3).reshape(b, d, length)
        return y[:, 0] + back[:, 0] + col_sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))
        y = self._scan(x).transpose(1, 2).reshape(b, h, w, -1)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """Pre-norm residual block around SS2D (VMamba v0: no MLP)."""

    def __init__(self, dim: int, drop_path: float, d_state: int) -> None:
        super().__init__()
        from timm.layers import DropPath

        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SS2D(dim, d_state=d_state)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))


class VSSLayer(nn.Module):
    def __init__(self, dim: int, depth: int, drop_path: list[float], d_state: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, drop_path[i], d_state) for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


class VSSMEncoder(nn.Module):
    """VMamba (v0) encoder returning ``[input, stage1, ..., stage4]`` (stages channels-first)."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, depths: tuple[int, ...] = (2, 2, 9, 2),
                 dims: tuple[int, ...] = (96, 192, 384, 768), d_state: int = 16,
                 drop_path_rate: float = 0.2) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed2D(patch_size, in_chans, dims[0])
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList(
            VSSLayer(dims[i], depths[i], dpr[sum(depths[:i]):sum(depths[:i + 1])], d_state)
            for i in range(len(depths)))
        self.downsamples = nn.ModuleList(PatchMerging2D(dims[i]) for i in range(len(depths) - 1))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        init_official(m)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        x = self.patch_embed(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            outs.append(x.permute(0, 3, 1, 2))
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
        return outs


# ----------------------------------------------------------------------------------- UNETR-style decoder blocks
def _conv(cin: int, cout: int, k: int, stride: int = 1, transposed: bool = False, bias: bool = False) -> nn.Module:
    """A conv inside a container named ``conv`` (MONAI's ``Convolution`` layout, for checkpoint compatibility)."""
    op = nn.ConvTranspose2d(cin, cout, k, stride, bias=bias) if transposed else \
        nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, bias=bias)
    return nn.Sequential(OrderedDict(conv=op))


class ResBlock(nn.Module):
    """MONAI ``UnetResBlock``: conv-IN-LReLU-conv-IN + (1x1 conv-IN) shortcut, LReLU after the sum."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(cin, cout, 3), _conv(cout, cout, 3)
        self.lrelu = nn.LeakyReLU(0.01, inplace=True)
        self.norm1, self.norm2 = nn.InstanceNorm2d(cout), nn.InstanceNorm2d(cout)
        if cin != cout:
            self.conv3, self.norm3 = _conv(cin, cout, 1), nn.InstanceNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lrelu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        res = self.norm3(self.conv3(x)) if hasattr(self, "conv3") else x
        return self.lrelu(out + res)


class BasicBlock(nn.Module):
    """MONAI ``UnetrBasicBlock`` with ``res_block=True``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.layer = ResBlock(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class UpBlock(nn.Module):
    """MONAI ``UnetrUpBlock``: 2x2 transposed conv, concatenate the skip, residual block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.transp_conv = _conv(cin, cout, 2, stride=2, transposed=True)
        self.conv_block = ResBlock(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.transp_conv(x), skip], dim=1))


class SwinUMamba(nn.Module):
    #: decoder widths; 96-768 must equal the VMamba-Tiny stage widths, 48 is the stem width
    FEATURES = (48, 96, 192, 384, 768)

    def __init__(self, in_chans: int, out_chans: int, deep_supervision: bool = False,
                 drop_path_rate: float = 0.2) -> None:
        super().__init__()
        f = self.FEATURES
        self.deep_supervision = deep_supervision
        self.stem = nn.Sequential(nn.Conv2d(in_chans, f[0], 7, stride=2, padding=3),
                                  nn.InstanceNorm2d(f[0], eps=1e-5, affine=True))
        self.vssm_encoder = VSSMEncoder(patch_size=2, in_chans=f[0], drop_path_rate=drop_path_rate)
        self.encoder1 = BasicBlock(in_chans, f[0])
        self.encoder2, self.encoder3 = BasicBlock(f[0], f[1]), BasicBlock(f[1], f[2])
        self.encoder4, self.encoder5 = BasicBlock(f[2], f[3]), BasicBlock(f[3], f[4])
        self.decoder6, self.decoder5 = UpBlock(f[4], f[4]), UpBlock(f[4], f[3])
        self.decoder4, self.decoder3, self.decoder2 = UpBlock(f[3], f[2]), UpBlock(f[2], f[1]), UpBlock(f[1], f[0])
        self.decoder1 = BasicBlock(f[0], f[0])
        self.out_layers = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=_conv(f[i], out_chans, 1, bias=True))) for i in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        vss = self.vssm_encoder(self.stem(x))
        enc1 = self.encoder1(x)
        enc2, enc3 = self.encoder2(vss[0]), self.encoder3(vss[1])
        enc4, enc5 = self.encoder4(vss[2]), self.encoder5(vss[3])
        dec4 = self.decoder6(vss[4], enc5)
        dec3 = self.decoder5(dec4, enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        out = self.decoder1(self.decoder2(dec1, enc1))
        if self.deep_supervision:  # full resolution first: the contract takes element 0
            return [head(feat) for head, feat in zip(self.out_layers, (out, dec1, dec2, dec3))]
        return self.out_layers[0](out)


# ------------------------------------------------------------------------------------------------ checkpoints
def read_training_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict of a VMamba checkpoint. Its training checkpoints pickle a yacs ``config`` beside the weights;
    :func:`..weights.read_state_dict` reads them with ``weights_only=True``, the config becoming an inert
    stand-in, so nothing from the file is executed (there is no second, unrestricted reader here)."""
    return read_state_dict(path)


_CLASSIFIER = ("head.", "norm.")


def convert_vmamba(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VMamba-v0 ImageNet keys -> our ``vssm_encoder``: ``layers.i.downsample.*`` -> ``downsamples.i.*``,
    the classifier dropped, the patch embedding kept from ``own`` (the encoder's current tensors), as in the
    official Swin-UMamba loader."""
    out = {}
    for k, v in state.items():
        if k.startswith(_CLASSIFIER) or k.startswith("patch_embed."):
            continue
        out[re.sub(r"^layers\.(\d+)\.downsample\.", r"downsamples.\1.", k)] = v
    out.update({k: v for k, v in own.items() if k.startswith("patch_embed.")})
    return out


def load_vmamba(net: SwinUMamba, local: str | os.PathLike | None = None) -> None:
    """Load the official VMamba-Tiny ImageNet weights (downloaded, cached, or ``local``) into ``net`` strictly."""
    state = read_training_checkpoint(resolve(VMAMBA_TINY, local))
    encoder = net.vssm_encoder
    load_into(encoder, convert_vmamba(state, encoder.state_dict()), what="SwinUMamba.vssm_encoder")


@register_model(ModelCard(
    name="swin-umamba", family="medical", title="Swin-UMamba (VMamba-Tiny encoder + UNETR-style decoder)",
    paper="Liu et al., Swin-UMamba: Mamba-based UNet with ImageNet-based pretraining, MICCAI 2024, "
          "arXiv:2402.03302",
    repo="https://github.com/JiarunLiu/Swin-UMamba", license="Apache-2.0 (code); VMamba weights MIT",
    params_paper_m=60.0, input_divisor=32, min_size=64, pretrained={"imagenet": VMAMBA_TINY},
    gradcam_layer="decoder1", extra=None,
    notes="Selective scan: mamba_ssm's CUDA kernel when installed (pip install mamba-ssm), else an exact pure-PyTorch "
          "chunked scan (slow and memory-hungry at 512x512, fine on CPU for small inputs). Deep supervision "
          "available (deep_supervision=True), off by default. Checkpoint also published under the release tag "
          "%2320240218 (the URL in the Swin-UMamba README).",
))
def build_swin_umamba(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                      deep_supervision: bool = False, drop_path_rate: float = 0.2) -> nn.Module:
    net = SwinUMamba(in_channels, num_classes, deep_supervision=deep_supervision, drop_path_rate=drop_path_rate)
    if pretrained:
        load_vmamba(net, local=pretrained if isinstance(pretrained, str) else None)
    return net
