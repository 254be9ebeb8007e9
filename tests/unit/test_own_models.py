"""Your own model: the public register_model, a separate package through the `segarena.models` entry point, and
library models by name (smp:<Arch>:<encoder>, upernet:timm:<name>) with cards from the libraries' metadata."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import segarena
from segarena.cli import main
from segarena.models import MODELS, create_model

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
"""A lab's own model package, as it would be installed next to segarena."""
import torch.nn as nn
import segarena


class Net(nn.Module):
    def __init__(self, cin, k, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.ReLU())
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.head = nn.Conv2d(width, k, 1)

    def forward(self, x):
        return self.head(self.down(self.body(x)))  # logits at 1/2: the wrapper upsamples


@segarena.register_model(segarena.ModelCard(
    name="acme-net", family="medical", title="ACME lab net", paper="ACME et al. 2026", repo="https://acme.example",
    license="MIT", input_divisor=2, gradcam_layer="down", min_size=8))
def build(num_classes, in_channels=3, pretrained=False, width=8):
    return Net(in_channels, num_classes, width)
'''


def _plugin(root: Path, value: str = "acme_models") -> Path:
    """A throwaway installed distribution: the package plus a dist-info folder with its entry point."""
    (root / "acme_models").mkdir(parents=True)
    (root / "acme_models" / "__init__.py").write_text(PLUGIN)
    info = root / "acme_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[segarena.models]\nacme = {value}\n")
    return root


def _env(extra: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(extra), str(SRC)]), "HF_HUB_OFFLINE": "1",
            "SEGARENA_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_entry_point_model_is_listed(tmp_path):
    env = _env(_plugin(tmp_path / "site"))
    out = subprocess.run([sys.executable, "-m", "segarena", "models", "list", "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    acme = [m for m in json.loads(out.stdout) if m["name"] == "acme-net"]
    assert acme and acme[0]["origin"] == "plugin:acme" and acme[0]["title"] == "ACME lab net"
    text = subprocess.run([sys.executable, "-m", "segarena", "models", "list", "--family", "medical"], env=env,
                          capture_output=True, text=True, timeout=300).stdout
    assert "acme-net" in text and "plugin:acme" in text


@pytest.mark.slow
def test_entry_point_model_passes_the_contract_tests(tmp_path):
    env = _env(_plugin(tmp_path / "site"))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "contract" / "test_models.py"), "-k", "acme-net"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:]
    assert "2 passed" in out.stdout  # card complete + forward/backward on odd sizes, both for acme-net


def test_broken_plugin_is_a_warning_not_a_crash(tmp_path):
    env = _env(_plugin(tmp_path / "site", value="acme_models_missing"))
    out = subprocess.run([sys.executable, "-m", "segarena", "models", "list", "--family", "test"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "tiny-unet" in out.stdout
    assert "model plugin 'acme' (acme_models_missing) was not loaded" in out.stderr
    assert "Traceback" not in out.stderr


def test_models_list_imports_no_heavy_library(tmp_path):
    code = ("import sys, segarena.cli as c; c.main(['models', 'list']); "
            "print(sorted(m for m in ('segmentation_models_pytorch', 'timm', 'transformers', 'kornia', 'mlflow', "
            "'tensorboard', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_public_register_model_in_process():
    import torch.nn as nn

    assert segarena.register_model is segarena.models.register_model
    card = segarena.ModelCard(name="test-own-1x1", family="test", title="1x1 conv", paper="-", repo="-",
                              license="MIT", input_divisor=1, gradcam_layer="0", min_size=4)

    @segarena.register_model(card)
    def build(num_classes, in_channels=3, pretrained=False):
        return nn.Sequential(nn.Conv2d(in_channels, num_classes, 1))

    m = create_model("test-own-1x1", 2, in_channels=1)
    assert m(torch.zeros(1, 1, 5, 7)).shape == (1, 2, 5, 7)
    with pytest.raises(KeyError, match="registered twice"):
        segarena.register_model(card)(build)
    with pytest.raises(ValueError, match="reserved"):
        segarena.register_model(segarena.ModelCard(name="smp:x:y", family="test", title="", paper="", repo="",
                                                   license=""))


def test_smp_names_build_with_cards_from_smp_metadata():
    from segmentation_models_pytorch.encoders import encoders

    card = MODELS.get("smp:Unet:resnet18").card
    assert "arxiv.org/abs/1505.04597" in card.paper  # Ronneberger et al., from smp's Unet docstring
    assert card.family == "medical" and card.input_divisor == 32
    assert card.pretrained["imagenet"].source == \
        f"library:smp/{encoders['resnet18']['pretrained_settings']['imagenet']['repo_id']}"
    fpn = MODELS.get("smp:fpn:tu-resnet18").card  # architecture names are case-insensitive
    assert "1612.03144" in fpn.paper and fpn.family == "general"
    model = create_model("smp:DeepLabV3Plus:resnet18", 3, in_channels=1, encoder_depth=5)
    assert model(torch.randn(2, 1, 45, 61)).shape == (2, 3, 45, 61)


def test_upernet_timm_card_from_timm_metadata():
    import timm

    card = MODELS.get("upernet:timm:convnext_atto").card
    cfg = timm.models.get_pretrained_cfg("convnext_atto").to_dict()
    assert card.license == cfg["license"] and card.mean == tuple(cfg["mean"])
    assert card.pretrained["imagenet"].source == f"library:timm/{cfg['hf_hub_id']}"
    model = create_model("upernet:timm:convnext_atto", 2, in_channels=3, channels=32)
    model.train()
    assert model(torch.randn(2, 3, 64, 96)).shape == (2, 2, 64, 96)


@pytest.mark.parametrize("name,match", [
    ("smp:Unett:resnet18", "smp has no architecture 'Unett': did you mean Unet"),
    ("smp:Unet:resnet19", "smp has no encoder 'resnet19': did you mean resnet18"),
    ("smp:Unet", "expected smp:<Arch>:<encoder>"),
    ("upernet:timm:resnett18", "timm has no model 'resnett18'"),
    ("unett", "or by name: smp:<Arch>:<encoder>"),
])
def test_bad_library_names_are_one_line_errors(name, match, capsys):
    assert main(["config", "show", "--model", name]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
