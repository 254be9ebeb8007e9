"""U-Net variants of the medical family: Attention U-Net (from scratch), UNet++ and a U-Net with an ImageNet VGG-16
encoder (both through segmentation_models_pytorch).

* ``attention-unet`` (Oktay et al., MIDL 2018, arXiv:1804.03999): the official single-attention model with deep
  supervision (``unet_CT_single_att_dsv``, github.com/ozan-oktay/Attention-Gated-Networks) ported to 2D: a
  4-level U-Net (conv-BN-ReLU x2, max pooling, bilinear upsampling), additive grid attention gates on the skips
  of levels 2-4 (theta: 2x2 stride-2 conv on the skip; phi: 1x1 conv on the coarser gating signal; psi: 1x1 conv
  + sigmoid, upsampled back; output 1x1 conv + BN, then a 1x1 conv-BN-ReLU), a 1x1 conv-BN-ReLU gating signal on
  the bottleneck, and four deep-supervision heads fused by a 1x1 conv. Widths ``base * (1, 2, 4, 8, 16)``: the
  paper used ``base=16`` (3D, ``feature_scale=4``); we default to 64, the width of the classic U-Net the study
  compares against (35.2M parameters; ``base=16``: 2.2M).
* ``unetplusplus`` (Zhou et al., DLMIA 2018 / TMI 2019, arXiv:1807.10165): smp's ``UnetPlusPlus`` with a
  ResNet-34 ImageNet encoder (26.1M parameters).
* ``unet-vgg16``: smp's ``Unet`` with a VGG-16-BN ImageNet encoder and decoder widths (512, 256, 128, 64, 32),
  i.e. classic U-Net-like widths; 30.4M parameters, within 2% of the 31M Borst & Kounev report for their U-Net,
  whose ImageNet encoder was "likely VGG-style" (smp's default decoder widths would give 23.8M). The classic
  from-scratch ``unet`` (31.0M) is registered separately in ``unet.py``.

Pretrained encoders: ``pretrained=True`` downloads the ImageNet weights through smp's hub code; a string is a
local official checkpoint (torchvision's ``resnet34-333f7ec4.pth`` / ``vgg16_bn-6c64b313.pth``, or smp-hub's
``model.safetensors``), loaded strictly into the encoder (classifier keys ignored). For a 1-channel input the
first conv's pretrained kernels are summed over RGB, as smp does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..._errors import ConfigError, SegarenaError
from ..._paths import is_offline
from ..card import ModelCard, Weights, register_model
from ..weights import load_pretrained


# ------------------------------------------------------------------------------------------- Attention U-Net
def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, (k - 1) // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UnetConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class GridAttentionGate(nn.Module):
    """Additive attention gate (``GridAttentionBlock``, mode "concatenation"): attention coefficients computed at
    the gating resolution from the skip ``x`` and gating signal ``g``, upsampled, multiplied into ``x``."""

    def __init__(self, in_channels: int, gating_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.W = nn.Sequential(nn.Conv2d(in_channels, in_channels, 1), nn.BatchNorm2d(in_channels))
        self.theta = nn.Conv2d(in_channels, inter_channels, 2, stride=2, bias=False)
        self.phi = nn.Conv2d(gating_channels, inter_channels, 1, bias=True)
        self.psi = nn.Conv2d(inter_channels, 1, 1, bias=True)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta_x = self.theta(x)
        phi_g = F.interpolate(self.phi(g), size=theta_x.shape[-2:], mode="bilinear", align_corners=False)
        att = torch.sigmoid(self.psi(F.relu(theta_x + phi_g)))
        att = F.interpolate(att, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.W(att * x), att


class AttentionBlock(nn.Module):
    """Gate followed by a 1x1 conv-BN-ReLU (the official ``MultiAttentionBlock`` with one gate)."""

    def __init__(self, in_channels: int, gating_channels: int) -> None:
        super().__init__()
        self.gate_block_1 = GridAttentionGate(in_channels, gating_channels, in_channels)
        self.combine_gates = _conv_bn_relu(in_channels, in_channels, k=1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.combine_gates(self.gate_block_1(x, g)[0])


class UpConcat(nn.Module):
    """Bilinear x2 upsampling of the coarse features, concatenated with the skip, two conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = UnetConv(cin + cout, cout)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, up], dim=1))


class AttentionUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, base: int = 64) -> None:
        super().__init__()
        f = [base * 2 ** i for i in range(5)]
        self.conv1, self.conv2 = UnetConv(in_channels, f[0]), UnetConv(f[0], f[1])
        self.conv3, self.conv4 = UnetConv(f[1], f[2]), UnetConv(f[2], f[3])
        self.center = UnetConv(f[3], f[4])
        self.pool = nn.MaxPool2d(2)
        self.gating = _conv_bn_relu(f[4], f[4], k=1)
        self.attentionblock2 = AttentionBlock(f[1], f[2])
        self.attentionblock3 = AttentionBlock(f[2], f[3])
        self.attentionblock4 = AttentionBlock(f[3], f[4])
        self.up_concat4, self.up_concat3 = UpConcat(f[4], f[3]), UpConcat(f[3], f[2])
        self.up_concat2, self.up_concat1 = UpConcat(f[2], f[1]), UpConcat(f[1], f[0])
        self.dsv4, self.dsv3 = nn.Conv2d(f[3], num_classes, 1), nn.Conv2d(f[2], num_classes, 1)
        self.dsv2, self.dsv1 = nn.Conv2d(f[1], num_classes, 1), nn.Conv2d(f[0], num_classes, 1)
        self.final = nn.Conv2d(4 * num_classes, num_classes, 1)
        for m in self.modules():  # the official "kaiming" initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        c2 = self.conv2(self.pool(c1))
        c3 = self.conv3(self.pool(c2))
        c4 = self.conv4(self.pool(c3))
        center = self.center(self.pool(c4))
        up4 = self.up_concat4(self.attentionblock4(c4, self.gating(center)), center)
        up3 = self.up_concat3(self.attentionblock3(c3, up4), up4)
        up2 = self.up_concat2(self.attentionblock2(c2, up3), up3)
        up1 = self.up_concat1(c1, up2)
        size = x.shape[-2:]
        heads = [self.dsv1(up1)] + [F.interpolate(head(feat), size=size, mode="bilinear", align_corners=False)
                                    for head, feat in ((self.dsv2, up2), (self.dsv3, up3), (self.dsv4, up4))]
        return self.final(torch.cat(heads, dim=1))


@register_model(ModelCard(
    name="attention-unet", family="medical", title="Attention U-Net (grid attention gates, deep supervision)",
    paper="Oktay et al., Attention U-Net: Learning Where to Look for the Pancreas, MIDL 2018, arXiv:1804.03999",
    repo="https://github.com/ozan-oktay/Attention-Gated-Networks", license="MIT (official code); ours: from scratch",
    input_divisor=16, min_size=32, gradcam_layer="up_concat1",
    notes="2D port of unet_CT_single_att_dsv; base width 64 (paper: 16, set with base=16); trained from scratch.",
))
def build_attention_unet(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                         base: int = 64) -> nn.Module:
    if pretrained:
        raise ConfigError("attention-unet has no pretrained weights", fix="use --set model.pretrained=false")
    return AttentionUNet(in_channels, num_classes, base=base)


# ------------------------------------------------------------------------------------- smp-based U-Nets
def _smp_weights(encoder: str) -> Weights:
    return Weights(source=f"hf-hub:smp-hub/{encoder}.imagenet", license="BSD-3-Clause (torchvision weights)",
                   dataset="ImageNet-1k", target="encoder")


RESNET34 = _smp_weights("resnet34")
VGG16_BN = _smp_weights("vgg16_bn")


def fill_bn_counters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet files (2017) predate batch norm's ``num_batches_tracked`` buffer: add it (0, as
    PyTorch itself does for such files) so the strict load can check every other key."""
    out = dict(state)
    for k in state:
        if k.endswith(".running_mean"):
            out.setdefault(k[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out


def _build_smp(kind: str, encoder: str, weights: Weights, classifier: tuple[str, ...], num_classes: int,
               in_channels: int, pretrained: bool | str, **kwargs: object) -> nn.Module:
    import segmentation_models_pytorch as smp

    use_hub = pretrained is True
    local = pretrained if isinstance(pretrained, str) else None
    if use_hub and is_offline():
        raise SegarenaError(f"{encoder} ImageNet weights cannot be downloaded offline",
                            fix=f"pass a local official {encoder} checkpoint as pretrained, or unset HF_HUB_OFFLINE")
    try:  # a local checkpoint has RGB kernels: build for 3 channels, load, then adapt the first conv like smp
        net = getattr(smp, kind)(encoder_name=encoder, encoder_weights="imagenet" if use_hub else None,
                                 in_channels=3 if local else in_channels, classes=num_classes, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if not use_hub:
            raise
        raise SegarenaError(f"{encoder} ImageNet weights could not be fetched ({type(exc).__name__})",
                            fix=f"connect once to cache them, or pass a local official {encoder} checkpoint") from None
    if local:
        load_pretrained(net, weights, fill_bn_counters, local=local, ignore=classifier)
        net.encoder.set_in_channels(in_channels, pretrained=True)
    return net


@register_model(ModelCard(
    name="unetplusplus", family="medical", title="UNet++ (ResNet-34 ImageNet encoder, nested dense skips)",
    paper="Zhou et al., UNet++: A Nested U-Net Architecture for Medical Image Segmentation, DLMIA 2018; "
          "UNet++: Redesigning Skip Connections..., IEEE TMI 2019, arXiv:1807.10165",
    repo="https://github.com/MrGiovanni/UNetPlusPlus (built with segmentation_models_pytorch)",
    license="MIT (smp); ResNet-34 weights BSD-3-Clause (torchvision)",
    input_divisor=32, min_size=32, pretrained={"imagenet": RESNET34}, gradcam_layer="decoder.blocks.x_0_4",
    notes="smp UnetPlusPlus without deep supervision; ImageNet encoder = torchvision resnet34-333f7ec4.pth "
          "(served by smp-hub/resnet34.imagenet).",
))
def build_unetplusplus(num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> nn.Module:
    return _build_smp("UnetPlusPlus", "resnet34", RESNET34, ("fc.",), num_classes, in_channels, pretrained)


@register_model(ModelCard(
    name="unet-vgg16", family="medical", title="U-Net with ImageNet VGG-16-BN encoder",
    paper="Ronneberger et al., U-Net, MICCAI 2015, arXiv:1505.04597; encoder: Simonyan & Zisserman, VGG, ICLR "
          "2015, arXiv:1409.1556 (ImageNet-encoder U-Net as in Iglovikov & Shvets, TernausNet, arXiv:1801.05746)",
    repo="https://github.com/qubvel-org/segmentation_models.pytorch",
    license="MIT (smp); VGG-16-BN weights BSD-3-Clause (torchvision)",
    params_paper_m=31.0, input_divisor=32, min_size=32, pretrained={"imagenet": VGG16_BN},
    gradcam_layer="decoder.blocks.4",
    notes="The U-Net of the paper's study (configs/studies/borst2026.yaml): Borst & Kounev's U-Net started from an "
          "ImageNet-initialised, 'likely VGG-style' encoder (31M); this one has 30.4M parameters (-2%) with decoder "
          "widths (512, 256, 128, 64, 32). ImageNet encoder = torchvision vgg16_bn-6c64b313.pth (served by "
          "smp-hub/vgg16_bn.imagenet); for 1-channel input its first-conv kernels are summed over RGB.",
))
def build_unet_vgg16(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                     decoder_channels: tuple[int, ...] = (512, 256, 128, 64, 32)) -> nn.Module:
    return _build_smp("Unet", "vgg16_bn", VGG16_BN, ("classifier.",), num_classes, in_channels, pretrained,
                      decoder_channels=tuple(decoder_channels))
