"""nnU-Net-style 2D U-Nets (Isensee et al., Nat. Methods 2021; residual encoders: Isensee et al., "nnU-Net
Revisited", MICCAI 2024) with nnU-Net's 2D topology planner.

* ``nnunet-plain``: ``PlainConvUNet`` (two conv-IN-LeakyReLU per stage in encoder and decoder, strided-conv
  downsampling, transposed-conv upsampling, 32 features doubling per stage, capped at 512 in 2D);
* ``nnunet-resenc``: ``ResidualEncoderUNet`` with the "M" preset (encoder stem conv + (1, 3, 4, 6, 6, ...)
  ResNet-D basic blocks per stage, one conv per decoder stage).

:func:`plan_2d` derives the topology as nnU-Net v2's ``ExperimentPlanner`` (ResEnc: ``nnUNetPlannerResEncM``)
plans its ``2d`` configuration: initial patch from the spacing, clipped to the median image size; pooling per axis
until the bottleneck edge would drop below 4 (anisotropy-aware: an axis pools only while its spacing is below twice
the finest spacing, and gets 3-wide kernels only then); then the patch shrinks until the feature-map memory
estimate fits the GPU memory target, and the batch size follows from the remaining headroom.

Why plain PyTorch and not ``dynamic_network_architectures`` (nnU-Net's network library)? Its releases pin
``timm<1.0.23``, which conflicts with the timm our other models need. The modules below mirror its module names,
so nnU-Net-trained 2D checkpoints load after :func:`convert_nnunet_checkpoint` drops its alias keys, and the unit
tests check output parity against the library where it is installed. Trained from scratch (nnU-Net has no
ImageNet weights); weights initialised as nnU-Net does (He normal, slope 0.01; ResEnc: last norm of each residual
block zeroed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..._errors import ConfigError
from ..card import ModelCard, register_model

Size2 = tuple[int, int]

_PRESETS = {
    # blocks per encoder stage, convs per decoder stage, VRAM reference (feature-map voxels at 8 GB), batch-size
    # rule ("default": estimate / 12 * 2 must fit; "resenc": estimate must fit), share of dataset per batch
    "plain": {"enc": (2,) * 14, "dec": (2,) * 13, "reference": 85_000_000, "rule": "default", "covered": 0.05},
    "resenc-m": {"enc": (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6), "dec": (1,) * 12, "reference": 135_000_000,
                 "rule": "resenc", "covered": 1.0},
}
_BASE_FEATURES, _MAX_FEATURES_2D, _MIN_EDGE, _REF_GB, _REF_BATCH, _MIN_BATCH = 32, 512, 4, 8, 12, 2


@dataclass(frozen=True)
class Plan2D:
    """A planned 2D network: topology, patch and batch size (nnU-Net's ``plans.json`` ``2d`` entry, in short)."""

    preset: str
    patch_size: Size2
    spacing: tuple[float, float]
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[Size2, ...]
    strides: tuple[Size2, ...]
    n_blocks_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    batch_size: int
    vram_estimate: int

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> Size2:
        """Input edges must be multiples of this (product of the strides per axis)."""
        return tuple(math.prod(s[i] for s in self.strides) for i in range(2))  # type: ignore[return-value]


def _pool_and_conv_props(spacing: tuple[float, ...], patch: tuple[int, ...]) -> tuple[tuple, tuple, tuple, list]:
    """nnU-Net's ``get_pool_and_conv_props``: strides and kernels per stage, padded patch, divisor per axis."""
    dim = len(spacing)
    cur_spacing, cur_size = list(spacing), list(patch)
    strides, kernels = [[1] * dim], []
    n_pool, kernel = [0] * dim, [1] * dim
    while True:
        valid = [i for i in range(dim) if cur_size[i] >= 2 * _MIN_EDGE]
        if not valid:
            break
        finest = min(cur_spacing[i] for i in valid)
        valid = [i for i in valid if cur_spacing[i] / finest < 2]
        if len(valid) == 1 and cur_size[valid[0]] < 3 * _MIN_EDGE:
            break
        if not valid:
            break
        for d in range(dim):  # 3-wide kernels once an axis is no longer much coarser than the finest
            if kernel[d] != 3 and cur_spacing[d] / min(cur_spacing) < 2:
                kernel[d] = 3
        stride = [1] * dim
        for v in valid:
            stride[v] = 2
            n_pool[v] += 1
            cur_spacing[v] *= 2
            cur_size[v] = math.ceil(cur_size[v] / 2)
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dim)
    divisor = [2 ** p for p in n_pool]
    padded = [s if s % m == 0 else s + m - s % m for s, m in zip(patch, divisor)]
    return tuple(map(tuple, strides)), tuple(map(tuple, kernels)), tuple(padded), divisor


def _vram_estimate(preset: str, patch: Size2, features: tuple[int, ...], strides: tuple[Size2, ...],
                   enc: tuple[int, ...], dec: tuple[int, ...], num_classes: int) -> int:
    """Feature-map voxels of one forward pass, as ``compute_conv_feature_map_size`` counts them."""
    sizes, cur = [], list(patch)
    for s in strides:
        cur = [c // k for c, k in zip(cur, s)]
        sizes.append(math.prod(cur))
    total = 0
    if preset == "plain":
        total += sum(n * c * v for n, c, v in zip(enc, features, sizes))
    else:
        total += features[0] * math.prod(patch)  # stem
        cin = features[0]
        for s, (n, c, v) in enumerate(zip(enc, features, sizes)):
            projected = cin != c or any(k != 1 for k in strides[s])
            total += 2 * c * v * n + (c * v if projected else 0)
            cin = c
    for level in range(len(features) - 2, -1, -1):  # decoder, deepest first
        c, v = features[level], sizes[level]
        total += dec[level] * c * v + c * v  # convs + transposed conv output
    total += num_classes * sizes[0]  # final segmentation layer (no deep supervision while planning)
    return int(total)


def plan_2d(median_image_size: Size2 | tuple[int, ...], spacing: tuple[float, ...] = (1.0, 1.0),
            gpu_memory_gb: float = 8.0, preset: str = "plain", num_input_channels: int = 1, num_classes: int = 2,
            num_images: int | None = None) -> Plan2D:
    """Plan a 2D nnU-Net as nnU-Net v2 does for its ``2d`` configuration.

    ``median_image_size``/``spacing``: (y, x) of the dataset's median image and pixel spacing (use (1, 1) for
    photographs). ``num_classes`` counts background. ``num_images`` (training cases) caps the batch size at 5%
    of the dataset (plain preset), as nnU-Net does; without it no cap is applied.
    """
    if preset not in _PRESETS:
        raise ConfigError(f"unknown nnU-Net preset {preset!r}", fix=f"use one of {sorted(_PRESETS)}")
    if len(median_image_size) != 2 or len(spacing) != 2 or min(spacing) <= 0 or min(median_image_size) < 1:
        raise ConfigError(f"plan_2d needs a 2D size and positive 2D spacing, got {median_image_size}, {spacing}")
    del num_input_channels  # the estimate does not depend on it (kept for nnU-Net's signature)
    cfg = _PRESETS[preset]
    median = [int(s) for s in median_image_size]
    spacing = tuple(float(s) for s in spacing)
    inv = [1.0 / s for s in spacing]
    scale = (2048 ** 2 / math.prod(inv)) ** 0.5
    initial = [min(round(i * scale), m) for i, m in zip(inv, median)]
    strides, kernels, patch, divisor = _pool_and_conv_props(spacing, initial)
    if len(strides) < 2:
        raise ConfigError(f"image size {tuple(median)} is too small to plan a U-Net (nothing can be pooled)",
                          fix=f"use images of at least {2 * _MIN_EDGE}x{2 * _MIN_EDGE} pixels")

    def arch(strides: tuple) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        n = len(strides)
        feats = tuple(min(_MAX_FEATURES_2D, _BASE_FEATURES * 2 ** i) for i in range(n))
        return feats, tuple(cfg["enc"][:n]), tuple(cfg["dec"][:n - 1])

    def estimate(patch: tuple, strides: tuple) -> int:
        feats, enc, dec = arch(strides)
        return _vram_estimate(preset, patch, feats, strides, enc, dec, num_classes)

    reference = cfg["reference"] * gpu_memory_gb / _REF_GB
    est = estimate(patch, strides)

    def too_big(est: int) -> bool:
        return (est / _REF_BATCH * 2 if cfg["rule"] == "default" else est) > reference

    while too_big(est):
        # shrink the axis that is largest relative to the median shape, by the divisor of the smaller patch
        axis = max(range(2), key=lambda i: (patch[i] / median[i], i))
        tmp = list(patch)
        tmp[axis] -= divisor[axis]
        divisor = _pool_and_conv_props(spacing, tmp)[3]
        patch = list(patch)
        patch[axis] -= divisor[axis]
        strides, kernels, patch, divisor = _pool_and_conv_props(spacing, patch)
        est = estimate(patch, strides)
    batch = round(reference / est * _REF_BATCH)
    if num_images is not None:
        batch = min(batch, round(math.prod(median) * num_images * cfg["covered"] / math.prod(patch)))
    batch = max(batch, _MIN_BATCH)
    feats, enc, dec = arch(strides)
    return Plan2D(preset=preset, patch_size=tuple(int(p) for p in patch), spacing=spacing,  # type: ignore[arg-type]
                  features_per_stage=feats, kernel_sizes=kernels, strides=strides, n_blocks_per_stage=enc,
                  n_conv_per_stage_decoder=dec, batch_size=int(batch), vram_estimate=est)


# ------------------------------------------------------------------------------------------------------ modules
class ConvNormAct(nn.Module):
    """Conv -> InstanceNorm (affine) -> LeakyReLU (``ConvDropoutNormReLU`` without dropout, nnU-Net's default)."""

    def __init__(self, cin: int, cout: int, kernel: Size2 | int, stride: Size2 | int, act: bool = True,
                 bias: bool = True) -> None:
        super().__init__()
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=[(i - 1) // 2 for i in k], bias=bias)
        self.norm = nn.InstanceNorm2d(cout, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.norm(self.conv(x)))


class StackedConvBlocks(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, kernel: Size2, stride: Size2) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[ConvNormAct(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class BasicBlockD(nn.Module):
    """ResNet-D basic block: two 3x3 convs; the shortcut average-pools (if strided) then 1x1-projects (if needed)."""

    def __init__(self, cin: int, cout: int, kernel: Size2, stride: Size2) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, kernel, stride)
        self.conv2 = ConvNormAct(cout, cout, kernel, 1, act=False)
        self.nonlin2 = nn.LeakyReLU(0.01, inplace=True)
        strided = any(s != 1 for s in stride)
        ops: list[nn.Module] = [nn.AvgPool2d(stride, stride)] if strided else []
        if cin != cout:
            ops.append(ConvNormAct(cin, cout, 1, 1, act=False, bias=False))
        self.skip = nn.Sequential(*ops) if ops else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class StackedResidualBlocks(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, kernel: Size2, stride: Size2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[BasicBlockD(cin if i == 0 else cout, cout, kernel, stride if i == 0 else (1, 1))
                                      for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Encoder(nn.Module):
    """Plain (``stages.s.0`` = stacked convs) or residual (``stem`` + ``stages.s`` = residual blocks) encoder."""

    def __init__(self, plan: Plan2D, in_channels: int) -> None:
        super().__init__()
        cin, stages = in_channels, []
        if plan.preset == "plain":
            for c, k, s, n in zip(plan.features_per_stage, plan.kernel_sizes, plan.strides, plan.n_blocks_per_stage):
                stages.append(nn.Sequential(StackedConvBlocks(n, cin, c, k, s)))
                cin = c
        else:
            self.stem = StackedConvBlocks(1, cin, plan.features_per_stage[0], plan.kernel_sizes[0], (1, 1))
            cin = plan.features_per_stage[0]
            for c, k, s, n in zip(plan.features_per_stage, plan.kernel_sizes, plan.strides, plan.n_blocks_per_stage):
                stages.append(StackedResidualBlocks(n, cin, c, k, s))
                cin = c
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if hasattr(self, "stem"):
            x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class Decoder(nn.Module):
    """Transposed conv up, concatenate the skip, stacked convs; a 1x1 segmentation layer per stage."""

    def __init__(self, plan: Plan2D, num_classes: int, deep_supervision: bool) -> None:
        super().__init__()
        f, n = plan.features_per_stage, plan.n_stages
        self.deep_supervision = deep_supervision
        self.transpconvs = nn.ModuleList(nn.ConvTranspose2d(f[-s], f[-(s + 1)], plan.strides[-s], plan.strides[-s])
                                         for s in range(1, n))
        self.stages = nn.ModuleList(StackedConvBlocks(plan.n_conv_per_stage_decoder[s - 1], 2 * f[-(s + 1)],
                                                      f[-(s + 1)], plan.kernel_sizes[-(s + 1)], (1, 1))
                                    for s in range(1, n))
        self.seg_layers = nn.ModuleList(nn.Conv2d(f[-(s + 1)], num_classes, 1) for s in range(1, n))

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x, outs = skips[-1], []
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            x = stage(torch.cat([up(x), skips[-(s + 2)]], dim=1))
            if self.deep_supervision or s == len(self.stages) - 1:
                outs.append(self.seg_layers[s](x))
        return outs[::-1] if self.deep_supervision else outs[-1]


class NNUNet2D(nn.Module):
    """Encoder + decoder from a :class:`Plan2D`. Pads inputs to the plan's divisor and crops logits back; with deep
    supervision returns ``[full, 1/2, 1/4, ...]`` logits (full resolution first)."""

    def __init__(self, plan: Plan2D, in_channels: int, num_classes: int, deep_supervision: bool = False) -> None:
        super().__init__()
        self.plan = plan
        self.encoder = Encoder(plan, in_channels)
        self.decoder = Decoder(plan, num_classes, deep_supervision)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=1e-2)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        if isinstance(m, BasicBlockD):  # residual branch starts as zero
            nn.init.zeros_(m.conv2.norm.weight)
            nn.init.zeros_(m.conv2.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        h, w = x.shape[-2:]
        dy, dx = self.plan.divisor
        ph, pw = (-h) % dy, (-w) % dx
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        out = self.decoder(self.encoder(x))
        if not (ph or pw):
            return out
        if isinstance(out, list):  # lower-resolution outputs are cropped proportionally
            return [o[..., :math.ceil(h * o.shape[-2] / x.shape[-2]), :math.ceil(w * o.shape[-1] / x.shape[-1])]
                    for o in out]
        return out[..., :h, :w]


def convert_nnunet_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``network_weights`` of an nnU-Net v2 checkpoint -> our keys: drops the library's alias entries
    (``...all_modules.N`` duplicates each conv/norm; ``decoder.encoder.*`` duplicates the encoder)."""
    return {k: v for k, v in state.items() if ".all_modules." not in k and not k.startswith("decoder.encoder.")}


_PAPER = ("Isensee et al., nnU-Net: a self-configuring method for deep learning-based biomedical image "
          "segmentation, Nature Methods 18, 2021")


def _build(preset: str, num_classes: int, in_channels: int, pretrained: bool | str, patch_size: Size2,
           spacing: tuple[float, float], gpu_memory_gb: float, deep_supervision: bool) -> nn.Module:
    if pretrained:
        raise ConfigError("nnU-Net models are trained from scratch", fix="use --set model.pretrained=false")
    plan = plan_2d(tuple(patch_size), tuple(spacing), gpu_memory_gb, preset, in_channels, max(num_classes, 2))
    return NNUNet2D(plan, in_channels, num_classes, deep_supervision)


_NOTES = ("Topology from plan_2d(patch_size, spacing) (kwargs; default 512x512, isotropic): 8 stages, 32-512 "
          "features, bottleneck 4x4 at 512. The network pads inputs to its own divisor too, so other plans work "
          "under the card's divisor. Deep supervision: deep_supervision=True (off by default).")


@register_model(ModelCard(
    name="nnunet-plain", family="medical", title="nnU-Net 2D (PlainConvUNet, planned for 512x512)",
    paper=_PAPER, repo="https://github.com/MIC-DKFZ/nnUNet", license="Apache-2.0",
    input_divisor=128, min_size=256, gradcam_layer="decoder.stages.6", notes=_NOTES,
))
def build_nnunet_plain(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                       patch_size: Size2 = (512, 512), spacing: tuple[float, float] = (1.0, 1.0),
                       gpu_memory_gb: float = 8.0, deep_supervision: bool = False) -> nn.Module:
    return _build("plain", num_classes, in_channels, pretrained, patch_size, spacing, gpu_memory_gb, deep_supervision)


@register_model(ModelCard(
    name="nnunet-resenc", family="medical", title="nnU-Net 2D ResEnc-M (ResidualEncoderUNet, planned for 512x512)",
    paper="Isensee et al., nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation, "
          "MICCAI 2024, arXiv:2404.09556; " + _PAPER,
    repo="https://github.com/MIC-DKFZ/nnUNet", license="Apache-2.0",
    input_divisor=128, min_size=256, gradcam_layer="decoder.stages.6", notes=_NOTES,
))
def build_nnunet_resenc(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                        patch_size: Size2 = (512, 512), spacing: tuple[float, float] = (1.0, 1.0),
                        gpu_memory_gb: float = 8.0, deep_supervision: bool = False) -> nn.Module:
    return _build("resenc-m", num_classes, in_channels, pretrained, patch_size, spacing, gpu_memory_gb,
                  deep_supervision)
