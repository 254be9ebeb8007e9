"""Augmentation presets (kornia, on the device): image and mask stay aligned, labels stay labels, seeded,
recorded in the run's identity; normalization exact."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from segarena._augment_presets import PRESETS, Op, preset_identity
from segarena.config import ProtocolConfig, RunSpec, identity_dict
from segarena.data.augment import AUGMENTATIONS, augment, normalize, normalize_unit, pipeline, to_unit

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _pattern(n=8, s=48, channels=3):
    """A synthetic known pattern: two labelled blocks; the image is 0.2 on background, 0.8 on the blocks."""
    mask = torch.zeros(n, s, s, dtype=torch.long)
    mask[:, 8:22, 10:30] = 1
    mask[:, 28:40, 6:16] = 2
    img = torch.full((n, channels, s, s), 0.2)
    img[mask[:, None].expand_as(img) > 0] = 0.8
    return img, mask


def test_normalize_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8, generator=g)
    ref = (img.permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(normalize(img, MEAN, STD), ref, atol=1e-6)
    assert torch.allclose(normalize_unit(to_unit(img), MEAN, STD), ref, atol=1e-5)
    grey = normalize(img[..., :1], MEAN, STD)
    assert grey.shape == (6, 1, 32, 32)
    assert torch.allclose(normalize_unit(to_unit(img[..., :1]), MEAN, STD), grey, atol=1e-5)


def _custom(*ops: Op):
    return dataclasses.replace(PRESETS["light"], name=f"test-{id(ops)}", ops=ops)


def test_known_answer_rotation_by_180_degrees_is_a_double_flip(monkeypatch):
    """Rotating by exactly 180° about the centre maps pixel centres onto pixel centres: image and mask must
    both equal their double flip, pixel for pixel."""
    img, mask = _pattern()
    preset = _custom(Op("rotate", 1.0, (("degrees", (180.0, 180.0)),)))
    monkeypatch.setitem(AUGMENTATIONS._entries, preset.name, preset)
    xa, ma = augment(img, mask, preset, torch.Generator().manual_seed(0))
    assert torch.equal(ma, mask.flip(-1, -2))
    assert torch.allclose(xa, img.flip(-1, -2), atol=1e-5)


def test_known_answer_zoom_by_two_keeps_the_centre(monkeypatch):
    """Scale 2 about the centre: output pixel (i, j) shows input (c + (i - c) / 2): the block edges move
    outward to known places."""
    s = 48
    mask = torch.zeros(1, s, s, dtype=torch.long)
    mask[:, 16:32, 16:32] = 1  # centred block of side 16 -> side 32 after zoom x2
    img = mask[:, None].float() * 0.6 + 0.2
    preset = _custom(Op("scale", 1.0, (("scale", (2.0, 2.0)),)))
    monkeypatch.setitem(AUGMENTATIONS._entries, preset.name, preset)
    xa, ma = augment(img, mask, preset, torch.Generator().manual_seed(0))
    want = torch.zeros_like(mask)
    want[:, 8:40, 8:40] = 1
    assert torch.equal(ma, want)
    assert ((xa[:, 0] > 0.5).long() == want).float().mean() > 0.99


@pytest.mark.parametrize("preset", ["none", "light", "paper", "nnunet"])
@pytest.mark.parametrize("channels", [1, 3])
def test_each_preset_keeps_image_and_mask_aligned(preset, channels):
    img, mask = _pattern(n=16, channels=channels)
    xa, ma = augment(img, mask, AUGMENTATIONS.get(preset), torch.Generator().manual_seed(3))
    assert xa.shape == img.shape and ma.shape == mask.shape and ma.dtype == torch.long
    assert set(ma.unique().tolist()) <= {0, 1, 2} and torch.isfinite(xa).all()
    assert xa.min() >= 0 and xa.max() <= 1
    checked = 0
    for i in range(len(xa)):
        fg, lum = ma[i] > 0, xa[i].mean(0)
        if fg.sum() < 20 or (~fg).sum() < 20:
            continue
        hi, lo = lum[fg].mean(), lum[~fg].mean()
        assert hi > lo, f"sample {i}: blocks are not brighter where the mask says so"
        agree = ((lum > (hi + lo) / 2) == fg).float().mean()
        assert agree > 0.9, f"{preset} sample {i}: image and mask agree on only {agree:.2f} of the pixels"
        checked += 1
    assert checked >= 8


def test_misalignment_would_be_caught():
    """The alignment check above is not vacuous: a mask left unflipped while the image flips fails it."""
    img, mask = _pattern(n=1)
    lum, fg = img[0].flip(-1).mean(0), mask[0] > 0
    hi, lo = lum[fg].mean(), lum[~fg].mean()
    assert ((lum > (hi + lo) / 2) == fg).float().mean() < 0.9


@pytest.mark.parametrize("preset", ["light", "paper", "nnunet"])
def test_seeded_varied_and_global_rng_untouched(preset):
    img, mask = _pattern()
    p = AUGMENTATIONS.get(preset)
    state = torch.get_rng_state()
    a = augment(img, mask, p, torch.Generator().manual_seed(5))
    b = augment(img, mask, p, torch.Generator().manual_seed(5))
    c = augment(img, mask, p, torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)  # model init / dropout streams are not shifted
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_light_flips_are_flips():
    img, mask = _pattern(n=32)
    xa, ma = augment(img, mask, AUGMENTATIONS.get("light"), torch.Generator().manual_seed(0))
    kinds = set()
    for i in range(32):
        for k, dims in enumerate(((), (-1,), (-2,), (-1, -2))):
            if torch.equal(mask[i].flip(dims) if dims else mask[i], ma[i]):
                assert torch.equal(img[i].flip(dims) if dims else img[i], xa[i])
                kinds.add(k)
                break
        else:
            raise AssertionError(f"sample {i} is not a flip of its mask")
    assert len(kinds) >= 3


def test_paper_preset_follows_the_published_pipeline():
    p = PRESETS["paper"]
    ops = {o.kind: dict(o.params) | {"p": o.p} for o in p.ops}
    assert ops["blur"]["kernel_size"] == 25 and ops["blur"]["sigma"] == (0.001, 2.0)
    assert ops["affine"] == {"degrees": 180.0, "translate": 0.25, "scale": (0.75, 1.25), "shear": 17.5, "p": 0.5}
    assert ops["color"] == {"brightness": (0.875, 1.125), "contrast": (0.5, 1.5), "saturation": (0.5, 1.5),
                            "hue": (-0.05, 0.05), "p": 0.5}
    assert ops["hflip"]["p"] == ops["vflip"]["p"] == 0.5
    assert any("inferred" in n for n in p.notes)
    assert len(pipeline("paper", 1)) == len(pipeline("paper", 3)) == 5
    nn = {o.kind for o in PRESETS["nnunet"].ops}
    assert {"gamma", "noise", "blur", "lowres", "hflip", "vflip", "rotate", "scale"} <= nn


def test_preset_parameters_are_part_of_the_run_identity(monkeypatch):
    spec = RunSpec(protocol=ProtocolConfig(augmentation="paper"))
    ident = identity_dict(spec)
    assert ident["protocol"]["augmentation_pipeline"] == preset_identity("paper")
    assert "augmentation_pipeline" not in identity_dict(RunSpec(protocol=ProtocolConfig(augmentation="none")))["protocol"]
    before = spec.run_id
    changed = dataclasses.replace(PRESETS["paper"], ops=PRESETS["paper"].ops[1:])
    monkeypatch.setitem(PRESETS, "paper", changed)
    assert spec.run_id != before  # a preset whose operations change gives new run ids


def test_gpu_batch_matches_cpu_shapes():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    img, mask = _pattern()
    xa, ma = augment(img.cuda(), mask.cuda(), AUGMENTATIONS.get("paper"), torch.Generator().manual_seed(0))
    assert xa.device.type == "cuda" and ma.device.type == "cuda" and np.isfinite(xa.cpu().numpy()).all()


@pytest.mark.slow
def test_every_model_of_a_study_sees_the_same_augmented_batches(tmp_path, monkeypatch):
    """Two different models, same protocol seed: the augmented masks of every training step are identical, and
    each run records the same pipeline in augmentation.json."""
    import json

    from PIL import Image

    import segarena.protocol.loop as loop
    from segarena import DataConfig, ModelConfig
    from segarena.protocol import run

    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for i in range(12):  # 3 folds: 4 training cases = 2 batches of 2 per epoch
        m = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(2, 18, 2)
        m[y:y + 10, x:x + 12] = 255
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "d" / "images" / f"{i}.png")
        Image.fromarray(m).save(tmp_path / "d" / "masks" / f"{i}.png")
    seen: list[bytes] = []
    real = loop.augment

    def spy(x, y, preset, gen):
        xa, ya = real(x, y, preset, gen)
        seen.append(ya.numpy().tobytes())
        return xa, ya

    monkeypatch.setattr(loop, "augment", spy)
    streams, records = [], []
    for model in ("tiny-fcn", "tiny-unet"):
        seen.clear()
        spec = RunSpec(data=DataConfig(name="folder", num_folds=3, options={"path": str(tmp_path / "d")}),
                       model=ModelConfig(name=model),
                       protocol=ProtocolConfig(input_size=32, epochs=2, batch_size=2, max_steps_per_epoch=2,
                                               augmentation="paper", amp=False, patience=None, seed=7))
        store = run(spec, tmp_path / "r", device="cpu").store
        streams.append(list(seen))
        records.append(json.loads((store.dir / "augmentation.json").read_text()))
    assert len(streams[0]) == 4 and streams[0] == streams[1]
    assert records[0] == records[1] and records[0]["name"] == "paper" and records[0]["seed"] == 7
    assert records[0]["ops"] == preset_identity("paper")["ops"]
