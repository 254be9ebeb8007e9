"""The model contract refuses what it cannot fix, with the shape to use (as segmentation_models_pytorch does)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from segarena._errors import ConfigError
from segarena.models import create_model
from segarena.models.card import ModelCard
from segarena.models.contract import SegModel

CARD = ModelCard(name="probe", family="test", title="t", paper="t", repo="t", license="t", input_divisor=8,
                 min_size=8)


def _wrapped(out_channels: int, num_classes: int) -> SegModel:
    return SegModel(nn.Conv2d(3, out_channels, 1), CARD, num_classes, 3)


def test_wrong_class_count_raises_with_the_shape_to_use():
    model = _wrapped(out_channels=3, num_classes=2)
    with pytest.raises(ConfigError) as err:
        model(torch.zeros(2, 3, 16, 16))
    assert "returned 3 output channel(s)" in str(err.value) and "(2, 3, 16, 16)" in str(err.value)
    assert "[2, 2, 16, 16]" in err.value.fix


def test_a_registered_model_whose_head_disagrees_is_refused():
    """A real zoo model built for 4 logits, then told it makes 2: the contract sees the head, not the promise."""
    net = create_model("tiny-unet", num_classes=4, in_channels=3).net
    with pytest.raises(ConfigError, match="returned 4 output channel"):
        SegModel(net, CARD, 2, 3)(torch.zeros(1, 3, 32, 32))


def test_non_tensor_or_wrong_rank_output_raises():
    class Flat(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    with pytest.raises(ConfigError, match=r"not logits \[N, K, H, W\]"):
        SegModel(Flat(), CARD, 3, 3)(torch.zeros(1, 3, 16, 16))


def test_right_count_passes_and_documented_padding_crops_back():
    model = _wrapped(out_channels=2, num_classes=2)
    assert model(torch.zeros(1, 3, 13, 21)).shape == (1, 2, 13, 21)  # padded to 16x24 (divisor 8), cropped back
    one = _wrapped(out_channels=1, num_classes=1)  # sigmoid binary: one logit
    assert one(torch.zeros(1, 3, 16, 16)).shape == (1, 1, 16, 16)
