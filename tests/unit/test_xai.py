"""Explainability: CAMs with a known answer, every registered model's CAM, the measures, and ``explain`` end to end."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from segarena import SegarenaError
from segarena.models import MODELS, ModelCard, SegModel, create_model, list_models
from segarena.xai import compute_cam, curve_auc, deletion_curve, energy_share, select_cases, summarize
from segarena.xai.cam import to_input_coords, token_grid
from segarena.xai.measures import bootstrap_mean_ci

METHODS = ["gradcam", "gradcam++", "hirescam"]


# ---- a model with a known answer ------------------------------------------------------------------------------
class SquareNet(nn.Module):
    """Logits of one channel depend only on the pixels of a known square (in the coordinates the net sees).

    Features at stride 4 pass through ``feat`` in the layout named by ``layout`` (like a transformer's tokens or a
    channels-last stage), so the card's reshape is exercised. Outside the square the explained logit is a
    constant -4 (background wins); inside it is a positive function of the square's pixels.
    """

    def __init__(self, square: tuple[int, int, int, int], layout: str | None, n_out: int, channel: int) -> None:
        super().__init__()
        self.square, self.layout, self.n_out, self.channel = square, layout, n_out, channel
        self.embed = nn.Conv2d(3, 4, 1)
        self.feat = nn.Identity()
        self.head = nn.Conv2d(4, 1, 1)
        with torch.no_grad():
            self.embed.weight.fill_(0.5)
            self.embed.bias.zero_()
            self.head.weight.fill_(1.0)
            self.head.bias.fill_(-2.0)  # a removed (zero) square scores low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = nn.functional.avg_pool2d(torch.relu(self.embed(x)), 4)  # [N, 4, h, w]
        n, c, h, w = f.shape
        if self.layout == "tokens":
            f = self.feat(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, c, h, w)
        elif self.layout == "nhwc":
            f = self.feat(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        else:
            f = self.feat(f)
        y0, y1, x0, x1 = (v // 4 for v in self.square)
        inside = torch.zeros(1, 1, h, w, dtype=torch.bool)
        inside[..., y0:y1, x0:x1] = True
        logit = torch.where(inside, self.head(f), torch.full_like(f[:, :1], -4.0))
        out = torch.zeros(n, self.n_out, h, w)
        out = out.index_copy(1, torch.tensor([self.channel]), logit)
        return out


def _square_model(layout=None, n_out=1, channel=0, square=(32, 64, 24, 56), fixed_size=None, divisor=32):
    card = ModelCard(name="square", family="test", title="t", paper="t", repo="t", license="t",
                     input_divisor=divisor, fixed_size=fixed_size, min_size=8, gradcam_layer="feat",
                     gradcam_reshape=layout)
    return SegModel(SquareNet(square, layout, n_out, channel), card, n_out, 3)


def _image(shape, square, noise_outside=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, *shape, generator=g) + 0.5
    if not noise_outside:
        keep = torch.zeros(shape, dtype=torch.bool)
        y0, y1, x0, x1 = square
        keep[y0:y1, x0:x1] = True
        x = x * keep
    return x


def _in_square(shape, square):
    m = np.zeros(shape, bool)
    y0, y1, x0, x1 = square
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", [None, "tokens", "nhwc"])
def test_cam_concentrates_on_the_known_square(method, layout):
    """Input 70x75 is padded to 96x96 by the wrapper: the CAM must still land on the square, not a stretched copy."""
    sq = (32, 64, 24, 56)
    model = _square_model(layout, square=sq)
    x = _image((70, 75), sq)
    res = compute_cam(model, x, 1, method)
    assert res.cam.shape == (1, 70, 75) and np.isfinite(res.cam).all()
    assert res.cam.max() == pytest.approx(1.0)
    ref = _in_square((70, 75), sq)
    assert res.region[0][ref].mean() > 0.9 and res.region[0][~ref].mean() < 0.05
    assert energy_share(res.cam[0], ref) > 0.9


@pytest.mark.parametrize("method", METHODS)
def test_softmax_model_explains_the_asked_class(method):
    sq = (8, 40, 16, 48)
    model = _square_model(n_out=3, channel=2, square=sq)
    x = _image((64, 64), sq)
    model.train()
    res = compute_cam(model, x, 2, method)
    assert model.training  # given back in the mode it came in
    assert energy_share(res.cam[0], _in_square((64, 64), sq)) > 0.9
    # class 1 is predicted nowhere: no target, an all-zero map, and the measure says NaN rather than a number
    empty = compute_cam(model, x, 1, method)
    assert not empty.region.any() and (empty.cam == 0).all()
    assert np.isnan(energy_share(empty.cam[0], _in_square((64, 64), sq)))


def test_fixed_size_model_maps_back_to_the_input():
    """The net runs at 64x64; the 96x128 input's square [48:72, 32:64] is the net's [32:48, 16:32]."""
    model = _square_model(square=(32, 48, 16, 32), fixed_size=64)
    sq_in = (48, 72, 32, 64)
    x = _image((96, 128), sq_in)
    res = compute_cam(model, x, 1, "gradcam")
    assert res.cam.shape == (1, 96, 128)
    assert energy_share(res.cam[0], _in_square((96, 128), sq_in)) > 0.85


def test_hirescam_localises_through_gradients_alone():
    """Features everywhere (noise over the whole image), but the logits read only the square: HiResCAM's
    element-wise gradient x activation must still point at the square."""
    sq = (32, 64, 24, 56)
    model = _square_model(square=sq)
    x = _image((70, 75), sq, noise_outside=True)
    res = compute_cam(model, x, 1, "hirescam")
    assert energy_share(res.cam[0], _in_square((70, 75), sq)) > 0.9


def test_deleting_salient_pixels_drops_the_score_faster_than_random():
    sq = (32, 64, 24, 56)
    model = _square_model(square=sq)
    x = _image((70, 75), sq)
    res = compute_cam(model, x, 1, "gradcam")
    curve = deletion_curve(model, x, res.cam[0], 1, res.region[0], steps=10)
    rand = deletion_curve(model, x, np.random.default_rng(0).random((70, 75)), 1, res.region[0], steps=10)
    assert curve.shape == (11,) and curve[0] == pytest.approx(rand[0]) and curve[0] > 0.9
    assert curve_auc(curve) < 0.5 * curve_auc(rand)
    # the inverse order (least salient first) is worse still than the map's order
    inverse = deletion_curve(model, x, -res.cam[0], 1, res.region[0], steps=10)
    assert curve_auc(inverse) > curve_auc(curve)


def test_blur_baseline_keeps_the_low_frequencies():
    """Blurred deletion removes detail, not brightness: this model reads only the square's mean, so deleting the
    square barely moves its score -- which is what distinguishes the two baselines."""
    from segarena.xai.measures import removal_baseline

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    b = removal_baseline(x, "blur")
    assert b.shape == x.shape and float(b.mean()) == pytest.approx(float(x.mean()), abs=1e-3)
    assert b.std() < 0.5 * x.std()
    sq = (32, 64, 24, 56)
    model = _square_model(square=sq)
    x = _image((70, 75), sq)
    res = compute_cam(model, x, 1, "gradcam")
    blur = deletion_curve(model, x, res.cam[0], 1, res.region[0], steps=10, baseline="blur")
    mean = deletion_curve(model, x, res.cam[0], 1, res.region[0], steps=10, baseline="mean")
    assert curve_auc(blur) > curve_auc(mean) + 0.3
    with pytest.raises(SegarenaError, match="baseline"):
        removal_baseline(x, "noise")


def test_deletion_of_an_empty_region_is_nan():
    model = _square_model()
    x = _image((64, 64), (32, 64, 24, 56))
    curve = deletion_curve(model, x, np.ones((64, 64)), 1, np.zeros((64, 64), bool), steps=4)
    assert curve.shape == (5,) and np.isnan(curve).all()


# ---- pieces ------------------------------------------------------------------------------------------------
def test_token_grid_infers_the_feature_grid():
    assert token_grid(16 * 18, 64, 72) == (16, 18, 0)  # stride 4
    assert token_grid(4 * 5 + 1, 56, 70) == (4, 5, 1)  # stride 14 with a class token
    assert token_grid(3 * 3, 67, 69) == (3, 3, 0)  # ceil(67/32) x ceil(69/32)
    h, w, skip = token_grid(7 * 11, 1000, 1571)  # no stride fits exactly: factor pair by aspect ratio
    assert (h, w, skip) == (7, 11, 0)


def test_to_input_coords_crops_padding_and_resizes_fixed():
    cam = torch.zeros(1, 4, 4)
    cam[0, 0, 0] = 1.0  # top-left feature cell of a 32x32 canvas
    # padded: the cell covers canvas pixels 0..7 (bilinear ramp to pixel 11); the crop keeps that scale
    padded = to_input_coords(cam, (20, 24), (32, 32), fixed=False)
    assert padded.shape == (1, 20, 24) and padded[0, 0, 0] == 1
    assert padded[0, 11, 0] > 0 and padded[0, 12:].sum() == 0 and padded[0, :, 12:].sum() == 0
    # fixed size: the canvas is the whole input resized, so the cell covers a quarter of each side
    fixed = to_input_coords(cam, (20, 24), (32, 32), fixed=True)
    assert fixed.shape == (1, 20, 24) and fixed[0, 0, 0] == 1
    assert fixed[0, 6, 0] > 0 and fixed[0, 7:].sum() == 0 and fixed[0, :, 9:].sum() == 0


def test_energy_share_and_auc_values():
    cam = np.array([[1.0, 3.0], [0.0, 0.0]])
    assert energy_share(cam, np.array([[False, True], [False, False]])) == pytest.approx(0.75)
    assert np.isnan(energy_share(np.zeros((2, 2)), np.ones((2, 2), bool)))
    assert curve_auc([1.0, 0.0]) == pytest.approx(0.5)
    assert curve_auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert curve_auc([1.0, 0.5, 0.0, 0.0, 0.0]) == pytest.approx((0.75 + 0.25) / 4)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    from scipy import stats as sps

    v = np.random.default_rng(1).normal(0.6, 0.1, 40)
    a = bootstrap_mean_ci(v, seed=3)
    assert a["mean"] == pytest.approx(float(np.mean(v)), abs=1e-12) and a["n"] == 40
    # independent references: scipy's percentile bootstrap (its own resampling, 20,000 resamples) and, for 40
    # normal values, the t interval; a 2,000-resample bootstrap agrees with both to Monte-Carlo error (~0.002)
    ref = sps.bootstrap((v,), np.mean, confidence_level=0.95, n_resamples=20_000, method="percentile",
                        random_state=np.random.default_rng(0)).confidence_interval
    assert a["ci_low"] == pytest.approx(ref.low, abs=0.004) and a["ci_high"] == pytest.approx(ref.high, abs=0.004)
    half = sps.t.ppf(0.975, 39) * v.std(ddof=1) / np.sqrt(40)
    assert a["ci_low"] == pytest.approx(v.mean() - half, abs=0.006)
    assert a["ci_high"] == pytest.approx(v.mean() + half, abs=0.006)
    assert bootstrap_mean_ci(v, seed=3) == a and bootstrap_mean_ci(v, seed=4) != a  # seeded, and the seed matters
    c = bootstrap_mean_ci([np.nan, 0.5, np.nan])
    assert c["n"] == 1 and c["mean"] == c["ci_low"] == 0.5
    df = pd.DataFrame({"model": ["a"] * 40 + ["b"] * 2, "method": "gradcam", "class_name": "polyp",
                       "energy_share": list(v) + [np.nan, 0.1], "deletion_auc": 0.2, "deletion_auc_random": 0.4})
    s = summarize(df).set_index("model")
    assert s.loc["a", "energy_share"] == pytest.approx(v.mean()) and s.loc["b", "energy_share_n"] == 1
    assert s.loc["a", "cases"] == 40


def test_select_cases():
    dice = pd.Series([0.9, 0.1, 0.5, 0.1], index=["a", "b", "c", "d"])
    assert select_cases("worst:3", dice) == ["b", "d", "c"]
    assert select_cases("best:2", dice) == ["a", "c"]
    assert select_cases("best:4", dice) == ["a", "c", "b", "d"]  # ties keep the records' order
    assert select_cases("worst:99", dice) == ["b", "d", "c", "a"]
    assert select_cases("all", dice) == ["a", "b", "c", "d"]
    assert select_cases("c, a", dice) == ["c", "a"]
    for bad in ("worst:0", "worst:x", "zzz", ""):
        with pytest.raises(SegarenaError):
            select_cases(bad, dice)


def test_errors_are_clear(monkeypatch):
    model = _square_model()
    x = _image((64, 64), (32, 64, 24, 56))
    with pytest.raises(SegarenaError, match="unknown explanation method"):
        compute_cam(model, x, 1, "lime")
    with pytest.raises(SegarenaError, match="foreground class 1"):
        compute_cam(model, x, 0, "gradcam")
    bad = SegModel(model.net, ModelCard(name="b", family="test", title="t", paper="t", repo="t", license="t",
                                        gradcam_layer="nope", min_size=8), 1, 3)
    with pytest.raises(SegarenaError, match="gradcam_layer 'nope'"):
        compute_cam(bad, x, 1)
    tokens_undeclared = _square_model("tokens")
    tokens_undeclared.card = ModelCard(name="t", family="test", title="t", paper="t", repo="t", license="t",
                                       gradcam_layer="feat", min_size=8)
    with pytest.raises(SegarenaError, match="gradcam_reshape"):
        compute_cam(tokens_undeclared, x, 1)
    import sys

    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    with pytest.raises(SegarenaError, match=r"segarena\[xai\]"):
        compute_cam(model, x, 1)


# ---- every registered model --------------------------------------------------------------------------------
# One CAM per registered model is a whole-zoo sweep: it runs in the slow tier (`make test-slow`, run by CI), except
# for the test models, which keep the sweep's code path in the fast tier.
SLOW = {n for n, e in MODELS.items() if e.card.family != "test"}


def _models() -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_models()]


@pytest.mark.parametrize("name", _models())
def test_every_model_gives_a_finite_cam_of_the_input_shape(name):
    torch.manual_seed(0)
    card = MODELS.get(name).card
    model = create_model(name, 3, in_channels=3).eval()
    size = max(card.min_size, 64)
    x = torch.randn(1, 3, size + 3, size + 5)
    with torch.no_grad():
        cls = int(torch.bincount(model(x).argmax(1).flatten(), minlength=3).argmax())  # a class with a region
    res = compute_cam(model, x, cls, "gradcam")
    assert res.cam.shape == (1, size + 3, size + 5)
    assert np.isfinite(res.cam).all() and res.cam.min() >= 0 and res.cam.max() <= 1
    assert res.region.any()
    assert all(p.grad is None for p in model.parameters())  # nothing left behind for a later training step


# ---- explain end to end on a real run ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realdata
def test_explain_end_to_end(real_data_root, tmp_path):
    from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
    from segarena.cli import main
    from segarena.protocol import run
    from segarena.xai import explain

    spec = RunSpec(data=DataConfig(name="kvasir-seg", root=str(real_data_root), limit=30),
                   model=ModelConfig(name="tiny-unet"),
                   protocol=ProtocolConfig(input_size=48, epochs=3, batch_size=4, augmentation="none", amp=False,
                                           lr=1e-2, patience=None))  # 12 steps: enough for maps with content
    d = run(spec, tmp_path).store.dir
    test_ids = json.loads((d / "split.json").read_text())["test"]

    df = explain(d, cases="worst:3", method="gradcam", steps=5)
    assert len(df) == 3 and set(df["case_id"]) <= set(test_ids)
    rec = pd.read_parquet(d / "records.parquet")
    worst = rec.groupby("case_id")["dice"].mean().reindex(test_ids).sort_values(kind="stable").index[:3]
    assert list(df["case_id"]) == list(worst)
    assert df["dice"].tolist() == pytest.approx(rec.set_index("case_id").loc[list(worst), "dice"].tolist())
    ok = ~df["pred_empty"]
    assert df.loc[ok, ["energy_share", "deletion_auc", "deletion_auc_random"]].map(np.isfinite).all().all()
    assert df.loc[~ok, "deletion_auc"].isna().all()
    assert ok.any() and df["energy_share"].notna().any()
    # even a barely trained model needs the pixels its maps rank first more than random ones
    assert df["deletion_auc"].mean() < df["deletion_auc_random"].mean()
    assert df["energy_share"].dropna().between(0, 1).all()
    pngs = sorted((d / "xai").glob("gradcam_worst*.png"))
    assert len(pngs) == 3
    from PIL import Image

    with Image.open(pngs[0]) as im:
        assert im.size == (48 * 3 + 8, 48)

    # a second method adds its rows to measures.parquet; the same method and case replaces them
    explain(d, cases="best:2", method="hirescam", steps=5, random_order=False)
    explain(d, cases=test_ids[0], method="hirescam", steps=5, random_order=False)
    stored = pd.read_parquet(d / "xai" / "measures.parquet")
    assert stored.groupby("method").size().to_dict()["gradcam"] == 3
    assert not stored.duplicated(["method", "case_id", "class_id"]).any()

    assert main(["explain", str(d), "--cases", test_ids[1], "--method", "gradcam++", "--out",
                 str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "measures.parquet").is_file()
    assert main(["explain", str(d), "--cases", "worst:0"]) == 2
    assert main(["explain", str(tmp_path / "nope")]) == 2
