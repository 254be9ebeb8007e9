"""Input normalization belongs to the weights in use (timm and smp keep it per pretrained tag), not to the card."""
from __future__ import annotations

import pytest

from segarena.models import MODELS
from segarena.models.card import ModelCard, Weights

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _card(**weights) -> ModelCard:
    return ModelCard(name="n", family="test", title="t", paper="t", repo="t", license="t",
                     pretrained={k: Weights(source="x", license="y", **v) for k, v in weights.items()})


def test_the_selected_weights_decide_and_from_scratch_uses_the_card():
    card = _card(imagenet={}, clip={"mean": (0.48, 0.46, 0.41), "std": (0.27, 0.26, 0.28)})
    assert card.normalization(False) == IMAGENET
    assert card.normalization(True) == IMAGENET  # the default tag states nothing: the card's
    assert card.normalization("clip") == ((0.48, 0.46, 0.41), (0.27, 0.26, 0.28))
    assert card.normalization("/my/checkpoint.pt") == IMAGENET  # a local file: none of the card's weights


def test_timm_backbones_by_name_take_timms_pretrained_config():
    """The reference is timm's own pretrained config (Inception-v3 normalizes to [-1, 1], not ImageNet's)."""
    timm = pytest.importorskip("timm")
    pytest.importorskip("segmentation_models_pytorch")
    cfg = timm.models.get_pretrained_cfg("inception_v3").to_dict()
    card = MODELS.get("smp:Unet:tu-inception_v3").card
    assert card.normalization(True) == (tuple(cfg["mean"]), tuple(cfg["std"])) != IMAGENET
    assert card.weights_for(True).mean == tuple(cfg["mean"])  # stated on the weights, not only on the card


def test_smp_encoder_tags_that_state_nothing_use_imagenet():
    pytest.importorskip("segmentation_models_pytorch")
    from segmentation_models_pytorch.encoders import encoders

    card = MODELS.get("smp:Unet:resnet34").card
    for tag, st in encoders["resnet34"]["pretrained_settings"].items():
        want = (tuple(st["mean"]), tuple(st["std"])) if "mean" in st else IMAGENET
        assert card.normalization(tag) == want


def test_transunet_vit_weights_normalize_to_minus_one_one_as_before():
    card = MODELS.get("transunet-r50-vit-b16").card
    assert card.normalization(True) == card.normalization(False) == ((0.5,) * 3, (0.5,) * 3)
