"""Mask2Former with a Swin-T backbone (Cheng et al., CVPR 2022), returning per-class semantic logits.

Built with Hugging Face transformers' ``Mask2FormerForUniversalSegmentation`` from a config written here (no
download): Swin-T (embed 96, depths 2-2-6-2, heads 3-6-12-24, window 7, drop path 0.3), multi-scale deformable
pixel decoder (6 layers), masked-attention transformer decoder (``decoder_layers=10`` in transformers' count:
9 masked-attention layers, as the official 9), 100 queries, 256 wide -- the official ADE20K semantic Swin-T
setting (``maskformer2_swin_tiny_bs16_160k``).

Semantic logits: Mask2Former predicts, per query q, class logits (K classes + "no object") and a mask logit map
at 1/4 resolution. We return ``S[k] = sum_q softmax(class_q)[k] * mask_logit_q`` (the null class dropped), an
einsum at 1/4 resolution the wrapper upsamples. This is what our per-pixel losses (BCE / cross-entropy) train.
It differs from the paper in two ways, said here once: (1) the Hungarian-matched set loss (class CE + mask BCE
+ Dice on sampled points, deep supervision) is NOT used; (2) the paper's semantic inference multiplies class
probabilities with *sigmoid* mask probabilities; we combine mask *logits* so the output is a logit map.

Pretrained: ``facebook/mask2former-swin-tiny-ade-semantic`` (ADE20K, 150 classes) from the Hugging Face hub, or a
local copy of its ``pytorch_model.bin`` / ``model.safetensors``; everything but the class predictor (151 vs K+1
outputs) is loaded strictly into ``m2f.model`` after :func:`convert_hf_mask2former` maps the hub's (transformers
4) key layout onto the installed transformers' module names. transformers is an optional extra:
``pip install segarena[transformers]``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..._errors import SegarenaError
from ..card import ModelCard, Weights, register_model
from ..weights import load_pretrained, resolve
from .dinov2 import adapt_patch_embed

HUB_ID = "facebook/mask2former-swin-tiny-ade-semantic"
ADE_WEIGHTS = Weights(
    source=f"hf-hub:{HUB_ID}::pytorch_model.bin",
    license="MIT (official Mask2Former weights; the hub card says 'other')", dataset="ADE20K (150 classes)",
    target="m2f.model")
_BACKBONE = "pixel_level_module.encoder."
#: transformers 4 (hub checkpoints) -> transformers 5 names inside the Swin backbone, in the order applied
_SWIN_RENAMES = (
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise SegarenaError("model 'mask2former-swin-t' needs the optional package transformers",
                            fix="pip install segarena[transformers]") from None
    return transformers


def mask2former_config(num_classes: int, in_channels: int = 3) -> Any:
    """The Swin-T ADE20K semantic Mask2Former config, built locally, with ``num_classes`` classes."""
    tf = _transformers()
    backbone = tf.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                             drop_path_rate=0.3, image_size=224, num_channels=in_channels,
                             out_features=["stage1", "stage2", "stage3", "stage4"])
    return tf.Mask2FormerConfig(backbone_config=backbone, num_labels=num_classes, num_queries=100, hidden_dim=256,
                                feature_size=256, mask_feature_size=256, encoder_layers=6, decoder_layers=10,
                                dim_feedforward=2048, encoder_feedforward_dim=1024, num_attention_heads=8,
                                common_stride=4)


def convert_hf_mask2former(own_keys: set[str], in_channels: int = 3
                           ) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Converter from a hub ``Mask2FormerForUniversalSegmentation`` state dict onto ``.model`` of ours.

    Drops ``class_predictor.*`` (dataset-specific) and ``criterion.*``, strips ``model.``, and renames Swin keys
    from the transformers-4 layout of the hub files (``encoder.encoder.layers...attention.self.query``) to the
    installed layout (transformers 5: ``encoder.swin.encoder.layers...attention.q_proj``) where they differ; keys
    already in the installed layout pass through, so either transformers major version works."""

    def rename(key: str) -> str:
        if key in own_keys or not key.startswith(_BACKBONE):
            return key
        rest = key[len(_BACKBONE):]
        if rest.startswith(("embeddings.", "encoder.")):
            rest = "swin." + rest
        for old, new in _SWIN_RENAMES:
            if old in rest:
                rest = rest.replace(old, new)
                break
        new_key = _BACKBONE + rest
        return new_key if new_key in own_keys else key

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {rename(k[len("model."):]): v for k, v in state.items() if k.startswith("model.")}
        patch = next((k for k in own_keys if k.endswith("patch_embeddings.projection.weight")), "")
        return adapt_patch_embed(out, patch, in_channels)

    return convert


class Mask2FormerSemantic(nn.Module):
    """transformers' Mask2Former (Swin-T) with per-class semantic logits at 1/4 resolution."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        tf = _transformers()
        self.m2f = tf.Mask2FormerForUniversalSegmentation(mask2former_config(num_classes, in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.m2f(pixel_values=x)
        cls = out.class_queries_logits.softmax(dim=-1)[..., :-1]  # [N, Q, K], the null class dropped
        return torch.einsum("nqk,nqhw->nkhw", cls, out.masks_queries_logits)


@register_model(ModelCard(
    name="mask2former-swin-t", family="general", title="Mask2Former (Swin-T), per-class semantic logits",
    paper="Cheng et al., Masked-attention Mask Transformer for Universal Image Segmentation, CVPR 2022, "
          "arXiv:2112.01527",
    repo="https://github.com/facebookresearch/Mask2Former", license="MIT", params_paper_m=None, input_divisor=32,
    min_size=32, pretrained={"ade20k": ADE_WEIGHTS}, extra="transformers",
    gradcam_layer="m2f.model.pixel_level_module.decoder.mask_projection",
    notes="Hugging Face transformers implementation; trained with our per-pixel losses on semantic logits "
          "(class-probability-weighted sum of mask logits), not with the Hungarian set loss. "
          "Not in Borst & Kounev (2026).",
))
def build_mask2former_swin_t(num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> nn.Module:
    _transformers()  # a missing extra fails first, with the install hint
    # resolve the checkpoint before building, so a cache miss fails fast
    ckpt = resolve(ADE_WEIGHTS, pretrained if isinstance(pretrained, str) else None) if pretrained else None
    net = Mask2FormerSemantic(num_classes, in_channels)
    if ckpt is not None:
        own = set(net.m2f.model.state_dict())
        load_pretrained(net, ADE_WEIGHTS, convert_hf_mask2former(own, in_channels), local=ckpt)
    return net
