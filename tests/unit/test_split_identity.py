"""The split lives with the results (``<results>/splits/``) and its digest is part of the run id: a changed split is
a new run, never a reuse of a run trained on other folds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena._errors import DataError, SegarenaError
from segarena.config import config_hash, spec_from_dict, to_dict
from segarena.data.splits import load_or_create, split_digest
from segarena.store import ResultsDir


def _spec(path: str = "/data/mine", **data) -> RunSpec:
    return RunSpec(data=DataConfig(name="folder", num_folds=3, options={"path": path}, **data),
                   model=ModelConfig(name="tiny-fcn"),
                   protocol=ProtocolConfig(input_size=32, epochs=2, batch_size=2, max_steps_per_epoch=1,
                                           augmentation="none", amp=False, patience=None))


def _hashes(n: int) -> tuple[list[str], list[str]]:
    """Distinct content and perceptual hashes: no case is a duplicate of another."""
    rng = np.random.default_rng(1)
    return [f"{i:064x}" for i in range(n)], [f"{int(rng.integers(0, 2**63)):016x}" for _ in range(n)]


def _write_split(rd: ResultsDir, spec: RunSpec, n: int = 9) -> Path:
    ids = [f"c{i}" for i in range(n)]
    path = rd.split_path(spec)
    load_or_create("folder", ids, ids, *_hashes(n), 3, 0, path)
    return path


def test_a_changed_split_changes_the_run_id(tmp_path):
    rd = ResultsDir(tmp_path / "r")
    spec = _spec()
    assert rd.bind(spec) is spec  # no split yet: nothing can have run on it
    path = _write_split(rd, spec)
    bound = rd.bind(spec)
    assert bound.split_digest == split_digest(json.loads(path.read_text()))
    assert bound.run_id != spec.run_id and rd.run(spec).dir.name == bound.run_name
    assert rd.bind(_spec()).run_id == bound.run_id  # the same split: the same run

    record = json.loads(path.read_text())
    case = sorted(record["folds"])[0]
    record["folds"][case] = (record["folds"][case] + 1) % 3  # one case moves to another fold
    path.write_text(json.dumps(record))
    moved = rd.bind(spec)
    assert moved.run_id not in (bound.run_id, spec.run_id)

    record["removed"] = [case]  # the same folds, one case dropped as a duplicate: another split again
    path.write_text(json.dumps(record))
    assert rd.bind(spec).run_id not in (bound.run_id, moved.run_id)


def test_the_split_file_is_shared_by_folds_and_keyed_by_what_decides_it(tmp_path):
    rd = ResultsDir(tmp_path / "r")
    base = _spec()
    assert rd.split_path(_spec(fold=2)) == rd.split_path(base)
    assert rd.split_path(_spec(root="/elsewhere")) == rd.split_path(base)  # a local path is not the split
    for other in (_spec(split_seed=1), _spec(limit=5), _spec(duplicates="remove"), _spec(path="/data/other")):
        assert rd.split_path(other) != rd.split_path(base)
    assert rd.split_path(base).parent == rd.path / "splits"


def test_unbound_ids_are_the_configuration_ids_and_bound_specs_round_trip(tmp_path):
    """Specs never bound (and results written before this change) keep their ids; spec.json keeps the digest."""
    spec = _spec()
    assert RunSpec().run_id == "070eeb876ef68962"  # the default spec's id before split digests existed
    assert config_hash(spec) == spec.run_id and spec.split_digest is None
    rd = ResultsDir(tmp_path / "r")
    _write_split(rd, spec)
    bound = rd.bind(spec)
    again = spec_from_dict(json.loads(json.dumps(to_dict(bound))))
    assert again.split_digest == bound.split_digest and again.run_id == bound.run_id


def test_a_damaged_split_file_is_a_clear_error(tmp_path):
    rd = ResultsDir(tmp_path / "r")
    path = rd.split_path(_spec())
    path.parent.mkdir(parents=True)
    path.write_text('{"no folds": 1}')
    with pytest.raises(SegarenaError, match="is damaged") as err:
        rd.bind(_spec())
    assert "delete it" in err.value.fix


def test_published_folds_that_change_are_refused(tmp_path):
    ids = [f"c{i}" for i in range(6)]
    meta = [{"fold_3": i % 3} for i in range(6)]
    sha, ph = _hashes(6)
    path = tmp_path / "s.json"
    load_or_create("x", ids, ids, sha, ph, 3, 0, path, split="official", meta=meta)
    meta[0] = {"fold_3": 1}
    with pytest.raises(DataError, match="no longer matches"):
        load_or_create("x", ids, ids, sha, ph, 3, 0, path, split="official", meta=meta)


def _folder(root: Path, n: int = 9) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        m = np.zeros((32, 32), np.uint8)
        m[8:20, 6:22] = 255
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"c{i}.png")
        Image.fromarray(m).save(root / "masks" / f"c{i}.png")
    return root


@pytest.mark.slow
def test_a_run_on_an_edited_split_is_a_new_run_and_the_old_one_is_kept(tmp_path, monkeypatch):
    from segarena.protocol import run

    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path / "cache"))
    spec = _spec(str(_folder(tmp_path / "d")))
    first = run(spec, tmp_path / "r", device="cpu")
    assert not first.skipped and first.summary["run_id"] == first.store.spec.run_id != spec.run_id
    split_file = ResultsDir(tmp_path / "r").split_path(spec)
    assert split_file.is_file() and not (tmp_path / "cache" / "splits").exists()  # beside the results only
    assert run(spec, tmp_path / "r", device="cpu").skipped  # the same split: reused

    record = json.loads(split_file.read_text())
    moved = next(c for c, f in record["folds"].items() if f == 0)  # a test case of fold 0 goes to training
    record["folds"][moved] = 2
    split_file.write_text(json.dumps(record))
    second = run(spec, tmp_path / "r", device="cpu")
    assert not second.skipped and second.store.dir != first.store.dir
    assert first.store.is_complete()  # the run on the old split is untouched
    tested = json.loads((second.store.dir / "split.json").read_text())["test"]
    assert moved not in tested and moved in json.loads((first.store.dir / "split.json").read_text())["test"]
