"""Augmentation presets: image and mask move together, labels stay labels, seeded, normalization exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segarena.data.augment import AUGMENTATIONS, augment, normalize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _batch(n=6, s=32):
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (n, s, s, 3), dtype=torch.uint8, generator=g)
    mask = torch.zeros(n, s, s, dtype=torch.long)
    mask[:, 4:12, 6:20] = 1
    mask[:, 20:28, 2:9] = 2
    img[..., 0] = (mask * 100).to(torch.uint8)  # red channel encodes the mask: geometry must agree
    return img, mask


def test_normalize_matches_the_textbook_formula():
    img, _ = _batch()
    ref = (img.permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(normalize(img, MEAN, STD), ref, atol=1e-6)
    grey = normalize(img[..., :1], MEAN, STD)
    assert grey.shape == (6, 1, 32, 32)


@pytest.mark.parametrize("preset", ["none", "light", "paper"])
def test_image_and_mask_move_together(preset):
    img, mask = _batch()
    x = normalize(img, MEAN, STD)
    xa, ma = augment(x, mask, AUGMENTATIONS.get(preset), torch.Generator().manual_seed(0))
    assert xa.shape == x.shape and ma.shape == mask.shape and ma.dtype == torch.long
    assert set(ma.unique().tolist()) <= {0, 1, 2}
    # undo the normalization of the red channel: where the mask says class k, red is about 100*k
    red = xa[:, 0] * STD[0] + MEAN[0]
    inside = ma > 0
    if preset != "paper":  # flips are exact
        assert torch.allclose(red[inside] * 255, ma[inside].float() * 100, atol=1e-3)
    else:  # bilinear image vs nearest mask, plus brightness/contrast: agree away from edges on most pixels
        agree = ((red[inside] * 255 / 100).round() == ma[inside].float()).float().mean()
        assert agree > 0.6


def test_seeded_and_varied():
    img, mask = _batch()
    x = normalize(img, MEAN, STD)
    p = AUGMENTATIONS.get("paper")
    a = augment(x, mask, p, torch.Generator().manual_seed(5))
    b = augment(x, mask, p, torch.Generator().manual_seed(5))
    c = augment(x, mask, p, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_light_flips_are_flips():
    img, mask = _batch(n=32)
    x = normalize(img, MEAN, STD)
    xa, ma = augment(x, mask, AUGMENTATIONS.get("light"), torch.Generator().manual_seed(0))
    kinds = set()
    for i in range(32):
        for k, (fx, fy) in enumerate(((False, False), (True, False), (False, True), (True, True))):
            m = mask[i]
            m = m.flip(-1) if fx else m
            m = m.flip(-2) if fy else m
            if torch.equal(m, ma[i]):
                kinds.add(k)
                break
        else:
            raise AssertionError(f"sample {i} is not a flip of its mask")
    assert len(kinds) >= 3  # all flip kinds occur over 32 samples
    assert np.isfinite(xa.numpy()).all()
