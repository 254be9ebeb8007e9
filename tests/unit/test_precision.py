"""One device picker and one mixed-precision rule (segarena.protocol.precision) for every place a model runs."""
from __future__ import annotations

import pytest
import torch

from segarena._errors import ConfigError
from segarena.models import MODELS
from segarena.models.card import ModelCard
from segarena.protocol.precision import autocast, pick_device, predict_logits, use_amp

CUDA = torch.device("cuda")  # a device object needs no GPU; nothing below runs on it


def _card(**kw) -> ModelCard:
    return ModelCard(name="p", family="test", title="t", paper="t", repo="t", license="t", **kw)


def test_amp_only_when_asked_on_cuda_and_the_card_allows_it():
    amp, fp32 = _card(), _card(precision="fp32")
    assert use_amp(True, CUDA, amp) is True
    assert use_amp(True, CUDA, fp32) is False  # the typed card field, not a word in the notes
    assert use_amp(False, CUDA, amp) is False
    assert use_amp(True, torch.device("cpu"), amp) is False
    assert MODELS.get("segnext-t").card.precision == "fp32" and MODELS.get("unet").card.precision == "amp"


def test_a_card_with_an_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision='bf16'"):
        _card(precision="bf16")


def test_autocast_off_is_a_no_op_and_on_casts():
    lin = torch.nn.Linear(4, 4)
    x = torch.ones(2, 4)
    with autocast(torch.device("cpu"), False):
        assert lin(x).dtype == torch.float32
    with autocast(torch.device("cpu"), True):
        assert lin(x).dtype == torch.bfloat16
    assert predict_logits(lin, x, torch.device("cpu"), True).dtype == torch.float32  # logits come back float32
    assert not lin.training


def test_device_picker_refuses_what_this_machine_lacks():
    assert pick_device(None).type in ("cpu", "cuda") and pick_device("auto") == pick_device("")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="is not a device"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")
