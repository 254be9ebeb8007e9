"""Typed configs: hashing, round trips, overrides and their errors."""
from __future__ import annotations

import dataclasses
import json

import pytest

from segarena import ConfigError, DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena.config import apply_overrides, config_hash, dump_yaml, spec_from_dict, to_dict
from segarena.configs import load_protocol, protocol_presets


def test_hash_is_stable_and_ignores_data_root():
    a = RunSpec()
    b = RunSpec(data=DataConfig(root="/somewhere/else"))
    assert a.run_id == b.run_id == config_hash(RunSpec())
    assert len(a.run_id) == 16
    c = RunSpec(protocol=ProtocolConfig(lr=5e-5))
    assert c.run_id != a.run_id
    assert a.run_name.startswith("unet__kvasir-seg__f0__s0__")


def test_round_trip_json_and_yaml():
    import yaml

    spec = RunSpec(data=DataConfig(name="busi", fold=2, options={"x": 1}), model=ModelConfig(name="segformer-b3",
                   kwargs={"k": [1, 2]}), protocol=ProtocolConfig(lr=1e-5, patience=None))
    assert spec_from_dict(json.loads(json.dumps(to_dict(spec)))) == spec
    assert spec_from_dict(yaml.safe_load(dump_yaml(spec))) == spec
    assert spec_from_dict(json.loads(json.dumps(to_dict(spec)))).run_id == spec.run_id


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunSpec().protocol.lr = 1.0  # type: ignore[misc]


def test_overrides_parse_types():
    spec = apply_overrides(RunSpec(), ["protocol.lr=5e-5", "protocol.epochs=3", "protocol.amp=false",
                                       "protocol.patience=null", "model.name=unet", "data.options.mask_values={255: 1}",
                                       "model.kwargs.base=32"])
    assert spec.protocol.lr == 5e-5 and spec.protocol.epochs == 3 and spec.protocol.amp is False
    assert spec.protocol.patience is None
    assert spec.data.options == {"mask_values": {255: 1}}
    assert spec.model.kwargs == {"base": 32}


@pytest.mark.parametrize("override,match", [
    ("protocol.lrr=1", "did you mean 'protocol.lr'"),
    ("protocl.lr=1", "unknown key 'protocl'"),
    ("protocol.epochs=many", "expected an integer"),
    ("protocol.amp=3", "expected true/false"),
    ("protocol.schedule=linear", "not allowed"),
    ("protocol.lr", "expected KEY=VALUE"),
])
def test_override_errors_are_clear(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(RunSpec(), [override])


def test_unknown_key_in_spec_file():
    with pytest.raises(ConfigError, match="unknown config key 'protocol.epoch'"):
        spec_from_dict({"protocol": {"epoch": 3}})


def test_presets_load():
    assert {"paper", "cpu-demo", "smoke"} <= set(protocol_presets())
    paper = load_protocol("paper")
    assert (paper.input_size, paper.batch_size, paper.schedule, paper.epochs) == (512, 8, "rex", 150)
    with pytest.raises(ConfigError, match="unknown protocol preset"):
        load_protocol("nope")
