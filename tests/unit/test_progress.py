"""Progress output that does not flood logs: plain lines when stderr is not a terminal, nothing when disabled."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segarena.progress import LineProgress, progress_bar, spinner

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_non_terminal_bar_prints_a_bounded_number_of_plain_lines():
    out = io.StringIO()  # not a TTY
    bar = progress_bar(range(1000), desc="train", unit="step", stream=out, delay=0)
    assert isinstance(bar, LineProgress)
    assert sum(1 for _ in bar) == 1000
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert lines[0] == "train: started (1000 steps)"
    assert lines[-1].startswith("train: done 100% (1000/1000 steps")
    assert 10 <= len(lines) <= 12  # start, 10%..90%, done: never one line per step
    assert "train: 50% (500/1000 steps" in text


def test_non_terminal_bar_of_a_short_loop_has_a_line_per_item_at_most():
    out = io.StringIO()
    bar = progress_bar(range(3), desc="epochs", stream=out, delay=0)
    for _ in bar:
        bar.set_postfix(val_mdsc="0.500")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].endswith("val_mdsc=0.500")


def test_quick_or_failing_steps_print_nothing():
    out = io.StringIO()
    assert list(progress_bar(range(50), desc="quick", stream=out)) == list(range(50))  # under the 1 s delay
    bar = progress_bar(range(10), desc="failing", stream=out, delay=0)
    with pytest.raises(ValueError):
        for i in bar:
            if i == 5:
                raise ValueError("bad file")
    lines = out.getvalue().splitlines()
    assert not any("quick" in x for x in lines) and not any("done" in x for x in lines)


def test_disabled_bar_prints_nothing(capsys):
    assert list(progress_bar(range(5), desc="x", enabled=False)) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""


def test_spinner_without_terminal_prints_start_and_end():
    out = io.StringIO()
    with spinner("counting FLOPs", stream=out, delay=0.0):
        import time

        time.sleep(0.05)
    lines = out.getvalue().splitlines()
    assert lines[0] == "counting FLOPs …" and lines[1].startswith("counting FLOPs: done in")
    quick = io.StringIO()
    with spinner("instant", stream=quick, delay=5.0):
        pass
    assert quick.getvalue() == ""  # steps shorter than the delay print nothing (a fast error stays one line)


def test_terminal_bar_is_tqdm():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    from tqdm import tqdm

    bar = progress_bar(range(3), desc="x", stream=Tty())
    assert isinstance(bar, tqdm)
    list(bar)


def test_cli_models_info_reports_progress_on_stderr_when_piped():
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "segarena", "models", "info", "unet", "--size", "512"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "building unet and counting FLOPs at 512x512 …" in r.stderr
    assert "done in" in r.stderr and "\r" not in r.stderr
    assert "params" in r.stdout and "…" not in r.stdout  # stdout stays the parseable answer


@pytest.mark.realdata
def test_run_reports_progress_on_request(real_data_root, tmp_path, capsys, monkeypatch):
    from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
    from segarena.protocol import run

    spec = RunSpec(data=DataConfig(name="kvasir-seg", root=str(real_data_root), limit=20),
                   model=ModelConfig(name="tiny-fcn"),
                   protocol=ProtocolConfig(input_size=32, epochs=2, batch_size=4, max_steps_per_epoch=1, amp=False))
    run(spec, tmp_path / "quiet")
    assert "train " not in capsys.readouterr().err
    monkeypatch.setattr("segarena.progress.DEFAULT_DELAY", 0.0)  # this tiny run is faster than the 1 s delay
    run(spec, tmp_path / "loud", progress=True)
    err = capsys.readouterr().err
    assert "train tiny-fcn" in err and "test (" in err and "done 100%" in err and "\r" not in err


def test_log_lines_name_their_unit_in_the_plural():
    from segarena.progress import _plural

    assert [_plural(u) for u in ("image", "batch", "epoch", "case", "run", "it", "cases")] == \
        ["images", "batches", "epochs", "cases", "runs", "it", "cases"]
