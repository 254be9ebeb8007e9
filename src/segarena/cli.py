"""The ``segarena`` command. Subcommands only parse arguments and call one library function each.

User errors (SegarenaError) print one line ``segarena: error: ...`` and exit with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from ._errors import ConfigError, SegarenaError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ---- datasets ---------------------------------------------------------------------------------------------
def cmd_datasets_list(a: argparse.Namespace) -> int:
    from .data import DATASETS

    cards = [dataclasses.asdict(DATASETS.get(n).card) for n in DATASETS.names()]
    if a.json:
        _print_json(cards)
    else:
        for c in cards:
            print(f"{c['name']:<16}{c['modality']:<44}{len(c['labels'])} classes  {c['license'][:50]}")
    return 0


def _options(sets: list[str]) -> dict[str, Any]:
    from .config import RunSpec, apply_overrides

    spec = apply_overrides(RunSpec(), [s if s.startswith("data.options.") else f"data.options.{s}" for s in sets])
    return spec.data.options


def cmd_datasets_prepare(a: argparse.Namespace) -> int:
    from .data.prepare import prepare
    from .data.splits import load_or_create

    opts = _options(a.option)
    if a.path:
        opts["path"] = a.path
    data = prepare(a.name, a.size, a.data_root, opts, progress=True)
    rec = load_or_create(a.name, data.ids, data.groups, data.index["sha256"], data.index["phash"], a.folds, a.seed,
                         duplicates=a.duplicates, split=a.split, meta=data.index["meta"])
    dups = rec["duplicates"]
    print(f"prepared {a.name}: {len(data)} cases at {a.size}x{a.size} in {data.folder}")
    print(f"split: {a.folds} folds of {rec['fold_sizes']} cases; {len(dups)} duplicate cluster(s) kept within one "
          f"fold ({sum(1 for d in dups if d['kind'] == 'exact')} exact, "
          f"{sum(1 for d in dups if d['kind'] == 'near')} near)"
          + (f"; {len(rec['removed'])} duplicate(s) removed" if rec.get("removed") else ""))
    return 0


def cmd_datasets_download(a: argparse.Namespace) -> int:
    from .data import DATASETS, data_root
    from .data.download import download_dataset

    card = DATASETS.get(a.name).card
    if card.download is None:
        where = card.how_to_get or f"get it from {card.url}"
        print(f"{card.title} cannot be downloaded automatically (registration or several archives): {where}. "
              f"Put it at {data_root(a.data_root) / (card.folder or a.name)}.")
        return 1
    folder = download_dataset(card, data_root(a.data_root))
    print(f"{card.title}: downloaded, checked and unpacked into {folder}\nlicense: {card.license}\n"
          f"cite: {card.citation}")
    return 0


def cmd_datasets_check(a: argparse.Namespace) -> int:
    from .data import check as check_mod

    opts = _options(a.option)
    if a.path:
        opts["path"] = a.path
    from .progress import spinner

    with spinner(f"checking {a.name}", enabled=not a.json):
        report = check_mod.check_dataset(a.name, a.root, opts)
    if a.json:
        _print_json(report)
    else:
        print(check_mod.format_report(report))
    return 0 if not report.get("problems") else 1


# ---- models -----------------------------------------------------------------------------------------------
def cmd_models_list(a: argparse.Namespace) -> int:
    from .models import MODELS

    cards = [MODELS.get(n).card for n in MODELS.names() if not a.family or MODELS.get(n).card.family == a.family]
    if a.json:
        _print_json([c.to_dict() for c in cards])
    else:
        for c in cards:
            p = f"{c.params_paper_m:.0f}M (paper)" if c.params_paper_m else ""
            print(f"{c.name:<28}{c.family:<11}{p:<13}{c.title}")
    return 0


def cmd_models_info(a: argparse.Namespace) -> int:
    from .models import model_info

    from .progress import spinner

    what = f"building {a.name}" + (f" and counting FLOPs at {a.size}x{a.size}" if a.size else "")
    with spinner(what, enabled=not a.json):
        info = model_info(a.name, num_classes=a.classes, size=a.size or None, in_channels=a.in_channels)
    if a.json:
        _print_json(info)
    else:
        for k in ("name", "family", "title", "paper", "repo", "license", "params", "flops", "macs", "input_size",
                  "input_divisor", "fixed_size", "gradcam_layer", "notes"):
            if info.get(k) not in (None, ""):
                v = info[k]
                v = f"{v / 1e6:.2f}M" if k == "params" else f"{v / 1e9:.2f} G" if k in ("flops", "macs") else v
                print(f"{k:<14}{v}")
        for tag, w in info["pretrained"].items():
            print(f"{'pretrained':<14}{tag}: {w['source']} ({w['license']})")
    return 0


# ---- run / compare / report -------------------------------------------------------------------------------
def _base_spec(a: argparse.Namespace):
    from .config import RunSpec, apply_overrides
    from .configs import load_protocol

    spec = _spec_file(a.config) if getattr(a, "config", None) else RunSpec()
    if a.preset:
        spec = dataclasses.replace(spec, protocol=load_protocol(a.preset))
    return apply_overrides(spec, a.set or [])


def _spec_file(path: str):
    from .config import load_yaml, spec_from_dict

    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with data/model/protocol sections, got a "
                          f"{type(raw).__name__}", fix="write e.g. `protocol: {epochs: 10}` at the top level")
    try:
        return spec_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", fix=exc.fix) from None


def cmd_run(a: argparse.Namespace) -> int:
    from .config import apply_overrides
    from .protocol import run
    from .report import leaderboard_text, load_results

    spec = _base_spec(a)
    pre = [f"model.name={a.model}"] if a.model else []
    pre += [f"data.name={a.dataset}"] if a.dataset else []
    pre += [f"data.fold={a.fold}"] if a.fold is not None else []
    spec = apply_overrides(spec, pre + (a.set or []))
    res = run(spec, a.results, data_root=a.data_root, device=a.device, progress=True)
    print(("already complete: " if res.skipped else "finished: ") + str(res.store.dir))
    print(leaderboard_text(load_results(a.results)["runs"]))
    return 0


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def cmd_compare(a: argparse.Namespace) -> int:
    from .report import build_report, leaderboard_text, load_results
    from .runner.grid import GridSpec, run_grid

    base = _base_spec(a)
    try:
        folds = tuple(int(f) for f in _csv(a.folds))
        seeds = tuple(int(s) for s in _csv(a.seeds))
    except ValueError:
        raise ConfigError(f"--folds/--seeds take comma-separated integers, got {a.folds!r}/{a.seeds!r}") from None
    grid = GridSpec(models=_csv(a.models), datasets=_csv(a.datasets), folds=folds, seeds=seeds,
                    protocol=base.protocol, data=base.data, pretrained=base.model.pretrained)
    rows = run_grid(grid.expand(), a.results, data_root=a.data_root, device=a.device, progress=True)
    failed = [r for r in rows if r.state == "failed"]
    print()
    print(leaderboard_text(load_results(a.results)["runs"]))
    _log_command(a, a.argv)
    paths = build_report(a.results)
    _print_verdicts(paths)
    print(f"\nreport: {paths['html']}")
    if failed:
        print(f"{len(failed)} run(s) failed; see the report or the runs' status.json", file=sys.stderr)
    return 1 if failed and len(failed) == len(rows) else 0


def _print_verdicts(paths: dict[str, Any]) -> None:
    """The report's caveats, then its verdict sentences, as printed at the end of compare/demo/report/study."""
    rep = json.loads(paths["json"].read_text())
    if rep.get("caveats"):
        print("\nCaveats:")
        for c in rep["caveats"]:
            print(f"  ! {c}")
    for line in rep.get("summary", []):
        print(f"\n{line}")


def cmd_report(a: argparse.Namespace) -> int:
    from .report import build_report, leaderboard_text, load_results

    paths = build_report(a.results_dir, a.out)
    print(leaderboard_text(load_results(a.results_dir)["runs"]))
    _print_verdicts(paths)
    print(f"\nreport: {paths['html']}\nmarkdown: {paths['markdown']}")
    return 0


def cmd_study_run(a: argparse.Namespace) -> int:
    from .report import build_report, leaderboard_text, load_results
    from .runner.study import load_study
    from .runner.study_runner import run_study

    study = load_study(a.file, scale=a.scale)  # every problem of the file is reported before anything runs
    out = run_study(study, a.results, executor=a.executor, workers=a.workers, address=a.address,
                    data_root=a.data_root, retries=a.retries, time_limit_s=a.time_limit, progress=True)
    print()
    print(leaderboard_text(load_results(a.results)["runs"]))
    if out.chosen_lr:
        print("\nlearning rates chosen on validation: " +
              ", ".join(f"{k.replace('|', ' on ')}: {v:g}" for k, v in sorted(out.chosen_lr.items())))
    _log_command(a, a.argv)
    paths = build_report(a.results)
    _print_verdicts(paths)
    print(f"\nreport: {paths['html']}")
    if out.failed:
        print(f"{len(out.failed)} run(s) failed after retries; `segarena study status {a.results}` lists them",
              file=sys.stderr)
    return 0


def cmd_study_status(a: argparse.Namespace) -> int:
    from .runner.study_runner import study_status

    rows = study_status(a.results_dir)
    if a.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no studies in this results folder")
    for r in rows:
        eta = f"{r['eta_seconds'] / 60:.1f} min" if r["eta_seconds"] is not None else "unknown"
        print(f"{r['study']} ({r['state']}): {r['done']} done, {r['running']} running, {r['failed']} failed, "
              f"{r['pending']} pending of {r['expected']} — ETA {eta}")
    return 0


#: candidates of `segarena select` when --models is not given: strong members of both families
SELECT_DEFAULT = ("unet", "nnunet-plain", "swin-umamba", "segformer-b2", "upernet-convnext-t", "vw-mit")


def cmd_select(a: argparse.Namespace) -> int:
    from .config import apply_overrides
    from .models import MODELS
    from .runner.select import select

    spec = _base_spec(a)
    pre = [f"data.name={a.dataset}"]
    if a.data:
        pre.append(f"data.options.path={a.data}")
    spec = apply_overrides(spec, pre + (a.set or []))
    models = list(_csv(a.models)) if a.models else [m for m in SELECT_DEFAULT if m in MODELS]
    for m in models:
        MODELS.get(m)
    res = select(spec, models, a.results, budget_epochs=a.budget, eta=a.eta, data_root=a.data_root,
                 device=a.device, progress=True)
    t = res.test
    lo, hi = t["mdsc_ci95"]
    print(f"\nrecommended: {res.winner} — test mDSC {t['mdsc'] * 100:.1f}% (95% CI {lo * 100:.1f}–{hi * 100:.1f}, "
          f"{t['n_test']} test cases), {t['params'] / 1e6:.1f}M parameters, {t['train_seconds'] / 60:.1f} min "
          f"training on {t['device']}; {res.epochs_spent} epochs spent in the race")
    return 0


def cmd_crossval(a: argparse.Namespace) -> int:
    from .runner.crossdata import cross_evaluate, generalization_gaps, matrix, ood_ranking, write_cross_summary

    records = cross_evaluate(a.results_dir, data_root=a.data_root, device=a.device, limit=a.limit, progress=True)
    if records.empty:
        raise SegarenaError(f"{a.results_dir}: no complete run has a label-compatible partner dataset",
                            fix="train on a dataset with a harmonized group (polyp, skin lesion, breast lesion, ...)")
    write_cross_summary(a.results_dir, records)
    mat, gaps = matrix(records), generalization_gaps(records)
    if a.json:
        _print_json({"matrix": mat.to_dict("records"), "gaps": gaps.to_dict("records"),
                     "ranking": ood_ranking(gaps).to_dict("records")})
        return 0
    for model, g in mat.groupby("model"):
        print(f"\n{model}: mDSC % (rows: trained on, columns: tested on)")
        print(g.pivot(index="train", columns="test", values="mdsc").mul(100).round(1).to_string())
    if not gaps.empty:
        print("\ngeneralization gap (in-domain - out-of-domain, mDSC points, 95% bootstrap CI):")
        for r in gaps.itertuples():
            print(f"  {r.model:<24} {r.train} -> {r.test}: {r.gap * 100:+.1f} "
                  f"[{r.gap_ci_low * 100:+.1f}, {r.gap_ci_high * 100:+.1f}]")
        print("\nranking by out-of-domain mDSC (in-domain rank beside):")
        print(ood_ranking(gaps).to_string(index=False))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .evaluate import evaluate_folders

    spacing = None
    if a.spacing:
        try:
            parts = [float(v) for v in a.spacing.split(",")]
            spacing = (parts[0], parts[-1])
        except ValueError:
            raise ConfigError(f"--spacing {a.spacing!r}: expected SY,SX in mm, e.g. 0.5,0.5") from None
    mapping = None
    if a.mask_values:
        try:
            mapping = {int(k): int(v) for k, v in (kv.split(":") for kv in a.mask_values.split(","))}
        except ValueError:
            raise ConfigError(f"--mask-values {a.mask_values!r}: expected RAW:CLASS pairs, e.g. 0:0,255:1") from None
    df, summary = evaluate_folders(a.pred, a.ref, labels=list(_csv(a.labels)) if a.labels else None,
                                   spacing=spacing, tau=a.tau, mask_values=mapping)
    if a.out:
        from ._io import atomic_write

        atomic_write(a.out, lambda tmp: df.to_parquet(tmp, index=False) if str(a.out).endswith(".parquet")
                     else df.to_csv(tmp, index=False))
    if a.json:
        _print_json({"summary": summary, "cases": df.to_dict("records")})
    else:
        print(f"{summary['cases']} cases, classes {', '.join(summary['labels'][1:])}")
        for k, v in summary["metrics"].items():
            print(f"  {k:<16}{v:.4f}")
    return 0


def cmd_add_method(a: argparse.Namespace) -> int:
    """Score an external method's predicted masks for one fold and store them as a run (family ``external``)."""
    from .config import RunSpec, apply_overrides
    from .runner.external import add_method

    bad = [o for o in (a.set or []) if not o.startswith("data.")]
    if bad:
        raise ConfigError(f"add-method --set {bad[0]!r}: only data.* settings apply to an external method",
                          fix="e.g. --set data.num_folds=5 --set data.options.path=/my/folder")
    d = apply_overrides(RunSpec(), [f"data.name={a.dataset}", f"data.fold={a.fold}", *(a.set or [])]).data
    res = add_method(a.results_dir, a.name, d.name, d.fold, a.pred, data_root=a.data_root or d.root,
                     options=d.options, num_folds=d.num_folds, split_seed=d.split_seed, duplicates=d.duplicates,
                     split=d.split, limit=d.limit)
    m = res.summary["metrics"]
    print(f"added {a.name} on {d.name} fold {d.fold}: {res.n_test} test cases scored at native resolution, "
          f"mDSC {m['mdsc'] * 100:.1f}%, per-case Dice {m['dice_case_mean'] * 100:.1f}%")
    if res.ignored:
        print(f"ignored {len(res.ignored)} file(s) of cases outside this fold's test split, e.g. "
              f"{', '.join(res.ignored[:3])}")
    print(f"run: {res.store.dir}\nnext: segarena report {a.results_dir}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """LiteMedSAM (fine-tuned) vs a medical CNN vs a general-purpose model on Kvasir-SEG, CPU-sized."""
    from .demo import DEMO_DATA, DEMO_MODELS, demo_specs, paper_note, run_demo
    from .report import build_report, leaderboard_text, load_results

    print(f"segarena demo: {DEMO_DATA.name}, first {DEMO_DATA.limit} cases, fold {DEMO_DATA.fold} of "
          f"{DEMO_DATA.num_folds}, CPU-sized protocol (configs/protocols/cpu-demo.yaml)")
    for name, what, _, _ in DEMO_MODELS:
        print(f"  {name:<14}{what}")
    print()
    rows = run_demo(a.results, overrides=list(a.set or []), data_root=a.data_root, device=a.device,
                    preset=a.preset or "cpu-demo")
    failed = [r for r in rows if r.state == "failed"]
    print()
    print(leaderboard_text(load_results(a.results)["runs"]))
    print()
    print(paper_note(demo_specs(list(a.set or []), a.preset or "cpu-demo")[0]))
    _log_command(a, a.argv)
    paths = build_report(a.results)
    _print_verdicts(paths)
    print(f"\nreport: {paths['html']}")
    print("oracle-prompted LiteMedSAM (boxes from the reference masks; an upper bound, never ranked with the "
          f"above): segarena zeroshot --dataset {DEMO_DATA.name} --set data.limit={DEMO_DATA.limit}")
    if failed:
        print(f"{len(failed)} run(s) failed; see the report or the runs' status.json", file=sys.stderr)
    return 1 if failed else 0


def cmd_zeroshot(a: argparse.Namespace) -> int:
    """Zero-shot LiteMedSAM with oracle boxes (from the reference masks), written apart from any ranking."""
    from .config import RunSpec, apply_overrides
    from .zeroshot import zeroshot_oracle

    bad = [o for o in (a.set or []) if not o.startswith("data.")]
    if bad:
        raise ConfigError(f"zeroshot --set {bad[0]!r}: only data.* settings apply (nothing is trained)",
                          fix="e.g. --set data.limit=500 --set data.num_folds=5")
    d = apply_overrides(RunSpec(), [f"data.name={a.dataset}", f"data.fold={a.fold}", *(a.set or [])]).data
    s = zeroshot_oracle(d.name, d.fold, out=a.out, data_root=a.data_root or d.root, num_folds=d.num_folds,
                        split_seed=d.split_seed, limit=d.limit, max_cases=a.max_cases, device=a.device,
                        progress=True)
    m = s["metrics"]
    print(f"ORACLE-PROMPTED LiteMedSAM (a box per reference component; not an automatic result) on {d.name} fold "
          f"{d.fold}: {s['n_test']} test cases, per-case Dice {m['dice_case_mean'] * 100:.1f}%, "
          f"mDSC {m['mdsc'] * 100:.1f}%")
    print(f"records: {s['folder']}")
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    from .xai import explain, summarize

    from .progress import spinner

    with spinner(f"explaining {a.run_dir} ({a.method})"):
        df = explain(a.run_dir, cases=a.cases, method=a.method, out=a.out, data_root=a.data_root, device=a.device)
    for r in summarize(df).to_dict("records"):
        print(f"{r['model']} {r['method']} {r['class_name']}: {r['cases']} cases, energy share "
              f"{r['energy_share']:.3f} [{r['energy_share_ci_low']:.3f}, {r['energy_share_ci_high']:.3f}], "
              f"deletion AUC {r['deletion_auc']:.3f} (random order {r['deletion_auc_random']:.3f})")
    print(f"measures and galleries: {a.out or os.path.join(a.run_dir, 'xai')}")
    return 0


# ---- predict / export -------------------------------------------------------------------------------------
def cmd_predict(a: argparse.Namespace) -> int:
    from .inference import predict

    res = predict(a.run_dir, a.input, a.output, batch_size=a.batch_size, device=a.device,
                  probabilities=a.probabilities or False, overlays=a.overlays, progress=sys.stderr.isatty())
    for _, reason in res.skipped:
        print(f"segarena: skipped {reason}", file=sys.stderr)
    print(f"wrote {len(res.label_maps)} label map(s) to {a.output}" + (f"; skipped {len(res.skipped)} unreadable "
          f"input(s)" if res.skipped else ""))
    return 1 if res.skipped else 0


def cmd_export(a: argparse.Namespace) -> int:
    from .export import export_bundle

    path = export_bundle(a.run_dir, a.out, onnx=a.onnx, opset=a.opset)
    info = json.loads(path.read_text())
    print(f"bundle: {path.parent} (model.safetensors sha256 {info['weights']['sha256'][:12]}…)")
    if "onnx" in info:
        print(f"onnx: {path.parent / 'model.onnx'} (opset {a.opset}, max |onnxruntime - pytorch| = "
              f"{info['onnx']['max_abs_diff_vs_pytorch']:.2e})")
    return 0


# ---- parser -----------------------------------------------------------------------------------------------
def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="protocol preset (paper, cpu-demo, smoke) or YAML file of protocol fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set protocol.lr=5e-5 (repeatable)")
    p.add_argument("--results", default="results", help="results folder (default: ./results)")
    p.add_argument("--data-root", help="folder holding the datasets (default: $SEGARENA_DATA_ROOT, else the cache)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="segarena", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--version", action="version", version=f"segarena {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("datasets", help="list, prepare and check datasets").add_subparsers(dest="sub", required=True)
    p = ds.add_parser("list", help="registered datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_datasets_list)
    p = ds.add_parser("prepare", help="decode a dataset once into the fast prepared cache and write its split")
    p.add_argument("name")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", "--raw", dest="data_root")
    p.add_argument("--path", help="folder of a user dataset (folder / nnunet)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--duplicates", choices=["group", "remove"], default="group")
    p.add_argument("--split", choices=["kfold", "official"], default="kfold")
    p.set_defaults(fn=cmd_datasets_prepare)
    p = ds.add_parser("download", help="fetch a public dataset (checksum, resumable) into the data root")
    p.add_argument("name")
    p.add_argument("--data-root", help="where to unpack it (default: $SEGARENA_DATA_ROOT, else the cache)")
    p.set_defaults(fn=cmd_datasets_download)
    p = ds.add_parser("check", help="report every problem of a raw dataset")
    p.add_argument("name")
    p.add_argument("--root", "--data-root", dest="root")
    p.add_argument("--path", help="folder of a user dataset (folder / nnunet)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_datasets_check)

    ms = sub.add_parser("models", help="list models and show their cards").add_subparsers(dest="sub", required=True)
    p = ms.add_parser("list")
    p.add_argument("--family", choices=["medical", "general", "foundation", "test"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_models_list)
    p = ms.add_parser("info")
    p.add_argument("name")
    p.add_argument("--size", type=int, default=512, help="input size for FLOPs (0: skip)")
    p.add_argument("--classes", type=int, default=2, help="classes including background")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_models_info)

    p = sub.add_parser("run", help="train, select on validation, evaluate on test: one run")
    p.add_argument("--model")
    p.add_argument("--dataset")
    p.add_argument("--fold", type=int)
    p.add_argument("--config", help="YAML file of a RunSpec (data/model/protocol)")
    _add_run_args(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("compare", help="models x datasets x folds, one after another, then the report")
    p.add_argument("--models", required=True, help="comma-separated model names")
    p.add_argument("--datasets", required=True, help="comma-separated dataset names")
    p.add_argument("--folds", default="0", help="comma-separated fold indices (default 0)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--config", help="YAML file of a RunSpec used as the base")
    _add_run_args(p)
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("report", help="leaderboard + Markdown/HTML report of a results folder")
    p.add_argument("results_dir")
    p.add_argument("--out", help="output folder (default RESULTS_DIR/report)")
    p.set_defaults(fn=cmd_report)

    st = sub.add_parser("study", help="run a whole study from a YAML file; show its status").add_subparsers(
        dest="sub", required=True)
    p = st.add_parser("run", help="run (or resume) a study: LR search on validation, then k-fold CV")
    p.add_argument("file", help="study YAML, e.g. configs/studies/borst2026.yaml")
    p.add_argument("--scale", help="a named scale of the study file (e.g. smoke)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=1, help="local: worker processes (one GPU each when present)")
    p.add_argument("--address", help="ray: cluster address (default: start a local Ray instance)")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed run (default 1)")
    p.add_argument("--time-limit", type=float, help="seconds per run attempt before it counts as failed")
    p.add_argument("--results", default="results")
    p.add_argument("--data-root")
    p.set_defaults(fn=cmd_study_run)
    p = st.add_parser("status", help="done / running / failed / pending runs and an ETA")
    p.add_argument("results_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_study_status)

    p = sub.add_parser("explain", help="Grad-CAMs + energy share and deletion AUC for test cases of a run")
    p.add_argument("run_dir", help="a finished run: results/runs/<run_name>")
    p.add_argument("--cases", default="worst:50", help="worst:N, best:N, all, or comma-separated case ids")
    p.add_argument("--method", default="gradcam", help="gradcam, gradcam++ or hirescam")
    p.add_argument("--out", help="output folder (default RUN_DIR/xai)")
    p.add_argument("--data-root", help="folder holding the datasets, if not where the run found them")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.set_defaults(fn=cmd_explain)

    p = sub.add_parser("predict", help="label maps for new images with a trained run or an exported bundle")
    p.add_argument("run_dir", metavar="RUN_DIR", help="results/runs/<run_name> or a bundle folder")
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--output", required=True, help="folder for <stem>.png label maps (uint8 class indices)")
    p.add_argument("--probabilities", nargs="?", const="png", choices=["png", "npy"],
                   help="also write foreground probabilities: png (uint8 0-255, default) or npy (float16)")
    p.add_argument("--overlays", action="store_true", help="also write overlays/<stem>.png")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("export", help="a self-describing bundle (safetensors + bundle.json), optionally ONNX")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run: results/runs/<run_name>")
    p.add_argument("--out", required=True, help="new or empty folder for the bundle")
    p.add_argument("--onnx", action="store_true", help="also model.onnx, checked against PyTorch (segarena[onnx])")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("select", help="recommend a model for your data: a budgeted successive-halving race")
    p.add_argument("--data", help="folder with images/ and masks/ (the `folder` dataset)")
    p.add_argument("--dataset", default="folder", help="dataset name (default: folder, with --data)")
    p.add_argument("--models", help=f"comma-separated candidates (default: {', '.join(SELECT_DEFAULT)})")
    p.add_argument("--budget", type=int, default=60, help="total training epochs over all candidates")
    p.add_argument("--eta", type=int, default=2, help="keep the best 1/eta at each rung")
    p.add_argument("--config", help="YAML file of a RunSpec used as the base")
    _add_run_args(p)
    p.set_defaults(fn=cmd_select)

    p = sub.add_parser("crossval", help="evaluate every trained run on the label-compatible datasets (OOD)")
    p.add_argument("results_dir")
    p.add_argument("--data-root", help="folder holding the partner datasets")
    p.add_argument("--limit", type=int, help="use only the first N cases of each partner dataset")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_crossval)

    p = sub.add_parser("evaluate", help="score mask files from any tool against references (overlap + boundary)")
    p.add_argument("--pred", required=True, help="folder of predicted masks (matched to references by stem)")
    p.add_argument("--ref", required=True, help="folder of reference masks")
    p.add_argument("--labels", help="class names, background first, e.g. background,polyp")
    p.add_argument("--spacing", help="pixel size SY,SX in mm for boundary metrics (default: pixels)")
    p.add_argument("--tau", type=float, default=2.0, help="NSD tolerance (mm with --spacing, else pixels)")
    p.add_argument("--mask-values", help="raw value -> class, e.g. 0:0,255:1")
    p.add_argument("--out", help="write per-case records to this .parquet or .csv file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("add-method", help="score another tool's predicted masks for one fold; store them as a run")
    p.add_argument("results_dir", metavar="RESULTS", help="results folder (created if new)")
    p.add_argument("--name", required=True, help="the method's name in the report, e.g. nnunet-2d")
    p.add_argument("--dataset", required=True, help="registered dataset name (e.g. kvasir-seg, folder)")
    p.add_argument("--fold", type=int, required=True, help="the test fold the masks were predicted for")
    p.add_argument("--pred", required=True, help="folder of predicted masks, one per test case, named by case id")
    p.add_argument("--data-root", help="folder holding the datasets (default: SEGARENA_DATA_ROOT)")
    p.add_argument("--set", action="append", metavar="data.KEY=VALUE",
                   help="split settings of the runs to compare with, e.g. data.num_folds=5, data.options.path=...")
    p.set_defaults(fn=cmd_add_method)

    p = sub.add_parser("zeroshot", help="LiteMedSAM zero-shot with ORACLE boxes from the reference masks "
                                        "(an upper bound; reported apart, never ranked)")
    p.add_argument("--dataset", default="kvasir-seg")
    p.add_argument("--fold", type=int, default=0, help="test fold (the protocol's rotation)")
    p.add_argument("--out", default="results/zeroshot", help="output folder (kept apart from ranked results)")
    p.add_argument("--max-cases", type=int, help="score only the first N test cases")
    p.add_argument("--data-root", help="folder holding the datasets (default: $SEGARENA_DATA_ROOT, else the cache)")
    p.add_argument("--device", default=None)
    p.add_argument("--set", action="append", metavar="data.KEY=VALUE", help="split settings, e.g. data.limit=500")
    p.set_defaults(fn=cmd_zeroshot)

    p = sub.add_parser("demo", help="the README demo: LiteMedSAM vs U-Net vs SegFormer on Kvasir-SEG, CPU-sized")
    _add_run_args(p)
    p.set_defaults(fn=cmd_demo, results="results/demo")
    return ap


#: commands whose results folder records the command line
_LOGGED = {"run", "compare", "study", "select", "crossval", "demo"}
#: these build a report at their end, so they log themselves just before it (the report shows the command)
_SELF_LOGGING = {"compare", "study", "demo"}


def _log_command(args: argparse.Namespace, argv: list[str]) -> None:
    results = getattr(args, "results", None) or getattr(args, "results_dir", None)
    if args.command in _LOGGED and results and (args.command != "study" or args.sub == "run"):
        from .runner.store import ResultsDir

        ResultsDir(results).log_command(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if getattr(args, "device", None):
            from .inference import resolve_device

            resolve_device(args.device)
        rc = int(args.fn(args) or 0)
        if rc in (0, 1) and args.command not in _SELF_LOGGING:  # the command ran: record what produced results
            _log_command(args, argv)
        return rc
    except SegarenaError as exc:
        print(f"segarena: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("segarena: interrupted (finished runs are kept; rerun to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
