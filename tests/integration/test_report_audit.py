"""The report audit: results stores with planted effects, built with ``segarena add-method`` from masks of known
quality, and every verdict, mark, rank, CI and number of ``report.json``, ``report.md`` and ``report.html``
checked against a recomputation written here with numpy/scipy only (never ``segarena.stats``).

Planted effects, on a synthetic ``folder`` dataset (60 cases, 3 folds of 20 test cases, native sizes vary, four
empty references; folds 0 and 1 evaluated):

* store A: ``good`` (every lesion shifted by one pixel), ``twin`` (= good, except 3 cases better and 3 worse: tied),
  ``worse`` (only the left half of each lesion: significantly worse), ``empty`` (nothing predicted);
* store B: ``tri-a``, ``tri-b``, ``tri-c`` (identical: a three-way tie for first) on both folds, and ``partial``
  (slightly worse, fold 0 only), so the comparison must fall back to fold 0's 20 common cases.
"""
from __future__ import annotations

import html as htmlmod
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats as sst

from segarena.cli import main

pytestmark = pytest.mark.slow  # ~30 s: fifteen add-method runs and three full reports (runs in `make test-slow`)

N, FOLDS, ALPHA = 60, 3, 0.05
EMPTY_REF = {3, 11, 22, 35}


# ---------------------------------------------------------------- the data and the planted methods (numpy only)
def _shape(i: int) -> tuple[int, int]:
    return (48, 48) if i % 3 else (40, 56)


def _ref(i: int) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    h, w = _shape(i)
    m = np.zeros((h, w), np.uint8)
    if i not in EMPTY_REF:
        rh, rw = rng.integers(8, 18, 2)
        y, x = rng.integers(2, h - rh - 2), rng.integers(2, w - rw - 2)
        m[y:y + rh, x:x + rw] = 1
    return m


def _method(name: str, i: int) -> np.ndarray:
    r = _ref(i)
    shift = lambda m, k: np.roll(m, k, axis=1)  # noqa: E731
    if name in ("good", "twin", "tri-a", "tri-b", "tri-c"):
        if name == "twin" and i in (1, 5, 9):
            return r.copy()  # better than good on three cases
        if name == "twin" and i in (2, 6, 10):
            return shift(r, 3)  # worse than good on three
        return shift(r, 1)
    if name == "partial":
        return shift(r, 2)
    if name == "worse":
        out = np.zeros_like(r)
        ys, xs = np.nonzero(r)
        if xs.size:
            keep = xs < (xs.min() + xs.max() + 1) / 2
            out[ys[keep], xs[keep]] = 1
        return out
    if name == "empty":
        return np.zeros_like(r)
    raise KeyError(name)


def _dice(p: np.ndarray, r: np.ndarray) -> float:
    tp, fp, fn = int((p & r).sum()), int((p & ~r & 1).sum()), int((~p & 1 & r).sum())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _counts(p: np.ndarray, r: np.ndarray) -> tuple[int, int]:
    tp, fp, fn = int((p & r).sum()), int((p & ~r & 1).sum()), int((~p & 1 & r).sum())
    return 2 * tp, 2 * tp + fp + fn


def _write_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        r = _ref(i)
        img = (rng.integers(0, 80, (*r.shape, 3)) + 120 * r[..., None]).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(r * 255).save(root / "masks" / f"case{i:02d}.png")
    return root


def _write_preds(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    for i in range(N):  # every case: files of the other fold must be ignored and counted
        Image.fromarray(_method(name, i) * 255).save(folder / f"case{i:02d}.png")
    return folder


def _cli(*args: str) -> int:
    return main([str(a) for a in args])


def _add(results: Path, data: Path, preds: Path, name: str, fold: int, capsys) -> str:
    rc = _cli("add-method", results, "--name", name, "--dataset", "folder", "--fold", fold, "--pred", preds,
              "--set", f"data.options.path={data}", "--set", f"data.num_folds={FOLDS}")
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


# ---------------------------------------------------------------- the independent recomputation (numpy/scipy)
def _holm(p: list[float]) -> list[float]:
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj, run = [0.0] * m, 0.0
    for i, j in enumerate(order):
        run = max(run, min(1.0, p[j] * (m - i)))
        adj[j] = run
    return adj


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    return 1.0 if not np.any(d != 0) else float(sst.wilcoxon(d).pvalue)


def _boot_ci(vals: np.ndarray, folds: np.ndarray, n_boot: int = 4000, seed: int = 12345) -> np.ndarray:
    """Fold-stratified percentile bootstrap of column means (vals: cases x columns), written from scratch."""
    rng = np.random.default_rng(seed)
    reps = np.zeros((n_boot, vals.shape[1]))
    for f in np.unique(folds):
        rows = np.flatnonzero(folds == f)
        draw = rows[rng.integers(0, rows.size, (n_boot, rows.size))]
        reps += vals[draw].sum(axis=1)
    return reps / len(folds)


def _expected(test_ids: dict[int, list[str]], models: list[str], folds_used: list[int]) -> dict:
    ids = [(f, c) for f in folds_used for c in sorted(test_ids[f])]
    idx = [int(c[4:]) for _, c in ids]
    dice = np.array([[_dice(_method(m, i), _ref(i)) for m in models] for i in idx])
    num_den = np.array([[_counts(_method(m, i), _ref(i)) for m in models] for i in idx], dtype=float)
    est = dice.mean(axis=0)
    order = sorted(range(len(models)), key=lambda j: (-est[j], models[j]))
    anchor = order[0]
    pairs = [(a, b) for ai, a in enumerate(range(len(models))) for b in range(ai + 1, len(models))]
    ps = [_wilcoxon(dice[:, a], dice[:, b]) for a, b in pairs]
    holm = dict(zip(pairs, _holm(ps)))
    q = lambda a, b: holm[(min(a, b), max(a, b))]  # noqa: E731
    folds = np.array([f for f, _ in ids])
    reps = _boot_ci(dice, folds)
    rel = {}
    for j in order[1:]:
        d = est[j] - est[anchor]
        dd = dice[:, j] - dice[:, anchor]
        nz = dd[dd != 0]
        r = sst.rankdata(np.abs(nz))
        rb = 0.0 if nz.size == 0 else (r[nz > 0].sum() - r[nz < 0].sum()) / r.sum()
        sig = q(j, anchor) < ALPHA
        rel[models[j]] = {"relation": "worse" if sig and d < 0 and rb < 0 else "better" if sig and d > 0 and rb > 0
                          else "tied", "difference": d, "p_holm": q(j, anchor),
                          "ci": np.quantile(reps[:, j] - reps[:, anchor], [0.025, 0.975])}
    ranks = sst.rankdata(-reps, axis=1)
    first = ranks == ranks.min(axis=1, keepdims=True)
    return {"models": models, "dice": dice, "est": est, "anchor": models[anchor], "rel": rel, "n": len(ids),
            "ci": {m: np.quantile(reps[:, j], [0.025, 0.975]) for j, m in enumerate(models)},
            "pooled": {m: num_den[:, j, 0].sum() / num_den[:, j, 1].sum() for j, m in enumerate(models)},
            "p_first": {m: first[:, j].mean() for j, m in enumerate(models)},
            "rank": dict(zip(models, sst.rankdata(-est))),
            "empty_refs": sum(1 for i in idx if i in EMPTY_REF)}


def _pct(x: float) -> str:
    return f"{x * 100:.1f}"


def _md_row(md: str, model: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] == "folder" and cells[1] == model:
            return cells
    raise AssertionError(f"no leaderboard row for {model}")


def _per_run_columns(results: Path, model: str, folds: list[int]) -> tuple[str, str]:
    """The leaderboard's descriptive columns, recomputed: pooled mDSC and mean per-case Dice of each run (fold),
    then mean ± sample std over the runs, as the paper's table."""
    ids = _test_ids(results)
    pooled, case = [], []
    for f in folds:
        cs = [int(c[4:]) for c in ids[f]]
        nd = np.array([_counts(_method(model, i), _ref(i)) for i in cs], dtype=float)
        pooled.append(nd[:, 0].sum() / nd[:, 1].sum())
        case.append(np.mean([_dice(_method(model, i), _ref(i)) for i in cs]))

    def pm(v: list[float]) -> str:
        return f"{np.mean(v) * 100:.1f}" + (f" ± {np.std(v, ddof=1) * 100:.1f}" if len(v) > 1 else "")

    return pm(pooled), pm(case)


def _check_store(results: Path, exp: dict, extra_claims: list[str],
                 folds_of: dict[str, list[int]] | None = None) -> dict:
    rep = json.loads((results / "report" / "report.json").read_text())
    md = (results / "report" / "report.md").read_text()
    page = htmlmod.unescape((results / "report" / "report.html").read_text())
    d = rep["datasets"]["folder"]
    assert d["metric"] == "dice_case_mean" and d["anchor"] == exp["anchor"]
    assert d["n_cases"] == exp["n"] and d["empty_reference_cases"] == exp["empty_refs"]
    assert set(d["models"]) == set(exp["models"]) - {exp["anchor"]}
    for j, m in enumerate(exp["models"]):
        e = d["estimates"][m]
        assert e["estimate"] == pytest.approx(exp["est"][j], abs=1e-12)
        assert e["n_cases"] == exp["n"]
        assert e["ci"] == pytest.approx(list(exp["ci"][m]), abs=0.006)  # independent draws: Monte-Carlo noise
        assert e["ci"][0] <= e["estimate"] <= e["ci"][1]
        assert d["pooled_mdsc"][m]["estimate"] == pytest.approx(exp["pooled"][m], abs=1e-12)
        assert d["ranks"][m]["rank"] == exp["rank"][m]
        assert d["ranks"][m]["p_first"] == pytest.approx(exp["p_first"][m], abs=0.03)
        row = _md_row(md, m)  # the Markdown leaderboard shows exactly these numbers and marks
        assert row[3] == f"{_pct(e['estimate'])} [{_pct(e['ci'][0])}, {_pct(e['ci'][1])}]"
        pe = d["pooled_mdsc"][m]
        assert row[5].startswith(_pct(exp["pooled"][m]) + " [")
        marks = {"tied": "≈", "worse": "↓", "better": "↑"}
        mark = "★" if m == exp["anchor"] else marks[exp["rel"][m]["relation"]]
        assert row[4] == mark, (m, row)
        assert f"<td>{m}</td><td>external</td><td>{row[3]}</td><td>{mark}</td><td>{row[5]}</td>" in page
        assert f"{_pct(pe['estimate'])} [{_pct(pe['ci'][0])}, {_pct(pe['ci'][1])}]" == row[5]
        if folds_of:  # mDSC and case Dice, mean ± std over the model's runs
            assert [row[6], row[7]] == list(_per_run_columns(results, m, folds_of[m])), m
            assert row[11] == str(len(folds_of[m]))
    for m, r in exp["rel"].items():
        got = d["models"][m]
        assert got["relation"] == r["relation"], m
        assert got["difference"] == pytest.approx(r["difference"], abs=1e-12)
        assert got["p_holm"] == pytest.approx(r["p_holm"], rel=1e-9)
        assert got["ci"] == pytest.approx(list(r["ci"]), abs=0.006)
        assert got["n"] == exp["n"]
    # the summary sentence: anchor, its number, and every other model in the group its relation says
    a = exp["anchor"]
    ea = d["estimates"][a]
    head = (f"On folder, {a} has the highest mean per-case Dice: {_pct(ea['estimate'])}% (95% CI "
            f"{_pct(ea['ci'][0])}–{_pct(ea['ci'][1])}%; {exp['n']} paired test cases,")
    summary = next(s for s in rep["summary"] if s.startswith("On folder, "))
    assert summary.startswith(head)
    for m, r in exp["rel"].items():
        p = r["p_holm"]
        ptxt = "p<0.001" if p < 0.001 else f"p={p:.3f}"
        item = f"{m} ({r['difference'] * 100:+.1f} points, {ptxt})"
        group = {"tied": "Statistically tied with it on per-case Dice: ", "worse": "Significantly worse on "
                 "per-case Dice: ", "better": "Significantly better on per-case Dice: "}[r["relation"]]
        seg = summary[summary.index(group):].split(").")[0] + ")" if group in summary else ""
        assert item in seg, (m, summary)
        pair = next(s for s in rep["pairwise"] if s.startswith(f"{m} ") and f" {a} on per-case Dice" in s)
        verb = {"tied": "is statistically tied with", "worse": "is significantly worse than",
                "better": "is significantly better than"}[r["relation"]]
        assert pair.startswith(f"{m} {verb} {a} on per-case Dice on folder (difference "
                               f"{r['difference'] * 100:+.1f} points (95% CI {got_ci(d, m, 0)} to {got_ci(d, m, 1)}),"
                               f" {ptxt} Holm, {exp['n']} paired test cases")
    for s in [summary, *rep["pairwise"], *extra_claims]:  # every claim reaches both renderings, once
        assert md.count(s) == 1 and page.count(s) == 1, s
    for c in rep["caveats"]:
        assert md.count(c) == 1 and page.count(c) == 1, c
    assert page.index("<h2>Caveats</h2>") < page.index("<h2>Summary</h2>") < page.index("<h2>Leaderboard</h2>")
    tex = (results / "report" / "report.tex").read_text()
    tex_marks = {"★": r"$\star$", "≈": r"$\approx$", "↓": r"$\downarrow$", "↑": r"$\uparrow$"}
    for m in exp["models"]:  # the LaTeX table row: model, verdict CI, mark, pooled CI
        row = _md_row(md, m)
        assert f"folder & {m} & {row[3]} & {tex_marks[row[4]]} & {row[5]} &" in tex, m
    for m in exp["models"]:  # the bootstrap-rank table
        r = d["ranks"][m]
        cells = (f"| folder | {m} | {r['rank']:g} | {r['mean_rank']:.2f} | {r['ci'][0]:g}–{r['ci'][1]:g} | "
                 f"{r['p_first']:.2f} | {exp['n']} | {d['n_folds']} |")
        assert cells in md, cells
    return rep


def got_ci(d: dict, m: str, k: int) -> str:
    return f"{d['models'][m]['ci'][k] * 100:+.1f}"


# ---------------------------------------------------------------- the stores
@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("audit")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGARENA_CACHE", str(base / "cache"))
    try:
        data = _write_dataset(base / "data")
        preds = {m: _write_preds(base / "preds" / m, m)
                 for m in ("good", "twin", "worse", "empty", "tri-a", "tri-b", "tri-c", "partial")}
        cap = _Cap()
        a, b = base / "A", base / "B"
        logs = []
        for m in ("good", "twin", "worse", "empty"):
            for f in (0, 1):
                logs.append(_add(a, data, preds[m], m, f, cap))
        for m in ("tri-a", "tri-b", "tri-c"):
            for f in (0, 1):
                _add(b, data, preds[m], m, f, cap)
        _add(b, data, preds["partial"], "partial", 0, cap)
        for r in (a, b):
            assert _cli("report", r) == 0
        yield {"A": a, "B": b, "data": data, "preds": preds, "logs": logs}
    finally:
        mp.undo()


class _Cap:  # capsys is function-scoped; the module fixture runs the CLI with a plain stand-in
    def readouterr(self):
        class R:
            out = err = ""
        return R()


def _test_ids(results: Path) -> dict[int, list[str]]:
    out = {}
    for d in (results / "runs").iterdir():
        sp = json.loads((d / "split.json").read_text())
        out[sp["fold"]] = sp["test"]
    return out


def test_planted_effects_store_a(stores):
    ids = _test_ids(stores["A"])
    assert sorted(len(v) for v in ids.values()) == [20, 20] and not set(ids[0]) & set(ids[1])
    assert sorted(ids) == [0, 1]
    exp = _expected(ids, ["empty", "good", "twin", "worse"], [0, 1])
    # the planted effects hold in the recomputation itself (otherwise the fixture, not the report, is wrong)
    assert exp["anchor"] in ("good", "twin")
    other = "twin" if exp["anchor"] == "good" else "good"
    assert exp["rel"][other]["relation"] == "tied"
    assert exp["rel"]["worse"]["relation"] == "worse" and exp["rel"]["empty"]["relation"] == "worse"
    assert exp["empty_refs"] >= 1
    rep = _check_store(stores["A"], exp, [], {m: [0, 1] for m in exp["models"]})
    assert rep["datasets"]["folder"]["n_folds"] == 2
    assert any("scored from supplied prediction masks" in c for c in rep["caveats"])
    assert any("2 folds of the planned 3 evaluated; the results rest on 40 test cases of fold 0, fold 1 only" in c
               for c in rep["caveats"])
    assert not any("fewer than 20" in c for c in rep["caveats"])
    assert any(f"{exp['empty_refs']} of the 40 compared test cases (2 folds) have an empty reference mask" in s
               for s in rep["summary"])
    f = rep["friedman"]  # blocks = the 40 common cases; recomputed with scipy on the same per-case Dice
    assert f["metric"] == "dice_case_mean" and f["n_blocks"] == 40
    assert f["p"] == pytest.approx(sst.friedmanchisquare(*exp["dice"].T).pvalue, rel=1e-9)
    assert "Friedman test on per-case Dice over 40 common test cases (2 folds)" in \
        (stores["A"] / "report" / "report.md").read_text()
    rj = json.loads((stores["A"] / "report" / "report.json").read_text())
    assert rj == rep  # strict JSON (no NaN tokens), read back identically


def test_three_way_tie_and_common_cases_store_b(stores):
    ids = _test_ids(stores["B"])
    exp = _expected(ids, ["partial", "tri-a", "tri-b", "tri-c"], [0])  # partial only has fold 0
    assert exp["anchor"] == "tri-a" and exp["n"] == 20
    assert {m: exp["rel"][m]["relation"] for m in ("tri-b", "tri-c")} == {"tri-b": "tied", "tri-c": "tied"}
    assert exp["rel"]["partial"]["relation"] == "worse"
    rep = _check_store(stores["B"], exp, [], {"partial": [0], "tri-a": [0, 1], "tri-b": [0, 1], "tri-c": [0, 1]})
    d = rep["datasets"]["folder"]
    for m in ("tri-a", "tri-b", "tri-c"):  # every model of the three-way tie ranks first in every replicate
        assert d["ranks"][m]["p_first"] == 1.0 and d["ranks"][m]["rank"] == 2.0
    assert d["ranks"]["partial"]["p_first"] == 0.0
    assert d["excluded"] == {"tri-a": 20, "tri-b": 20, "tri-c": 20}
    assert any("left out: 20 case(s) of tri-a, 20 case(s) of tri-b, 20 case(s) of tri-c" in c for c in rep["caveats"])
    assert any("1 fold of the planned 3" in c for c in rep["caveats"])
    summary = rep["summary"][0]
    assert "tri-a and tri-b, tri-c have exactly the same mean per-case Dice" in summary
    assert d["models"]["tri-b"]["p"] == 1.0 and d["models"]["tri-b"]["difference"] == 0.0


def test_add_method_counts_ignored_files_and_scores_native(stores, capsys, tmp_path):
    rc = _cli("add-method", tmp_path / "r", "--name", "good", "--dataset", "folder", "--fold", 1, "--pred",
              stores["preds"]["good"], "--set", f"data.options.path={stores['data']}", "--set",
              f"data.num_folds={FOLDS}")
    out = capsys.readouterr().out
    assert rc == 0 and "20 test cases scored at native resolution" in out and "ignored 40 file(s)" in out
    assert "segarena add-method" in (tmp_path / "r" / "commands.log").read_text()  # the report lists it
    run = next((tmp_path / "r" / "runs").iterdir())
    summ = json.loads((run / "summary.json").read_text())
    assert summ["family"] == "external" and summ["ignored_files"] == 40 and summ["n_test"] == 20
    sp = json.loads((run / "split.json").read_text())
    import pandas as pd

    rec = pd.read_parquet(run / "records.parquet")
    for cid in sp["test"]:
        i = int(cid[4:])
        r = rec[rec.case_id == cid].iloc[0]
        assert (r.height, r.width) == _shape(i)  # native size, not a network size
        assert r.dice == pytest.approx(_dice(_method("good", i), _ref(i)))
    # the same run again: refused, and the stored run is untouched
    before = (run / "records.parquet").read_bytes()
    rc = _cli("add-method", tmp_path / "r", "--name", "good", "--dataset", "folder", "--fold", 1, "--pred",
              stores["preds"]["good"], "--set", f"data.options.path={stores['data']}", "--set",
              f"data.num_folds={FOLDS}")
    err = capsys.readouterr().err
    assert rc == 2 and "already added" in err and "Traceback" not in err
    assert (run / "records.parquet").read_bytes() == before


def test_add_method_errors_name_the_files(stores, capsys, tmp_path):
    data = stores["data"]
    base = ["--dataset", "folder", "--fold", 0, "--set", f"data.options.path={data}", "--set",
            f"data.num_folds={FOLDS}"]
    ids = _test_ids(stores["A"])[0]
    # a missing prediction
    miss = tmp_path / "miss"
    miss.mkdir()
    for cid in ids[1:]:
        Image.fromarray(_ref(int(cid[4:])) * 255).save(miss / f"{cid}.png")
    assert _cli("add-method", tmp_path / "r", "--name", "m", "--pred", miss, *base) == 2
    err = capsys.readouterr().err
    assert ids[0] in err and "no prediction file" in err and err.count("\n") == 1
    # a mis-sized prediction
    bad = tmp_path / "bad"
    bad.mkdir()
    for cid in ids:
        r = _ref(int(cid[4:]))
        Image.fromarray((np.pad(r, 1) if cid == ids[2] else r) * 255).save(bad / f"{cid}.png")
    assert _cli("add-method", tmp_path / "r", "--name", "m", "--pred", bad, *base) == 2
    err = capsys.readouterr().err
    assert f"{ids[2]}.png is" in err and "native size" in err
    assert not (tmp_path / "r" / "runs").is_dir() or not any((tmp_path / "r" / "runs").iterdir())
    # bad names and folders
    assert _cli("add-method", tmp_path / "r", "--name", "../x", "--pred", bad, *base) == 2
    assert "--name" in capsys.readouterr().err
    assert _cli("add-method", tmp_path / "r", "--name", "unet", "--pred", bad, *base) == 2
    assert "is a segarena model" in capsys.readouterr().err
    assert _cli("add-method", tmp_path / "r", "--name", "m", "--pred", tmp_path / "nope", *base) == 2
    assert "folder not found" in capsys.readouterr().err


def test_a_wrong_sentence_fails_the_audit(stores, tmp_path):
    """The audit is not vacuous: flip one verdict in a copy of the report and the checks catch it."""
    import shutil

    copy = tmp_path / "A"
    shutil.copytree(stores["A"], copy)
    md = copy / "report" / "report.md"
    text = md.read_text()
    assert "Significantly worse on per-case Dice: " in text
    md.write_text(text.replace("Significantly worse on per-case Dice: ", "Significantly better on per-case Dice: "))
    exp = _expected(_test_ids(copy), ["empty", "good", "twin", "worse"], [0, 1])
    with pytest.raises(AssertionError):
        _check_store(copy, exp, [])


# ---------------------------------------------------------------- real references: Kvasir-SEG JPEG masks
@pytest.mark.realdata
def test_add_method_on_real_kvasir_and_consensus_once(real_data_root, stores, tmp_path, capsys, monkeypatch):
    """Predictions for real Kvasir-SEG test cases (the reference itself, as PNG; and a shifted copy saved as a
    noisy JPEG) are scored at native size; Dice recomputed here from the release's JPEG masks (> 127). With a
    second dataset in the same store the consensus ranking appears exactly once in each rendering."""
    import shutil

    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path / "cache"))
    res = tmp_path / "R"
    shutil.copytree(stores["A"], res)  # the folder dataset's four methods, then Kvasir-SEG next to it
    masks = real_data_root / "kvasir-seg" / "masks"
    ids = sorted(p.stem for p in masks.glob("*.jpg"))[:30]
    refs = {c: (np.asarray(Image.open(masks / f"{c}.jpg").convert("L")) > 127).astype(np.uint8) for c in ids}
    preds = {"good": tmp_path / "kg", "worse": tmp_path / "kw"}
    for p in preds.values():
        p.mkdir()
    for c, r in refs.items():
        Image.fromarray(r * 255).save(preds["good"] / f"{c}.png")
        Image.fromarray(np.roll(r, r.shape[1] // 8, axis=1) * 255).save(preds["worse"] / f"{c}.jpg", quality=75)
    for name, p in preds.items():
        rc = _cli("add-method", res, "--name", name, "--dataset", "kvasir-seg", "--fold", 0, "--pred", p,
                  "--data-root", real_data_root, "--set", "data.limit=30", "--set", "data.num_folds=3")
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "ignored 20 file(s)" in out.out
    assert _cli("report", res) == 0
    capsys.readouterr()
    rep = json.loads((res / "report" / "report.json").read_text())
    k = rep["datasets"]["kvasir-seg"]
    test = json.loads(next((res / "runs").glob("good__kvasir-seg__*/split.json")).read_text())["test"]
    dice_good = [1.0] * len(test)
    dice_worse = [_dice((np.asarray(Image.open(preds["worse"] / f"{c}.jpg").convert("L")) > 127).astype(np.uint8),
                        refs[c]) for c in test]
    assert k["anchor"] == "good" and k["n_cases"] == len(test) == 10
    assert k["estimates"]["good"]["estimate"] == pytest.approx(np.mean(dice_good))
    assert k["estimates"]["worse"]["estimate"] == pytest.approx(np.mean(dice_worse), abs=1e-12)
    assert k["qualified"] and any("only 10 paired test cases" in c for c in rep["caveats"])
    cons = rep["consensus"]
    assert cons and cons["n_datasets"] == 2
    ranks = {m: np.mean([rep["datasets"][ds]["ranks"][m]["rank"] for ds in rep["datasets"]
                         if m in rep["datasets"][ds]["ranks"]]) for m in ("good", "worse")}
    got = {r["model"]: r["mean_rank"] for r in cons["ranking"]}
    assert got["good"] == pytest.approx(ranks["good"]) and got["worse"] == pytest.approx(ranks["worse"])
    md = (res / "report" / "report.md").read_text()
    page = (res / "report" / "report.html").read_text()
    assert md.count("Consensus ranking") == 1 and page.count("Consensus ranking") == 1


def test_missing_study_runs_are_named(stores, tmp_path, capsys):
    """A study's manifest lists a run that never produced a folder and plans runs never started: the report names
    the missing run, counts the unstarted ones, and still compares only what is there."""
    import shutil

    res = tmp_path / "A"
    shutil.copytree(stores["A"], res)
    present = {p.name: p.name for p in (res / "runs").iterdir()}
    (res / "studies").mkdir()
    (res / "studies" / "s.json").write_text(json.dumps({
        "name": "s", "state": "failed", "expected_runs": len(present) + 3, "chosen_lr": {},
        "submitted": {**present, "x": "good__folder__f2__s0__deadbeef00"}, "runs": {}}))
    capsys.readouterr()
    assert _cli("report", res) == 0
    printed = capsys.readouterr().out
    rep = json.loads((res / "report" / "report.json").read_text())
    assert "Caveats:" in printed and all(f"  ! {c}" in printed for c in rep["caveats"])  # printed, too
    assert rep["summary"][0] in printed
    assert [r["run"] for r in rep["missing_runs"]] == ["good__folder__f2__s0__deadbeef00"]
    assert rep["missing_runs"][0]["fold"] == "2" and rep["missing_runs"][0]["state"] == "missing"
    assert any("good on folder fold 2 (missing)" in c for c in rep["caveats"])
    assert any("study s: 2 of its 11 planned runs were never started" in c for c in rep["caveats"])
    md = (res / "report" / "report.md").read_text()
    assert "| good__folder__f2__s0__deadbeef00 | good | folder | 2 | missing |" in md
    assert rep["datasets"]["folder"]["n_cases"] == 40  # the comparison itself is unchanged
