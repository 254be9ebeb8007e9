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


# ---- the speed options (channels_last, compile, data_on_device) and run ids --------------------------------------
#: run ids handed out before the speed options existed (computed on the tree before they were added)
IDS_BEFORE_SPEED_OPTIONS = {"default": "070eeb876ef68962", "cpu-demo": "5c30d8e9373661c1", "smoke": "808a4d3cfda45825",
                            "cpu-demo tiny": "b3956e2e058c3d36", "smoke tiny": "7d80c823a452b468"}


def _hash_without(spec: RunSpec, keys: tuple[str, ...]) -> str:
    """The run id as ``config_hash`` computed it before ``keys`` existed (its code of then, written out here), of the
    spec without them."""
    import hashlib

    from segarena._augment_presets import preset_identity
    from segarena.config import SCHEMA_VERSION

    d = to_dict(spec)
    d["data"].pop("root", None)
    d.pop("tracking", None)
    if d.get("split_digest") is None:
        d.pop("split_digest", None)
    d["schema"] = SCHEMA_VERSION
    if preset_identity(spec.protocol.augmentation) is not None:
        d["protocol"]["augmentation_pipeline"] = preset_identity(spec.protocol.augmentation)
    for key in keys:
        del d["protocol"][key]
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_run_ids_at_the_speed_option_defaults_are_the_ids_from_before():
    tiny = {"model": ModelConfig(name="tiny-unet"), "data": DataConfig(name="kvasir-seg", limit=20)}
    assert RunSpec().run_id == IDS_BEFORE_SPEED_OPTIONS["default"]
    import dataclasses

    # the ids were pinned with cpu-demo at 3 epochs of 12 steps (the demo has since moved to 4 of 24)
    then = {"cpu-demo": {"epochs": 3, "max_steps_per_epoch": 12}, "smoke": {}}
    for preset in ("cpu-demo", "smoke"):
        proto = dataclasses.replace(load_protocol(preset), **then[preset])
        assert RunSpec(protocol=proto).run_id == IDS_BEFORE_SPEED_OPTIONS[preset]
        assert RunSpec(protocol=proto, **tiny).run_id == IDS_BEFORE_SPEED_OPTIONS[f"{preset} tiny"]
    from pathlib import Path

    from segarena.runner.study import load_study

    smoke = load_study(Path(__file__).resolve().parents[2] / "configs" / "studies" / "borst2026.yaml", scale="smoke")
    assert [s.run_id for s in smoke.cv_specs("tiny-unet", "kvasir-seg")] == ["1ecd90b833ae9110", "76bc637ab14e4e54"]
    new = ("channels_last", "compile", "data_on_device")
    for spec in (RunSpec(), RunSpec(protocol=ProtocolConfig(lr=3e-4, epochs=7, augmentation="none")),
                 RunSpec(protocol=load_protocol("cpu-demo"), **tiny)):
        assert spec.run_id == _hash_without(spec, new)


def test_channels_last_and_compile_are_part_of_the_id_when_on_data_on_device_never():
    base = RunSpec()
    cl = RunSpec(protocol=ProtocolConfig(channels_last=True))
    comp = RunSpec(protocol=ProtocolConfig(compile=True))
    both = RunSpec(protocol=ProtocolConfig(channels_last=True, compile=True))
    assert len({base.run_id, cl.run_id, comp.run_id, both.run_id}) == 4
    # where the batches come from changes no number: the same run, whichever path feeds it
    for where in (True, "auto"):
        assert RunSpec(protocol=ProtocolConfig(data_on_device=where)).run_id == base.run_id
        assert RunSpec(protocol=ProtocolConfig(channels_last=True, data_on_device=where)).run_id == cl.run_id
    # the paper preset turns channels-last on: new ids, different from the default spec's
    paper = load_protocol("paper")
    assert paper.channels_last and paper.data_on_device == "auto" and not paper.compile
    assert RunSpec(protocol=paper).run_id != base.run_id
    assert RunSpec(protocol=dataclasses.replace(paper, channels_last=False)).run_id == base.run_id


def test_speed_options_parse_strictly():
    spec = apply_overrides(RunSpec(), ["protocol.channels_last=true", "protocol.compile=true",
                                       "protocol.data_on_device=auto"])
    assert (spec.protocol.channels_last, spec.protocol.compile, spec.protocol.data_on_device) == (True, True, "auto")
    assert apply_overrides(RunSpec(), ["protocol.data_on_device=false"]).protocol.data_on_device is False
    for bad in ("protocol.data_on_device=sometimes", "protocol.channels_last=fast", "protocol.compile=2"):
        with pytest.raises(ConfigError):
            apply_overrides(RunSpec(), [bad])
    spec = RunSpec(protocol=ProtocolConfig(channels_last=True, data_on_device="auto"))
    assert spec_from_dict(json.loads(json.dumps(to_dict(spec)))) == spec
