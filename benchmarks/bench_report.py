"""`segarena report` at scale: a synthetic results store shaped like the paper's study, the report's wall time,
peak memory and where the time goes, and how the time grows with the number of records.

    python benchmarks/bench_report.py            # the paper-shaped store + the 1x/10x/30x/100x curve (a few minutes)
    python benchmarks/bench_report.py --tiny     # seconds: checks the script (the test suite runs this)

The store is written file by file in segarena's layout (spec.json, status.json, summary.json, log.json,
split.json, records.parquet, a placeholder checkpoint), so `segarena report` reads it exactly as it reads a real
one; nothing is trained. Per-case counts come from a fixed per-model quality plus per-case noise (numpy, seeded),
so models differ by a few points, as in the paper.

* **paper**: 11 models x 3 datasets (1, 2 and 3 foreground classes, as ISIC 2018, NeoPolyp, CAMUS) x 5 folds of
  700 test cases each, fold 0 also with seeds 1 and 2, plus the 99 validation-only learning-rate-search runs
  (3 rates x 11 models x 3 datasets) and the cross-dataset matrix (every CV run of the three datasets tested on
  the other two, as `segarena crossval` writes it): 297 run folders, 264 of them the paper's grid.
* **curve**: one dataset of 11 models x 5 folds, at 1x (70 test cases per run), 10x (700, the paper's size),
  30x and 100x the records, and at the paper's size with 22 and 44 models (linear in the number of models?).

Each report is built in a fresh child process (`segarena report`'s own code path, `build_report`) that times each
stage, reports its peak resident memory (ru_maxrss) and whether torch was imported.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

PAPER_MODELS = ["unet-vgg16", "hiformer-b", "missformer", "swin-umamba", "ukan-l", "segformer-b3", "segnext-l",
                "vw-mit", "vw-conv", "internimage-t-upernet", "transnext-tiny-upernet"]
FAMILY = {m: ("medical" if i < 5 else "general") for i, m in enumerate(PAPER_MODELS)}
#: dataset -> foreground class names (ISIC 2018: lesion; NeoPolyp: neoplastic / non-neoplastic; CAMUS: 3 labels)
PAPER_DATASETS = {"isic2018": ["lesion"], "neopolyp": ["neoplastic", "non-neoplastic"],
                  "camus": ["lv-endo", "lv-epi", "la"]}
EPOCHS = 30  # per-epoch log length of every run (the training-curve figure reads these)

PROTOCOL = {"amp": True, "augmentation": "paper", "batch_size": 8, "channels_last": True, "compile": False,
            "data_on_device": "auto", "deterministic": False, "epochs": 150, "eval_resolution": "network",
            "evaluate_test": True, "grad_clip": None, "input_size": 512, "loss": "auto", "lr": 1e-4,
            "max_steps_per_epoch": None, "monitor": "val_mdsc", "nsd_tau": 2.0, "optimizer": "adamw",
            "patience": 20, "schedule": "rex", "seed": 0, "weight_decay": 0.01}


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1))


def _case_ids(ds: str, n_cases: int, folds: int) -> list[list[str]]:
    return [[f"{ds}-{f}-{i:05d}" for i in range(n_cases)] for f in range(folds)]


def _records(rng: np.random.Generator, model: str, quality: float, ds: str, classes: list[str], ids: list[str],
             fold: int, seed: int, run_id: str) -> pd.DataFrame:
    """One record per case and foreground class: integer counts whose Dice is ``quality`` plus per-case noise."""
    n, k = len(ids), len(classes)
    size = rng.integers(2_000, 60_000, size=(n, k))  # reference pixels of each class
    dice = np.clip(quality + rng.normal(0, 0.12, size=(n, k)), 0.0, 1.0)
    tp = np.round(dice * size).astype(np.int64)
    fn = size - tp
    fp = np.round((1 - dice) * size * rng.uniform(0.3, 1.0, size=(n, k))).astype(np.int64)
    d = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0)
    hd95 = (1 - d) * 80 + rng.uniform(0, 4, size=(n, k))
    return pd.DataFrame({
        "case_id": np.repeat(ids, k), "class_id": np.tile(np.arange(1, k + 1), n),
        "class_name": np.tile(classes, n), "tp": tp.ravel(), "fp": fp.ravel(), "fn": fn.ravel(),
        "tn": (512 * 512 - tp - fp - fn).ravel(), "ref_empty": False, "pred_empty": (tp + fp == 0).ravel(),
        "dice": d.ravel(), "iou": (tp / np.maximum(tp + fp + fn, 1)).ravel(),
        "precision": (tp / np.maximum(tp + fp, 1)).ravel(), "recall": (tp / np.maximum(tp + fn, 1)).ravel(),
        "run_id": run_id, "model": model, "dataset": ds, "fold": fold, "seed": seed, "height": 512, "width": 512,
        "spacing_unit": "px", "spacing_y": 1.0, "spacing_x": 1.0, "hd": hd95.ravel() * 1.3, "hd95": hd95.ravel(),
        "assd": hd95.ravel() / 4, "nsd": d.ravel() * 0.9, "nsd_tau": 2.0, "surface_empty": "none"})


def _run(root: Path, rng: np.random.Generator, model: str, ds: str, classes: list[str], folds: list[list[str]],
         fold: int, seed: int, lr: float, quality: float, validation_only: bool) -> None:
    run_id = hashlib.sha256(repr((model, ds, fold, seed, lr, validation_only)).encode()).hexdigest()[:16]
    name = f"{model}__{ds}__f{fold}__s{seed}__{run_id[:10]}"
    d = root / "runs" / name
    (d / "checkpoint").mkdir(parents=True)
    (d / "checkpoint" / "model.safetensors").write_bytes(b"0")  # the scanner checks presence only
    nf = len(folds)
    test, val = folds[fold], folds[(fold + 1) % nf]
    train = [c for f in range(nf) if f not in (fold, (fold + 1) % nf) for c in folds[f]]
    _write(d / "spec.json", {
        "data": {"duplicates": "remove", "fold": fold, "limit": None, "name": ds, "num_folds": nf, "options": {},
                 "root": None, "split": "kfold", "split_seed": 0},
        "model": {"kwargs": {}, "name": model, "pretrained": model != "ukan-l"},
        "protocol": {**PROTOCOL, "lr": lr, "seed": seed, "evaluate_test": not validation_only,
                     "epochs": 100 if validation_only else 150},
        "run_id": run_id, "split_digest": "0" * 12,
        "tracking": {"dir": None, "experiment": "segarena", "loggers": [], "mlflow_uri": None, "parent": None}})
    _write(d / "split.json", {"duplicate_policy": "remove", "duplicates": [], "fold": fold, "num_folds": nf,
                              "removed": [], "split": "kfold", "test": test, "train": train, "val": val})
    curve = quality * (1 - np.exp(-np.arange(1, EPOCHS + 1) / 6)) + rng.normal(0, 0.01, EPOCHS)
    _write(d / "log.json", [{"epoch": e, "lr": lr, "seconds": 60.0, "steps": 250, "train_loss": 0.7 / (e + 1),
                             "train_seconds": 55.0, "val_loss": 0.6 / (e + 1), "val_mdsc": float(curve[e])}
                            for e in range(EPOCHS)])
    base = {"run_id": run_id, "run_name": name, "model": model, "family": FAMILY.get(model, "general"),
            "dataset": ds, "fold": fold, "seed": seed, "epochs_run": EPOCHS, "train_seconds": 1800.0,
            "params": 30_000_000, "device": "NVIDIA H100 80GB HBM3", "best_epoch": EPOCHS - 1}
    if validation_only:
        summary = base | {"lr": lr, "validation_only": True, "best_val": {"val_mdsc": float(curve.max())},
                          "metrics": {}, "per_class": {}}
    else:
        rec = _records(rng, model, quality, ds, classes, test, fold, seed, run_id)
        rec.to_parquet(d / "records.parquet", index=False)
        tp, fp, fn = rec["tp"].sum(), rec["fp"].sum(), rec["fn"].sum()
        per_case = rec.groupby("case_id")["dice"].mean()
        summary = base | {
            "metrics": {"mdsc": 2 * tp / (2 * tp + fp + fn), "dice_case_mean": float(per_case.mean()),
                        "miou": tp / (tp + fp + fn), "precision": tp / (tp + fp), "recall": tp / (tp + fn),
                        "hd95_mean": float(rec["hd95"].mean()), "nsd_mean": float(rec["nsd"].mean()),
                        "assd_mean": float(rec["assd"].mean()), "iou_case_mean": float(rec["iou"].mean())},
            "per_class": {c: float(g["dice"].mean()) for c, g in rec.groupby("class_name")},
            "efficiency": {"macs": 5e10 + 1e9 * PAPER_MODELS.index(model) if model in PAPER_MODELS else 6e10,
                           "latency_ms": 12.0, "params": 30_000_000},
            "n_test": len(test), "n_train": len(train), "n_val": len(val), "test_seconds": 20.0,
            "versions": {"python": "3.11", "segarena": "0.1.0", "torch": "2.14.1"}}
    _write(d / "summary.json", summary)
    _write(d / "status.json", {"state": "complete", "time": time.time()})


def make_store(root: str | os.PathLike, models: list[str], datasets: dict[str, list[str]], *, folds: int = 5,
               cases: int = 700, extra_seeds: int = 0, lr_search: bool = False, crossdata: bool = False,
               seed: int = 0) -> dict[str, int]:
    """Write a synthetic results store; returns its counts (run folders, per-case records, crossdata records)."""
    root = Path(root)
    (root / "runs").mkdir(parents=True, exist_ok=True)
    _write(root / "segarena-results.json", {"format": "segarena-results", "version": 1})
    rng = np.random.default_rng(seed)
    quality = {m: 0.80 + 0.004 * ((i * 7) % 11) for i, m in enumerate(models)}
    ids = {ds: _case_ids(ds, cases, folds) for ds in datasets}
    n_runs = 0
    for ds, classes in datasets.items():
        for m in models:
            for f in range(folds):
                for s in range(1 + (extra_seeds if f == 0 else 0)):
                    _run(root, rng, m, ds, classes, ids[ds], f, s, 1e-4, quality[m], False)
                    n_runs += 1
            if lr_search:
                for lr in (1e-4, 5e-5, 1e-5):
                    _run(root, rng, m, ds, classes, ids[ds], 0, 0, lr, quality[m], True)
                    n_runs += 1
    n_cross = 0
    if crossdata:  # every CV run (seed 0) tested on the other datasets' cases, one harmonized foreground class
        frames = []
        for train in datasets:
            for m in models:
                for f in range(folds):
                    for test in datasets:
                        cid = ids[test][f] if test == train else [c for fold in ids[test] for c in fold][:cases]
                        q = quality[m] - (0 if test == train else 0.25)
                        r = _records(rng, m, q, test, ["foreground"], cid, f, 0, "x")
                        frames.append(r[["case_id", "class_id", "class_name", "tp", "fp", "fn", "tn", "dice"]]
                                      .assign(model=m, train=train, test=test, fold=f, seed=0, group="foreground"))
        cross = pd.concat(frames, ignore_index=True)
        cross.to_parquet(root / "crossdata.parquet", index=False)
        n_cross = len(cross)
    n_rec = sum(len(datasets[ds]) for ds in datasets) * len(models) * (folds + extra_seeds) * cases
    return {"runs": n_runs, "records": n_rec, "crossdata_records": n_cross}


CHILD = r"""
import json, resource, sys, time
t_start = time.perf_counter()
from segarena.report import build, evidence, figures, render, verdicts
timings = {}
def wrap(mod, name, label):
    fn = getattr(mod, name)
    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            timings[label] = timings.get(label, 0.0) + time.perf_counter() - t
    setattr(mod, name, timed)
for mod, name, label in [(build, "load_results", "read summaries"), (evidence, "case_table", "read records"),
                         (verdicts, "build_verdicts", "verdicts (bootstrap, tests, ranks)"),
                         (evidence, "_ranking", "rank figure + Friedman"), (evidence, "_pareto", "Pareto figures"),
                         (evidence, "_cross", "cross-dataset matrix + gaps"),
                         (evidence, "_variance", "seed/fold variance"), (evidence, "_curation", "curation"),
                         (build, "_curves", "training curves"), (figures, "add_figures", "opening figures"),
                         (build, "_per_class", "per-class table"),
                         (render, "render_html", "HTML"), (render, "render_markdown", "Markdown"),
                         (render, "render_latex", "LaTeX")]:
    wrap(mod, name, label)
t0 = time.perf_counter()
build.build_report(sys.argv[1])
total = time.perf_counter() - t0
print(json.dumps({"seconds": total, "import_seconds": t0 - t_start, "stages": timings,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch_imported": "torch" in sys.modules, "scipy_imported": "scipy" in sys.modules}))
"""


def report_in_child(store: Path) -> dict:
    """Build the report of ``store`` in a fresh interpreter; its timings, peak memory and imports."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(store)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"report failed on {store}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _line(label: str, counts: dict[str, int], r: dict) -> str:
    recs = counts["records"] + counts["crossdata_records"]
    return (f"{label:<34}{counts['runs']:>6}{recs:>10,}{r['seconds']:>9.1f}{r['seconds'] / recs * 1e6:>10.1f}"
            f"{r['peak_rss_mb']:>9.0f}  {'yes' if r['torch_imported'] else 'no'}")


def _stages(r: dict) -> str:
    st = sorted(r["stages"].items(), key=lambda kv: -kv[1])
    return "    where the time goes: " + ", ".join(f"{k} {v:.2f} s" for k, v in st if v >= 0.01) + \
        f"; interpreter + imports {r['import_seconds']:.2f} s (not in the total)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="seconds-long run (used by the test suite)")
    ap.add_argument("--repeats", type=int, default=1, help="reports per store (min/median/max printed)")
    ap.add_argument("--keep", help="folder to write the stores into (default: a temporary one)")
    a = ap.parse_args()
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="bench_report_"))
    if a.tiny:
        shapes = [("paper shape, tiny", dict(models=PAPER_MODELS[:3], datasets=dict(list(PAPER_DATASETS.items())[:2]),
                                              folds=2, cases=20, extra_seeds=2, lr_search=True, crossdata=True))]
        curve = [(s, dict(models=PAPER_MODELS[:3], datasets={"isic2018": ["lesion"]}, folds=2, cases=c))
                 for s, c in ((1, 10), (10, 100))]
    else:
        shapes = [("paper: 11 models x 3 datasets", dict(models=PAPER_MODELS, datasets=PAPER_DATASETS, folds=5,
                                                         cases=700, extra_seeds=2, lr_search=True, crossdata=True))]
        one = dict(datasets={"isic2018": ["lesion"]}, folds=5)
        curve = [(s, dict(models=PAPER_MODELS, cases=70 * s, **one)) for s in (1, 10, 30, 100)]
        many = [f"{m}-{k}" for k in range(4) for m in PAPER_MODELS]
        curve += [(f"{n} models", dict(models=many[:n], cases=700, **one)) for n in (22, 44)]
    print(f"{'store':<34}{'runs':>6}{'records':>10}{'report s':>9}{'us/rec':>10}{'peak MB':>9}  torch")
    results = []
    for i, (label, kw) in enumerate(shapes + [(f"one dataset, {s}x" if isinstance(s, int) else
                                                f"one dataset, {s}, 10x", kw) for s, kw in curve]):
        store = tmp / f"store{i}"
        counts = make_store(store, **kw)
        reps = [report_in_child(store) for _ in range(max(1, a.repeats))]
        reps.sort(key=lambda r: r["seconds"])
        r = reps[len(reps) // 2]
        results.append((label, counts, r))
        print(_line(label, counts, r) + (f"  (min {reps[0]['seconds']:.1f}, max {reps[-1]['seconds']:.1f})"
                                         if len(reps) > 1 else ""))
        print(_stages(r))
    base = [x for x in results if x[0].startswith("one dataset")]
    if len(base) >= 2:
        (_, c0, r0), (_, c1, r1) = base[0], base[1]
        print(f"growth ratio (time ratio / record ratio), {base[0][0]} -> {base[1][0]}: "
              f"{(r1['seconds'] / r0['seconds']) / (c1['records'] / c0['records']):.2f} (<= 1: no worse than linear)")
        for lab, c, r in base[2:]:
            print(f"growth ratio, {base[1][0]} -> {lab}: "
                  f"{(r['seconds'] / r1['seconds']) / (c['records'] / c1['records']):.2f}")
    paper = results[0][2]
    print(f"paper-shaped store: {paper['seconds']:.1f} s (target <= 15 s on 2 CPU cores), peak "
          f"{paper['peak_rss_mb']:.0f} MB (target < 1024), torch imported: {paper['torch_imported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
