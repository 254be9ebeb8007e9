"""Pretrained-weight loading: strict, with mismatches listed; local official-layout checkpoints; safe reading."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from segarena import SegarenaError
from segarena.models import create_model
from segarena.models.card import Weights
from segarena.models.weights import load_into, read_state_dict


def test_segformer_loads_a_local_official_mit_checkpoint(tmp_path):
    ref = create_model("segformer-b0", 1)
    sd = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in ref.net.encoder.state_dict().items()}
    sd["head.weight"], sd["head.bias"] = torch.zeros(1000, 256), torch.zeros(1000)  # ImageNet classifier: ignored
    path = tmp_path / "mit_b0.safetensors"
    save_file(sd, str(path))
    m = create_model("segformer-b0", 1, pretrained=str(path))
    for k, v in m.net.encoder.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_strict_load_lists_missing_unexpected_and_shape(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    state = {"0.weight": torch.zeros(4, 3, 3, 3), "1.weight": torch.zeros(2, 5, 1, 1), "extra": torch.zeros(1)}
    with pytest.raises(SegarenaError) as exc:
        load_into(net, state, what="toy")
    msg = str(exc.value)
    assert "missing: 0.bias, 1.bias" in msg and "unexpected: extra" in msg and "shape mismatch: 1.weight" in msg


def test_torch_checkpoints_are_read_without_pickle_code(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"a": torch.ones(2)}}, good)
    assert torch.equal(read_state_dict(good)["a"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad.pth"
    torch.save({"a": Evil()}, bad)
    with pytest.raises(SegarenaError, match="cannot be read safely.*builtins.print.*segarena convert-weights"):
        read_state_dict(bad)


def test_offline_hub_weights_give_a_clear_error():
    with pytest.raises(SegarenaError, match="not available|offline|cannot be"):
        from segarena.models.weights import resolve

        resolve(Weights(source="hf-hub:nobody/nothing::model.safetensors", license="x"))
