"""The bad-input corpus, part 2 (issue 16, trust): damaged results folders, read-only results, names that would
become paths, file modes, hostile archives, and the unclear cases. Same contract as ``test_bad_inputs.py``: a
clear one-line error (exit 2) naming the file or option with a fix, or a correct result; no traceback; nothing
written before is changed."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec, SegarenaError
from segarena.cli import main
from segarena.protocol import run
from tests.unit.test_bad_inputs import (
    assert_unchanged,
    build_world,
    cli_error,
    lib_error,
    make_dataset,
    run_on,
    snapshot,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A results folder with one finished run, earlier predictions and a bundle (see ``test_bad_inputs.py``)."""
    return build_world(tmp_path_factory.mktemp("world"))


# ---- damaged results folders (issue 16): listed with the file and the fix, everything else built ------------------
def _damaged_copy(world, tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A copy of the world's results folder with a second run damaged in one way."""
    import shutil

    res = tmp_path / "results"
    shutil.copytree(world["results"], res)
    good = res / "runs" / world["run"].name
    bad = res / "runs" / (world["run"].name[:-10] + "0123456789")
    shutil.copytree(good, bad)
    if how == "status":
        (bad / "status.json").write_text('{"state": "compl')
    elif how == "spec":
        (bad / "spec.json").write_text("{not json")
    elif how == "summary":
        (bad / "summary.json").write_bytes(b"\x00\xff garbage")
    elif how == "records":
        data = (bad / "records.parquet").read_bytes()
        (bad / "records.parquet").write_bytes(data[: len(data) // 2])
    elif how == "no-spec":
        (bad / "spec.json").unlink()
    return res, bad


@pytest.mark.parametrize("how,file", [("status", "status.json"), ("spec", "spec.json"),
                                      ("summary", "summary.json"), ("records", "records.parquet"),
                                      ("no-spec", "spec.json")])
def test_report_on_a_damaged_results_folder(world, tmp_path, capsys, how, file):
    res, bad = _damaged_copy(world, tmp_path, how)
    before = snapshot(res / "runs")
    rc = main(["report", str(res), "--out", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err, err
    line = next(ln for ln in err.splitlines() if bad.name in ln)
    assert file in line and " — " in line and ("delete" in line or "rerun" in line), line
    assert "tiny-fcn" in out  # the good run is still on the leaderboard
    md = (tmp_path / "rep" / "report.md").read_text()
    assert bad.name in md and "damaged" in md  # the report lists the damaged run too
    assert_unchanged(before)


def test_study_status_and_crossval_on_a_damaged_results_folder(world, tmp_path, capsys):
    from segarena.store import scan_runs

    res, bad = _damaged_copy(world, tmp_path, "summary")
    scan = scan_runs(res)
    assert [r.dir.name for r in scan.complete] == [world["run"].name]
    assert [(p.run, p.file) for p in scan.problems] == [(bad.name, "summary.json")]
    (res / "studies").mkdir()
    (res / "studies" / "s.json").write_text("{broken")
    assert main(["study", "status", str(res)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "s.json is damaged" in out and "rerun `segarena study run`" in out
    rc = main(["crossval", str(res), "--limit", "2"])  # folder data has no partner: an error, but no traceback
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err and bad.name in err and "summary.json" in err


def test_run_into_a_read_only_results_folder(world, tmp_path, capsys, monkeypatch):
    """EROFS / EACCES on the results folder: one line naming it, nothing changed (simulated: CI runs as root)."""
    import pathlib

    before = snapshot(world["results"])
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(world["results"])) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    cli_error(["run", "--model", "tiny-unet", "--dataset", "folder", "--results", world["results"],
               "--set", f"data.options.path={world['images'].parent}", "--set", "protocol.input_size=32"], capsys,
              str(world["results"]), "read-only file system")
    assert_unchanged(before)


def test_complete_run_with_its_checkpoint_deleted(world, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(world["run"], copy)
    shutil.rmtree(copy / "checkpoint")
    line = cli_error(["predict", copy, "--input", world["images"], "--output", tmp_path / "o"], capsys,
                     "checkpoint", "deleted")
    assert "resumes it" not in line
    line = cli_error(["export", copy, "--out", tmp_path / "b"], capsys, "checkpoint")
    assert "resumes it" not in line


# ---- paths from configs stay inside their folders (issue 16) --------------------------------------------------
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "a/b", "..", ".hidden", ""])
def test_study_name_cannot_escape(tmp_path, capsys, name):
    import yaml

    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": name, "models": ["tiny-fcn"], "datasets": ["kvasir-seg"]}))
    res = tmp_path / "deep" / "er" / "results"
    cli_error(["study", "run", study, "--results", res], capsys, "name")
    assert not list(tmp_path.rglob("escaped*")) and not (tmp_path / "deep").exists()


def test_study_models_given_as_a_string(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nmodels: tiny-fcn\ndatasets: [kvasir-seg]\n")
    line = cli_error(["study", "run", study, "--results", tmp_path / "r"], capsys, "models: expected a list",
                     "models: [tiny-fcn]")
    assert "unknown model" not in line


def test_names_that_would_become_paths():
    """Run names (a plugin model name with '/'), stored names (a tampered manifest) and case ids."""
    from segarena._paths import check_name, file_part, inside
    from segarena.config import DataConfig, ModelConfig, RunSpec

    spec = RunSpec(data=DataConfig(name="folder"), model=ModelConfig(name="smp:Unet/../../x"))
    assert "/" not in spec.run_name and not spec.run_name.startswith(".")
    assert file_part("benign/benign (1)") == "benign_benign_1_" and "/" not in file_part("../..")
    assert file_part("..") == "_" and file_part(".hidden") == "hidden"
    base = Path("/tmp/segarena-results-x")
    with pytest.raises(SegarenaError, match="points outside"):
        inside(base, "../escaped")
    assert inside(base, "runs", "a") == base / "runs" / "a"
    with pytest.raises(SegarenaError, match="path separator"):
        check_name("x/../y", "study name")


# ---- file modes (issue 16) --------------------------------------------------------------------------------------
def test_files_honour_the_umask(tmp_path):
    from segarena._io import write_json, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "sub" / "b.json", {"a": 1})
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "sub" / "b.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o007)
        write_text(tmp_path / "c.txt", "x")
        assert (tmp_path / "c.txt").stat().st_mode & 0o777 == 0o660
    finally:
        os.umask(old)


def test_results_of_a_run_are_group_readable(tmp_path):
    """A whole run under umask 022: every file 0644, as an ordinary ``open()`` would create it."""
    old = os.umask(0o022)
    try:
        ds = make_dataset(tmp_path / "ds", n=6)
        spec = RunSpec(data=DataConfig(name="folder", options={"path": str(ds)}, num_folds=3),
                       model=ModelConfig(name="tiny-fcn"),
                       protocol=ProtocolConfig(input_size=32, epochs=1, batch_size=3, max_steps_per_epoch=1,
                                               augmentation="none", amp=False))
        run_dir = run(spec, tmp_path / "results", device="cpu").store.dir
        modes = {p.relative_to(run_dir).as_posix(): p.stat().st_mode & 0o777 for p in run_dir.rglob("*")
                 if p.is_file()}
        assert modes and all(m == 0o644 for m in modes.values()), {k: oct(m) for k, m in modes.items() if m != 0o644}
    finally:
        os.umask(old)


# ---- the "unclear" cases of issue 16 ------------------------------------------------------------------------
def _symlink_chain_tar(path: Path) -> Path:
    """``d/x -> ..`` (inside), then ``d/x/y -> ..``: each link alone looks inside, but the chain reaches the
    parent of the target — only the extraction filter can see it."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tf:
        d = tarfile.TarInfo("d")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name in ("d/x", "d/x/y"):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, ".."
            tf.addfile(link)
        f = tarfile.TarInfo("d/x/y/escaped.txt")
        data = b"outside"
        f.size = len(data)
        tf.addfile(f, io.BytesIO(data))
    return path


def test_symlink_chain_archive_is_refused_and_cleaned_up(tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    from segarena.data import DATASETS
    from segarena.data.card import Download
    from segarena.data.download import download_dataset, safe_extract

    archive = _symlink_chain_tar(tmp_path / "chain.tar")
    lib_error(lambda: safe_extract(archive, tmp_path / "out" / "t"), str(archive), "unsafe")
    assert not (tmp_path / "out" / "escaped.txt").exists()
    monkeypatch.delenv("SEGARENA_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path / "cache"))
    card = dataclasses.replace(DATASETS.get("kvasir-seg").card, download=Download(
        url=archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest(), filename="chain.tar",
        archive_root="d"))
    root = tmp_path / "data"
    root.mkdir()
    lib_error(lambda: download_dataset(card, root), "unsafe")
    assert list(root.iterdir()) == [], "the staging folder was left behind"
    assert not (tmp_path / "escaped.txt").exists()


def test_evaluate_with_a_missing_folder(tmp_path, capsys):
    (tmp_path / "ref").mkdir()
    line = cli_error(["evaluate", "--pred", tmp_path / "missing", "--ref", tmp_path / "ref"], capsys,
                     f"--pred {tmp_path / 'missing'}", "folder not found")
    assert "--data-root" not in line
    cli_error(["evaluate", "--pred", tmp_path / "ref", "--ref", tmp_path / "nope"], capsys, "--ref", "not found")


def test_run_on_a_complete_run_whose_checkpoint_was_deleted(world, tmp_path, capsys):
    import shutil

    res = tmp_path / "results"
    shutil.copytree(world["results"], res)
    shutil.rmtree(res / "runs" / world["run"].name / "checkpoint")
    rc = main(["run", "--model", "tiny-fcn", "--dataset", "folder", "--results", str(res),
               "--set", f"data.options.path={world['images'].parent}", "--set", "protocol.input_size=32",
               "--set", "data.num_folds=3", "--set", "protocol.epochs=1", "--set", "protocol.batch_size=3",
               "--set", "protocol.max_steps_per_epoch=2", "--set", "protocol.augmentation=none",
               "--set", "protocol.amp=false", "--set", "protocol.lr=0.1"])
    out, err = capsys.readouterr()
    assert rc == 0 and "already complete" in out, (out, err)
    assert "checkpoint was deleted" in err and "delete that folder" in err


def test_all_empty_masks_fail_loud(world, tmp_path, capsys):
    """Background-only masks everywhere: the run stops with the reason instead of training on nothing."""
    ds = make_dataset(tmp_path / "ds")
    for p in (ds / "masks").iterdir():
        with Image.open(p) as im:
            size = im.size
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(p)
    run_on(world, ds, capsys, "training masks", "are empty", "mask_values")
