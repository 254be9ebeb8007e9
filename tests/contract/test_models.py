"""The model contract, checked for every registered model: builds without weights, logits [N, K, H, W] at the
input size for odd sizes, finite gradients, complete card, Grad-CAM layer resolvable."""
from __future__ import annotations

import math

import pytest
import torch

from segarena.models import MODELS, create_model, list_models

# Models over ~55M parameters (measured with 1 output logit) or with a fixed internal size are marked slow: they
# still run in `make test`, and `pytest -m "not slow"` gives a quick loop. Cards carry no measured size, so the
# heavy ones without a paper count are listed here.
HEAVY = {"internimage-s-upernet", "internimage-b-upernet", "transnext-small-upernet", "upernet-convnext-t",
         "upernet-convnext-s", "upernet-swin-t", "upernet-swin-s", "nnunet-resenc", "dinov2-b-dpt", "dinov2-b-linear",
         "sam-vit-b", "transunet-r50-vit-b16", "segformer-b4", "segformer-b5"}
SLOW = {n for n, e in MODELS.items() if (e.card.params_paper_m or 0) > 55 or e.card.fixed_size or n in HEAVY}


def _extra_missing(name: str) -> str | None:
    """The optional extra a model needs, if its package is not installed (the model then cannot run here)."""
    import importlib.util

    extra = MODELS.get(name).card.extra
    module = {"transformers": "transformers", "xai": "pytorch_grad_cam"}.get(extra or "", extra)
    return extra if extra and importlib.util.find_spec(module) is None else None


#: names built on demand from smp / timm (``smp:<Arch>:<encoder>``, ``upernet:timm:<name>``): the contract too
BY_NAME = [ex for _, examples in MODELS.patterns() for ex in examples]


def _params() -> list:
    out = []
    for n in dict.fromkeys(list_models() + BY_NAME):
        marks = [pytest.mark.slow] if n in SLOW else []
        if _extra_missing(n):
            marks.append(pytest.mark.skip(reason=f"needs segarena[{_extra_missing(n)}]"))
        out.append(pytest.param(n, marks=marks))
    return out


@pytest.mark.parametrize("name", list(dict.fromkeys(list_models() + BY_NAME)))
def test_card_complete(name):
    card = MODELS.get(name).card
    assert card.name == name
    assert card.family in ("medical", "general", "foundation", "test")
    for field in ("title", "paper", "repo", "license", "gradcam_layer"):
        assert getattr(card, field), f"{name}: card field {field} is empty"
    for tag, w in card.pretrained.items():
        assert w.source and w.license, f"{name}: pretrained {tag} lacks source or license"
    assert card.input_divisor >= 1


@pytest.mark.parametrize("name", _params())
def test_forward_backward(name):
    """K = 3 logits with gradients at an odd size, then (no grad) 1 logit on a 1-channel input where supported."""
    torch.manual_seed(0)
    card = MODELS.get(name).card
    model = create_model(name, 3, in_channels=3)
    size = max(card.min_size, 64)
    x = torch.randn(2, 3, size + 3, size + 5)  # not a multiple of any divisor: the wrapper must cope
    y = model(x)
    assert y.shape == (2, 3, size + 3, size + 5)
    assert torch.isfinite(y).all()
    y.float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    model.net.get_submodule(card.gradcam_layer)  # the Grad-CAM layer named on the card exists
    del model, y, grads
    c = 1 if 1 in card.in_channels else 3
    binary = create_model(name, 1, in_channels=c).eval()
    with torch.no_grad():
        assert binary(torch.randn(1, c, size, size)).shape == (1, 1, size, size)


#: Parameter counts in millions as printed in Borst & Kounev, "Are General-Purpose Vision Models All We Need for
#: 2D Medical Image Segmentation? A Cross-Dataset Empirical Study", arXiv:2603.13044 (2026), table of the compared
#: architectures, as transcribed onto the model cards (a snapshot of the paper, kept here so the expected value does
#: not come from the card under test)
PAPER_PARAMS_M = {
    "unet": 31.0, "unet-vgg16": 31.0, "ukan-l": 25.0, "hiformer-b": 26.0, "missformer": 42.0, "swin-umamba": 60.0,
    "segformer-b3": 47.0, "segnext-l": 49.0, "vw-mit": 51.0, "vw-conv": 57.0, "internimage-t-upernet": 58.0,
    "transnext-tiny-upernet": 58.0,
}


def test_cards_print_the_papers_parameter_counts():
    printed = {n: MODELS.get(n).card.params_paper_m for n in list_models() if MODELS.get(n).card.params_paper_m}
    assert printed == PAPER_PARAMS_M


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_param_count_matches_paper(name):
    """Parameter counts (2 classes: one BCE logit) within 5% of Borst & Kounev's table."""
    model = create_model(name, 1, in_channels=3)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    want = PAPER_PARAMS_M[name]
    assert math.isclose(n, want, rel_tol=0.05), f"{name}: {n:.2f}M vs paper {want}M"


def test_unknown_model_suggests_close_names():
    from segarena import SegarenaError

    with pytest.raises(SegarenaError, match="segformer-b3"):
        create_model("segformer-b33", 1)


def test_wrong_channel_count_is_a_clear_error():
    from segarena import SegarenaError

    model = create_model("tiny-unet", 1, in_channels=3)
    with pytest.raises(SegarenaError, match="input channel"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_channels_last_gives_the_logits_and_gradients_of_the_contiguous_layout(name):
    """The paper preset trains in channels-last memory format (``protocol.channels_last``, applied by the loop's own
    functions): every model of the study runs forward and backward that way, with the contiguous layout's numbers
    up to rounding (no `.view` on a permuted tensor, no layout-dependent code)."""
    import copy

    from segarena.protocol.speed import as_input, memory_format

    torch.manual_seed(0)
    size = max(MODELS.get(name).card.min_size, 64)
    plain = create_model(name, 1, in_channels=3).eval()  # eval: no dropout / drop-path draws between the two
    last = memory_format(copy.deepcopy(plain), True)
    x = torch.randn(2, 3, size, size)
    y0, y1 = plain(x), last(as_input(x, True))
    scale = float(y0.detach().abs().max()) + 1e-6
    assert float((y0 - y1).detach().abs().max()) / scale < 1e-4
    y0.square().mean().backward()
    y1.square().mean().backward()
    pairs = [(k, p0.grad, p1.grad) for (k, p0), p1 in zip(plain.named_parameters(), last.parameters())]
    # per tensor, the relative L2 error: the two layouts sum in different orders, and an untrained network's large,
    # cancelling gradients (VWFormer's patch-embedding bias: 6e5 from terms of either sign) then differ by ~0.3%
    # element-wise on some CPUs; a layout bug (a `.view` of a permuted tensor) gives an error of order 1. Gradients
    # that are ~0 (a bias before a norm) are measured against the largest gradient norm instead of their own.
    big = max(float(g0.norm()) for _, g0, _ in pairs if g0 is not None)
    for k, g0, g1 in pairs:
        assert (g0 is None) == (g1 is None), k
        if g0 is not None:
            err = float((g0 - g1).norm()) / max(float(g0.norm()), 1e-3 * big)
            assert torch.isfinite(g1).all() and err < 1e-2, (k, err)
