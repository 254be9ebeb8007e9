"""SegFormer (Xie et al., NeurIPS 2021): Mix Transformer (MiT-B0...B5) encoder + all-MLP decoder.

Built with segmentation_models_pytorch, whose MiT encoder follows the official implementation key for key. The
decoder width follows the official configs: 256 for B0/B1, 768 for B2-B5 (SegFormer-B3: 47.2M params, as in
Borst & Kounev). Pretrained: the official ImageNet-1k MiT weights, through smp's hub code, or a local official
``mit_bX.pth`` file (``pretrained=/path/to/mit_b3.pth``). The checkpoints have RGB patch-embedding kernels; for
a 1-channel input they are summed over RGB (timm's ``adapt_input_conv`` rule, as smp does for its hub weights), so
a grey image seen as R=G=B gives the pretrained response.
"""
from __future__ import annotations

import torch.nn as nn

from ..._errors import SegarenaError
from ..._paths import is_offline
from ..card import ModelCard, Weights, register_model
from ..weights import adapt_first_conv, load_pretrained

#: the first convolution of the MiT encoder (the one whose kernels see the input channels)
FIRST_CONV = "patch_embed1.proj.weight"

_PARAMS_PAPER = {3: 47.0}
_SEGFORMER_LICENSE = "NVIDIA Source Code License for SegFormer (non-commercial research)"


def _mit_weights(i: int) -> Weights:
    return Weights(source=f"hf-hub:smp-hub/mit_b{i}.imagenet", license=_SEGFORMER_LICENSE, dataset="ImageNet-1k")


def _build(i: int, num_classes: int, in_channels: int, pretrained: bool | str) -> nn.Module:
    import segmentation_models_pytorch as smp

    use_hub = pretrained is True
    if use_hub and is_offline():
        raise SegarenaError(f"SegFormer-B{i} ImageNet weights cannot be downloaded offline",
                            fix=f"pass a local official mit_b{i}.pth as pretrained, or unset HF_HUB_OFFLINE")
    try:
        net = smp.Segformer(encoder_name=f"mit_b{i}", encoder_weights="imagenet" if use_hub else None,
                            in_channels=in_channels, classes=num_classes,
                            decoder_segmentation_channels=256 if i < 2 else 768)
    except (OSError, RuntimeError, ValueError) as exc:
        if not use_hub:
            raise
        raise SegarenaError(f"SegFormer-B{i} ImageNet weights could not be fetched ({type(exc).__name__})",
                            fix=f"connect once to cache them, or pass a local official mit_b{i}.pth") from None
    if isinstance(pretrained, str):
        # official MiT checkpoints carry an ImageNet classification head we do not use
        load_pretrained(net, _mit_weights(i), lambda sd: adapt_first_conv(sd, FIRST_CONV, in_channels),
                        local=pretrained, ignore=("head.",))
    return net


def _register(i: int) -> None:
    card = ModelCard(
        name=f"segformer-b{i}", family="general", title=f"SegFormer-B{i} (MiT-B{i} + all-MLP decoder)",
        paper="Xie et al., SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers, "
              "NeurIPS 2021, arXiv:2105.15203",
        repo="https://github.com/NVlabs/SegFormer", license=_SEGFORMER_LICENSE,
        params_paper_m=_PARAMS_PAPER.get(i), input_divisor=32, pretrained={"imagenet": _mit_weights(i)},
        gradcam_layer="decoder.fuse_stage", extra=None,
        notes="Built with segmentation_models_pytorch; logits predicted at 1/4 and upsampled to the input size.",
    )

    @register_model(card)
    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> nn.Module:
        return _build(i, num_classes, in_channels, pretrained)


for _i in range(6):
    _register(_i)
