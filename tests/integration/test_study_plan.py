"""`segarena study plan` and the preflight of `study run`: the paper's study planned on CPU, the refused start,
--allow-missing-data, honest exit codes of `study run` and `compare`, the U-Net/preset fix, and the LR phase."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from segarena.cli import main
from segarena.config import RunSpec
from segarena.runner import plan as plan_mod
from segarena.runner.plan import StudyRefused, plan_study, preflight
from segarena.runner.study import load_study, study_from_dict
from segarena.store import ResultsDir

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "studies" / "borst2026.yaml"
#: Borst & Kounev (2026), parameters (millions) per model as their table reports them
PAPER_PARAMS_M = {"unet-vgg16": 31, "hiformer-b": 25.5, "missformer": 42, "swin-umamba": 60, "ukan-l": 25,
                  "segformer-b3": 47, "segnext-l": 49, "vw-mit": 51, "vw-conv": 57, "internimage-t-upernet": 58,
                  "transnext-tiny-upernet": 58}


def _tiny(real_data_root: Path | str, **over) -> dict:
    raw = {"name": "t", "models": ["tiny-fcn"], "datasets": ["kvasir-seg"], "folds": [0, 1],
           "data": {"limit": 20, "root": str(real_data_root)},
           "protocol": {"input_size": 32, "epochs": 1, "batch_size": 4, "max_steps_per_epoch": 2, "patience": None,
                        "amp": False, "augmentation": "none"},
           "lr_search": None}
    raw.update(over)
    return raw


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_plan_of_the_paper_study_on_cpu(tmp_path, capsys):
    """Every run expanded, every model built (parameters within 5% of the paper's), every weight source resolved,
    the missing datasets reported with a readable fix, GPU-hours per phase; --json has runs and gpu_hours."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    rc = main(["study", "plan", str(PAPER), "--data-root", str(empty), "--json"])
    assert rc == 1  # problems: the datasets are not here and the weights are not cached (tests run offline)
    out = json.loads(capsys.readouterr().out)
    runs = out["runs"]
    # 11 models x 3 datasets x (3 LR-search runs + 5 CV folds)
    assert len(runs) == 11 * 3 * (3 + 5)
    assert {r["phase"] for r in runs} == {"lr_search", "cv"}
    for r in runs:
        assert {"run_id", "model", "dataset", "phase", "fold", "problems"} <= set(r)
    search = [r for r in runs if r["phase"] == "lr_search"]
    assert all(r["run_id"] and r["fold"] == 0 for r in search)
    assert sorted({r["lr"] for r in search}) == [1e-5, 5e-5, 1e-4]
    assert {r["fold"] for r in runs if r["phase"] == "cv"} == {0, 1, 2, 3, 4}
    # every model builds; parameters within 5% of the paper's table
    assert set(out["models"]) == set(PAPER_PARAMS_M)
    for name, m in out["models"].items():
        assert not m["problems"], (name, m["problems"])
        assert abs(m["params"] / 1e6 / PAPER_PARAMS_M[name] - 1) < 0.05, (name, m["params"])
    # weight sources: one row per pretrained model (two for HiFormer), each with a URL and a status; U-KAN has none
    rows = out["weights"]
    assert {w["model"] for w in rows} == set(PAPER_PARAMS_M) - {"ukan-l"}
    for w in rows:
        assert w["status"] in {"cached", "downloadable", "missing"} and w["url"].startswith("https://")
        if w["status"] == "missing":
            assert "SEGARENA_OFFLINE" in w["fix"] and "model_overrides" in w["fix"]
    # the datasets are missing: every run says so, with the adapter's own instructions and the folder
    for d in ("isic2018", "neopolyp", "camus"):
        info = out["datasets"][d]
        assert info["status"] == "missing"
        assert str(empty / d) in info["fix"] and "get it from download" not in info["fix"]
        assert "and unpack it there" not in info["fix"]
    assert all(any(p["kind"] == "data" for p in r["problems"]) for r in runs)
    assert not any(p["kind"] == "config" for r in runs for p in r["problems"])  # no U-Net without weights
    # GPU-hours per phase; the levers make the planned total smaller than the naive one
    gh, full, naive = out["gpu_hours"], out["gpu_hours_without_early_stopping"], out["gpu_hours_naive"]
    assert set(gh) == {"lr_search", "cv", "total"} and gh["total"] == pytest.approx(gh["lr_search"] + gh["cv"])
    assert 0 < gh["total"] < full["total"] < naive["total"]
    assert all(r["estimate"] == "estimate" for r in runs)  # nothing measured in this release
    # the text form prints the same plan
    assert main(["study", "plan", str(PAPER), "--data-root", str(empty)]) == 1
    text = capsys.readouterr().out
    for part in ("GPU-hours", "lr_search", "unet-vgg16", "pretrained weights", "levers", "problems"):
        assert part in text, part


def test_paper_study_uses_the_imagenet_unet_and_pretrained_weights():
    study = load_study(PAPER)
    assert "unet" not in study.models and "unet-vgg16" in study.models
    spec = study.cv_specs("unet-vgg16", "isic2018")[0]
    assert spec.model.pretrained is True
    assert study.cv_specs("ukan-l", "isic2018")[0].model.pretrained is False  # from scratch, as in the paper


def test_paper_preset_means_pretrained_where_weights_exist():
    from segarena.configs import load_preset, load_protocol
    from segarena.runner.grid import GridSpec, resolve_pretrained

    protocol, model = load_preset("paper")
    assert model == {"pretrained": "auto"} and load_protocol("paper") == protocol and protocol.amp
    assert resolve_pretrained("unet-vgg16", "auto") is True
    assert resolve_pretrained("segformer-b3", "auto") is True
    assert resolve_pretrained("ukan-l", "auto") is False and resolve_pretrained("unet", "auto") is False
    assert resolve_pretrained("unet", False) is False
    grid = GridSpec(models=("unet-vgg16", "ukan-l"), datasets=("kvasir-seg",), protocol=protocol, pretrained="auto")
    assert [s.model.pretrained for s in grid.expand()] == [True, False]


def test_select_defaults_are_few_pretrained_capable_models():
    from segarena.runner.select import DEFAULT_CANDIDATES as SELECT_DEFAULT
    from segarena.models import MODELS

    assert len(SELECT_DEFAULT) <= 4 and "unet" not in SELECT_DEFAULT
    with_weights = [m for m in SELECT_DEFAULT if MODELS.get(m).card.pretrained]
    assert len(with_weights) >= 3
    assert all(not MODELS.get(m).card.pretrained for m in set(SELECT_DEFAULT) - set(with_weights))  # nnU-Net


def test_unet_without_weights_in_a_pretrained_study_is_a_config_problem(tmp_path):
    study = study_from_dict(_tiny(tmp_path, models=["unet"], pretrained=True,
                                  protocol={"input_size": 64, "epochs": 1, "batch_size": 2}))
    plan = plan_study(study, data_root=tmp_path, trace=False)
    kinds = {p["kind"]: p for _, p in plan.problems}
    assert "unet-vgg16" in kinds["config"]["message"] and "pretrained: false" in kinds["config"]["fix"]


@pytest.mark.realdata
def test_study_run_refuses_to_start_and_says_what_to_fix(tmp_path, real_data_root, capsys):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(real_data_root / "kvasir-seg", data / "kvasir-seg")  # busi is missing from this root
    raw = _tiny(data, datasets=["kvasir-seg", "busi"])
    path = _write(tmp_path, raw)
    results = tmp_path / "r"
    rc = main(["study", "run", str(path), "--results", str(results)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "nothing was started" in err and "--allow-missing-data" in err
    assert "dataset 'busi' not found" in err and "fix:" in err
    assert not (results / "runs").exists()  # no run started
    # --allow-missing-data runs the dataset that is present
    rc = main(["study", "run", str(path), "--results", str(results), "--allow-missing-data"])
    assert rc == 0
    names = sorted(p.name for p in (results / "runs").iterdir())
    assert len(names) == 2 and all(n.startswith("tiny-fcn__kvasir-seg__") for n in names)


def test_preflight_refuses_a_model_that_does_not_build(tmp_path):
    study = study_from_dict(_tiny(tmp_path, model_overrides={"tiny-fcn": {"kwargs": {"no_such_arg": 1}}}))
    with pytest.raises(StudyRefused) as exc:
        preflight(study, data_root=tmp_path)
    kinds = {p["kind"] for _, p in exc.value.plan.problems}
    assert "model" in kinds and "no_such_arg" in str([p for _, p in exc.value.plan.problems])
    assert "--allow-missing-data" not in str(exc.value)  # a model problem cannot be waived


@pytest.mark.realdata
def test_study_run_with_failed_runs_exits_nonzero_and_names_them(tmp_path, real_data_root, capsys, monkeypatch):
    """A run that fails at run time (the preflight is bypassed for the test) makes `study run` exit 1."""
    real = plan_mod.check_model

    def lenient(name, n_out, in_channels, size, kwargs, trace=True):
        return real(name, n_out, in_channels, size, {}, trace)

    monkeypatch.setattr(plan_mod, "check_model", lenient)
    raw = _tiny(real_data_root, models=["tiny-fcn", "tiny-unet"],
                model_overrides={"tiny-unet": {"kwargs": {"no_such_arg": 1}}})
    rc = main(["study", "run", str(_write(tmp_path, raw)), "--results", str(tmp_path / "r"), "--retries", "0"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "2 run(s) failed" in err and "tiny-unet__kvasir-seg__f0__s0__" in err and "tiny-unet__kvasir-seg__f1" in err


@pytest.mark.realdata
def test_compare_with_a_failed_run_exits_nonzero_and_names_it(tmp_path, real_data_root, capsys):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(real_data_root / "kvasir-seg", data / "kvasir-seg")
    rc = main(["compare", "--models", "tiny-fcn", "--datasets", "kvasir-seg,busi", "--preset", "smoke",
               "--set", "data.limit=20", "--set", "protocol.input_size=32", "--results", str(tmp_path / "r"),
               "--data-root", str(data), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "1 of 2 run(s) failed" in err and "tiny-fcn__busi__f0__s0__" in err and "not found" in err


def _rex(t: int, total: int) -> float:
    """REX (Chen et al., 2021): (1 - t/T) / (1/2 + (1 - t/T)/2), written out here from the paper's formula."""
    z = 1 - t / total
    return z / (0.5 + 0.5 * z)


@pytest.mark.realdata
@pytest.mark.slow
def test_lr_search_trains_each_rate_through_optimizer_and_schedule(tmp_path, real_data_root):
    """Each candidate rate is the rate the optimizer starts from and the REX schedule decays (from log.json, the
    rate per epoch the training loop read back from the optimizer); the rates train different weights. Equal
    validation scores (the smoke study's 22.0 / 22.0 / 22.0: a tiny model that predicts background after two steps)
    are broken by the grid order: the rate listed first wins."""
    from safetensors.torch import load_file

    from segarena.runner.study_runner import run_study

    lrs = [1e-2, 1e-3, 1e-4]
    raw = _tiny(real_data_root, folds=[0], lr_search={"lrs": lrs, "epochs": 2})
    study = study_from_dict(raw)
    out = run_study(study, tmp_path / "r", workers=1, progress=False)
    assert not out.failed
    search = {s.protocol.lr: s for s in study.search_specs("tiny-fcn", "kvasir-seg")}
    assert sorted(search) == sorted(lrs)
    weights = {}
    vals = {}
    for lr, spec in search.items():
        d = tmp_path / "r" / "runs" / ResultsDir(tmp_path / "r").bind(spec).run_name
        log = json.loads((d / "log.json").read_text())
        assert [e["lr"] for e in log] == pytest.approx([lr * _rex(0, 2), lr * _rex(1, 2)])
        summary = json.loads((d / "summary.json").read_text())
        assert summary["lr"] == lr
        vals[lr] = summary["best_val"]["val_mdsc"]
        weights[lr] = load_file(str(d / "checkpoint" / "model.safetensors"))
    keys = sorted(weights[lrs[0]])
    for a, b in ((lrs[0], lrs[1]), (lrs[1], lrs[2])):
        assert any(not (weights[a][k] == weights[b][k]).all() for k in keys)
    best = max(vals.values())
    assert out.chosen_lr["tiny-fcn|kvasir-seg"] == next(lr for lr in lrs if vals[lr] == best)


def test_plan_counts_runs_and_costs_phases_of_a_small_study(tmp_path):
    raw = _tiny(tmp_path, models=["tiny-fcn", "tiny-unet"], lr_search={"lrs": [1e-3, 1e-4], "epochs": 1})
    plan = plan_study(study_from_dict(raw), data_root=tmp_path)
    assert len(plan.runs) == 2 * (2 + 2)
    cv = [r for r in plan.runs if r.phase == "cv"]
    assert all(r.run_id is None and r.lr is None and "<lr from search>" in r.name for r in cv)
    search = [r for r in plan.runs if r.phase == "lr_search"]
    spec = study_from_dict(raw).search_specs("tiny-fcn", "kvasir-seg")[0]
    assert isinstance(spec, RunSpec) and spec.run_id in {r.run_id for r in search}
    assert all(r.gpu_seconds and r.peak_gib for r in plan.runs)
    assert plan.datasets["kvasir-seg"]["status"] == "missing"  # offline, empty root
    assert all(p["kind"] == "data" for _, p in plan.problems)


def test_weight_sources_resolve_to_cached_downloadable_local_or_missing(tmp_path, monkeypatch):
    from segarena.models.card import Weights
    from segarena.runner.plan import weight_status

    url = Weights(source="https://example.org/files/resnet50-0676ba61.pth", license="BSD", sha256="ab" * 32)
    hub = Weights(source="hf-hub:nobody/nothing::weights.pth", license="MIT")
    monkeypatch.setenv("SEGARENA_WEIGHTS", str(tmp_path / "w"))
    missing = weight_status("m", "imagenet", url, True)  # tests run offline
    assert missing["status"] == "missing" and "SEGARENA_OFFLINE" in missing["fix"]
    hub_url = weight_status("m", "imagenet", hub, True)["url"]
    assert hub_url == "https://huggingface.co/nobody/nothing/resolve/main/weights.pth"
    monkeypatch.setenv("SEGARENA_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    down = weight_status("m", "imagenet", url, True)
    assert down["status"] == "downloadable" and down["url"] == url.source and down["sha256"] == "ab" * 32
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "resnet50-0676ba61.pth").write_bytes(b"x")
    assert weight_status("m", "imagenet", url, True)["status"] == "cached"
    local = tmp_path / "mine.pth"
    assert weight_status("m", "imagenet", url, str(local))["status"] == "missing"
    local.write_bytes(b"x")
    assert weight_status("m", "imagenet", url, str(local))["status"] == "local"


@pytest.mark.realdata
def test_a_dataset_whose_sample_does_not_decode_is_reported(tmp_path, real_data_root):
    from segarena.runner.plan import check_data

    good = check_data("kvasir-seg", real_data_root, {})
    assert good["status"] == "present" and good["cases"] == 1000 and good["sample"]["image"][2] == 3
    broken = tmp_path / "kvasir-seg"
    (broken / "images").mkdir(parents=True)
    (broken / "masks").mkdir()
    first = sorted((real_data_root / "kvasir-seg" / "images").iterdir())[0]
    (broken / "images" / first.name).write_bytes(b"not a jpeg")
    (broken / "masks" / first.name).write_bytes((real_data_root / "kvasir-seg" / "masks" / first.name).read_bytes())
    bad = check_data("kvasir-seg", tmp_path, {})
    assert bad["status"] == "broken" and bad["problem"]


def test_the_missing_dataset_fix_reads_as_one_sentence(tmp_path):
    from segarena import DataError
    from segarena.data import dataset_root

    for name in ("isic2018", "neopolyp", "camus", "busi"):
        with pytest.raises(DataError) as exc:
            dataset_root(name, tmp_path, download=False)
        fix = exc.value.fix
        assert "get it from download" not in fix and "get it from join" not in fix and "<data-root>" not in fix
        assert str(tmp_path / name) in fix and fix.count("unpack it") <= 1 and "SEGARENA_DATA_ROOT" in fix
    with pytest.raises(DataError) as exc:
        dataset_root("kvasir-seg", tmp_path, download=False)  # public: the archive's URL
    assert exc.value.fix.startswith("download https://")


def test_run_with_the_paper_preset_resolves_pretrained_per_model(tmp_path, monkeypatch):
    """`run --preset paper`: the run gets pretrained=True for a model with weights, False for one without."""
    import segarena.protocol as protocol_pkg

    seen = []

    class Stop(Exception):
        pass

    def fake_run(spec, results, **kw):
        seen.append(spec.model.pretrained)
        raise Stop

    monkeypatch.setattr(protocol_pkg, "run", fake_run)
    for model in ("unet-vgg16", "ukan-l"):
        with pytest.raises(Stop):
            main(["run", "--model", model, "--preset", "paper", "--results", str(tmp_path / "r")])
    assert seen == [True, False]


def test_the_plans_levers_follow_the_studys_protocol(tmp_path):
    """channels-last, torch.compile and data on the device are reported as the study's protocol sets them, with an
    estimate that names its number and source, or the ratio gpu_check.py measured."""
    import dataclasses

    from segarena.configs import load_protocol

    def levers(study, measured=None):
        out = plan_mod._levers(study, [], measured or {}, {"isic2018": 3.6})
        return {lv["lever"].split(" (")[0]: lv for lv in out}

    cl, comp, dev = "channels-last memory format", "torch.compile", "prepared data kept on the device"
    paper = levers(load_study(PAPER))
    assert paper[cl]["applied"] and paper[dev]["applied"] and not paper[comp]["applied"]
    assert "x1.2" in paper[cl]["effect"] and "channels-last tutorial" in paper[cl]["effect"]
    assert "x1.5" in paper[comp]["effect"] and "--set protocol.compile=true" in paper[comp]["effect"]
    assert "isic2018 3.6 GiB" in paper[dev]["effect"] and "quarter of its free memory" in paper[dev]["effect"]
    assert all(paper[k]["kind"] == "estimate" for k in (cl, comp, dev))
    smoke = levers(load_study(PAPER, scale="smoke"))  # the CPU-sized study leaves channels-last off
    assert not smoke[cl]["applied"] and smoke[dev]["applied"]
    # the paper preset as a study's protocol: the same levers; an override that turns one off is named
    preset = dataclasses.asdict(load_protocol("paper"))
    raw = _tiny(tmp_path, models=["tiny-fcn", "tiny-unet"], protocol=preset,
                model_overrides={"tiny-unet": {"protocol": {"channels_last": False}}})
    mine = levers(study_from_dict(raw))
    assert mine[cl]["applied"] and "(off for tiny-unet)" in mine[cl]["effect"] and mine[dev]["applied"]
    off = levers(study_from_dict(_tiny(tmp_path)))  # a protocol without them
    assert not any(off[k]["applied"] for k in (cl, comp, dev))
    measured = {"channels_last": {"ratio": 1.31, "models": ["unet-vgg16"], "gpu": "NVIDIA H200", "extra_warmup_s": 0.1}}
    got = levers(load_study(PAPER), measured)[cl]
    assert got["kind"] == "measured" and "x1.31" in got["effect"] and "NVIDIA H200" in got["effect"]
