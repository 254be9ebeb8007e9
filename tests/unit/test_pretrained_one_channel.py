"""1-channel input with the 3-channel (RGB) checkpoints of the paper's pretrained models: each checkpoint is written
locally in its release's key layout (MiT: NVlabs ``mit_bX.pth`` keys + ImageNet head; VGG-16-BN: torchvision's
``features.N`` keys without BatchNorm step counters), loaded into a 1-channel model, and checked two ways: every
encoder tensor but the first conv is the checkpoint's, and a grey image gives the same logits as the 3-channel
model fed that image as R=G=B (what summing the RGB kernels must give). Together with the 1-channel tests of the
zoo files (hiformer-s, segnext-t, vw-conv, transnext-micro, dinov2, transunet, unetplusplus) every pretrained model
of the paper's study is covered."""
from __future__ import annotations

import pytest
import torch

from segarena.models import create_model


def _random_like(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {k: (torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() else v.clone())
           for k, v in state.items()}
    for k in out:
        if k.endswith("running_var"):
            out[k] = out[k].abs() + 0.5
    return out


def _mit_release(name: str, width: int) -> tuple[dict[str, torch.Tensor], str]:
    import segmentation_models_pytorch as smp

    enc = smp.encoders.get_encoder(f"mit_{name}", in_channels=3, depth=5, weights=None).state_dict()
    state = _random_like(enc)
    state["head.weight"], state["head.bias"] = torch.randn(1000, width), torch.randn(1000)
    return state, "patch_embed1.proj.weight"


def _vgg16_bn_release() -> tuple[dict[str, torch.Tensor], str]:
    import torchvision

    sd = torchvision.models.vgg16_bn(weights=None).state_dict()
    return _random_like({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}), "features.0.weight"


def _mit_b1_for_missformer() -> tuple[dict[str, torch.Tensor], str]:
    from segarena.models.zoo.missformer import MIT_NEW, MISSFormer

    enc = MISSFormer(3, 2).backbone.state_dict()
    state = _random_like({k: v for k, v in enc.items() if not k.startswith(MIT_NEW)})
    state["head.weight"], state["head.bias"] = torch.randn(1000, 512), torch.randn(1000)
    return state, "patch_embed1.proj.weight"


def _internimage_t_release() -> tuple[dict[str, torch.Tensor], str]:
    from test_zoo_internimage_transnext import _to_official_internimage  # the inverse converter, written there

    from segarena.models.zoo import internimage as ii

    ours = _random_like(ii._build("t", 1, 3, False).encoder.state_dict())
    state = {k: v for k, v in _to_official_internimage(ours).items() if "gamma" not in k}  # T: no layer scale
    state.update({"head.weight": torch.randn(1000, 768), "head.bias": torch.randn(1000)})
    return state, "patch_embed.conv1.weight"


def _transnext_tiny_release() -> tuple[dict[str, torch.Tensor], str]:
    from test_zoo_internimage_transnext import _to_official_transnext

    from segarena.models.zoo import transnext as tn

    state = _to_official_transnext(_random_like(tn._build("tiny", 1, 3, False).encoder.state_dict()))
    state.update({"head.weight": torch.randn(1000, 576), "head.bias": torch.randn(1000)})
    return state, "patch_embed1.proj.weight"


def _vmamba_tiny_release() -> tuple[dict[str, torch.Tensor], str]:
    from test_zoo_medical_cnn_mamba import _official_vmamba_state

    from segarena.models.zoo import swin_umamba

    state = _official_vmamba_state(swin_umamba.build_swin_umamba(1, in_channels=3))
    return {k: v * 0.05 for k, v in state.items()}, "patch_embed.proj.weight"


def _mscan_l_release() -> tuple[dict[str, torch.Tensor], str]:
    from segarena.models import create_model as build

    state = _random_like(build("segnext-l", 1).net.backbone.state_dict())
    state.update({"head.weight": torch.randn(1000, 512), "head.bias": torch.randn(1000)})
    return state, "patch_embed1.proj.0.weight"


#: models whose converter renames keys: the first conv is checked through the grey-image equivalence only
RENAMED = {"internimage-t-upernet", "transnext-tiny-upernet", "swin-umamba"}

CASES = {  # model -> (checkpoint writer, submodule the checkpoint fills)
    "segformer-b3": (lambda: _mit_release("b3", 512), "net.encoder"),
    "unet-vgg16": (_vgg16_bn_release, "net.encoder"),
    "vw-mit": (lambda: _mit_release("b3", 512), "net.backbone.encoder"),
    "missformer": (_mit_b1_for_missformer, "net.backbone"),
    "segnext-l": (_mscan_l_release, "net.backbone"),
    "internimage-t-upernet": (_internimage_t_release, "net.encoder"),
    "transnext-tiny-upernet": (_transnext_tiny_release, "net.encoder"),
    "swin-umamba": (_vmamba_tiny_release, "net.vssm_encoder"),
}


def _grey_equivalence(name: str, path: str, where: str, size: int = 64) -> None:
    torch.manual_seed(0)
    rgb = create_model(name, 1, in_channels=3, pretrained=path).eval()
    grey = create_model(name, 1, in_channels=1, pretrained=path).eval()
    own = grey.state_dict()
    # the parts the checkpoint does not fill (decoders; Swin-UMamba's stem on the raw image) are initialised at
    # random: give both the same ones (input-facing random kernels summed over RGB, like the loaded first conv)
    same = {}
    for k, v in rgb.state_dict().items():
        if own[k].shape == v.shape:
            same[k] = v
        elif k.startswith(where + "."):
            same[k] = own[k]  # the pretrained first conv under test: as loaded
        else:
            same[k] = v.sum(1, keepdim=True)
    grey.load_state_dict(same)
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "segformer-b3" else pytest.mark.slow)
                                  for n in CASES])
def test_one_channel_input_with_an_rgb_checkpoint(tmp_path, name):
    writer, where = CASES[name]
    state, first = writer()
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    if name in RENAMED:  # official names differ from ours: the equivalence below checks the loaded first conv
        _grey_equivalence(name, str(path), where)
        return
    grey = create_model(name, 1, in_channels=1, pretrained=str(path))
    loaded = grey.get_submodule(where).state_dict()
    firsts = [k for k in loaded if k.endswith(first)]
    assert len(firsts) == 1
    torch.testing.assert_close(loaded[firsts[0]], state[first].sum(1, keepdim=True))
    for k, v in state.items():
        if k != first and k in loaded:
            assert torch.equal(loaded[k], v), k
    new = {k for k in loaded if not k.endswith("num_batches_tracked")} - set(state)
    if name == "missformer":  # layers MISSFormer adds to MiT-B1 keep their initialisation
        from segarena.models.zoo.missformer import MIT_NEW

        new = {k for k in new if not k.startswith(MIT_NEW)}
    assert not new  # every other tensor came from the file
    _grey_equivalence(name, str(path), where)
