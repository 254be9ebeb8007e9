"""Training, comparing, studies, reports, cross-dataset evaluation, external methods, explanations."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .._errors import ConfigError, SegarenaError
from ._common import (
    _print_json, _csv, _names, _measure_note, _print_verdicts, _print_problems, _base_spec, _run_spec,
    _print_comparison, _log_command
)


# ---- run / compare / report -------------------------------------------------------------------------------
def cmd_run(a: argparse.Namespace) -> int:
    from ..protocol import run
    from ..report import leaderboard_text, load_results

    spec = _run_spec(a)
    res = run(spec, a.results, data_root=a.data_root, device=a.device, progress=True)
    print(("already complete: " if res.skipped else "finished: ") + str(res.store.dir))
    if res.skipped and not res.store.weights.is_file():  # a finished run is never redone: say what that means
        print(f"segarena: warning: {res.store.dir} is complete but its checkpoint was deleted; its scores are kept "
              "— to train it again, delete that folder and rerun this command", file=sys.stderr)
    print(leaderboard_text(load_results(a.results)["runs"]))
    return 0


def cmd_config_show(a: argparse.Namespace) -> int:
    """Print the spec `segarena run` would execute with the same options, as YAML, with its run id; nothing runs.
    The output is a valid ``--config`` file: passing it back gives the same spec and run id."""
    from ..config import dump_yaml
    from ..protocol.loop import validate_spec

    spec = _run_spec(a)
    validate_spec(spec)
    from ..data.augment import AUGMENTATIONS
    from ..protocol.loop import bound_spec

    aug = AUGMENTATIONS.get(spec.protocol.augmentation)
    try:  # the run id includes the split's digest: the split in --results, or the one `run` would make
        run = bound_spec(spec, a.results, a.data_root)
    except SegarenaError as exc:  # data not readable here: the id of the configuration alone, said so
        run = spec
        print(f"# note: no split yet (the data cannot be read: {exc.message}); the run id below is the "
              "configuration's, and `run` adds the split's digest")
    print(f"# run id: {run.run_id}\n# configuration id: {spec.run_id}\n# run name: {run.run_name}\n"
          f"# results: {a.results}/runs/{run.run_name}")
    print(f"# augmentation {aug.name} (kornia, on the device; its parameters are part of the run id): "
          f"{aug.description}")
    print(dump_yaml(spec), end="")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from ..report.compare import compare
    from ..runner.grid import GridSpec

    base = _base_spec(a)
    try:
        folds = tuple(int(f) for f in _csv(a.folds))
        seeds = tuple(int(s) for s in _csv(a.seeds))
    except ValueError:
        raise ConfigError(f"--folds/--seeds take comma-separated integers, got {a.folds!r}/{a.seeds!r}") from None
    grid = GridSpec(models=_csv(a.models), datasets=_csv(a.datasets), folds=folds, seeds=seeds,
                    protocol=base.protocol, data=base.data, pretrained=base.model.pretrained)
    return _print_comparison(compare(grid, a.results, data_root=a.data_root, device=a.device, argv=a.argv))


def cmd_report(a: argparse.Namespace) -> int:
    from ..report import build_report, leaderboard_text, load_results

    paths = build_report(a.results_dir, a.out)
    res = load_results(a.results_dir)
    print(leaderboard_text(res["runs"]))
    _print_verdicts(paths)
    print(f"\nreport: {paths['html']}\nmarkdown: {paths['markdown']}")
    _print_problems(res.get("problems", []))
    return 0


def cmd_study_plan(a: argparse.Namespace) -> int:
    from ..runner.plan import format_plan, plan_study
    from ..runner.study import load_study

    plan = plan_study(load_study(a.file, scale=a.scale), data_root=a.data_root, throughput=a.throughput)
    if a.json:
        _print_json(plan.to_dict())
    else:
        print(format_plan(plan))
    return 1 if plan.problems else 0


def cmd_study_run(a: argparse.Namespace) -> int:
    from ..report import build_report, leaderboard_text, load_results
    from ..runner.plan import StudyRefused, format_plan
    from ..runner.study import load_study
    from ..runner.study_runner import run_study

    study = load_study(a.file, scale=a.scale)  # every problem of the file is reported before anything runs
    try:
        out = run_study(study, a.results, executor=a.executor, workers=a.workers, address=a.address,
                        data_root=a.data_root, retries=a.retries, time_limit_s=a.time_limit, progress=True,
                        allow_missing_data=a.allow_missing_data, throughput=a.throughput)
    except StudyRefused as exc:
        if exc.plan is not None:
            text = format_plan(exc.plan, a.allow_missing_data)
            print(text[text.index("\nproblems"):].lstrip("\n") if "\nproblems" in text else text, file=sys.stderr)
        raise
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
        skipped = f"; CV not started for {', '.join(out.skipped_cv)}" if out.skipped_cv else ""
        print(f"segarena: {len(out.failed)} run(s) failed after retries: {_names(out.failed_names)}{skipped} "
              f"(errors: `segarena study status {a.results}` and each run's status.json)", file=sys.stderr)
        return 1
    return 0


def cmd_study_status(a: argparse.Namespace) -> int:
    from ..runner.study_runner import study_status

    rows = study_status(a.results_dir)
    if a.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no studies in this results folder")
    for r in rows:
        eta = f"{r['eta_seconds'] / 60:.1f} min" if r["eta_seconds"] is not None else "unknown"
        extra = "".join(f", {r[k]} {k}" for k in ("interrupted", "damaged") if r.get(k))
        print(f"{r['study']} ({r['state']}): {r['done']} done, {r['running']} running, {r['failed']} failed{extra}, "
              f"{r['pending']} pending of {r['expected']} — ETA {eta}")
        for line in r.get("problems", []):
            print(f"  {line}")
        if r["state"] == "interrupted":
            print("  the study process is gone: rerun `segarena study run` with the same file to finish it")
    return 0


def cmd_select(a: argparse.Namespace) -> int:
    from ..config import apply_overrides
    from ..runner.select import select

    spec = _base_spec(a)
    pre = [f"data.name={a.dataset}"]
    if a.data:
        pre.append(f"data.options.path={a.data}")
    spec = apply_overrides(spec, pre + (a.set or []))
    if not any(s.split("=", 1)[0].strip() == "model.pretrained" for s in a.set or []) and not a.preset \
            and not getattr(a, "config", None):
        # nobody chose: start from ImageNet weights where a candidate has them (racing from scratch wastes budget)
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, pretrained="auto"))
    models = list(_csv(a.models)) if a.models else None  # None: select's default candidates
    res = select(spec, models, a.results, budget_epochs=a.budget, eta=a.eta, data_root=a.data_root,
                 device=a.device, progress=True)
    t = res.test
    lo, hi = t["mdsc_ci95"]
    print(f"\nrecommended: {res.winner} — test mDSC {t['mdsc'] * 100:.1f}% (higher is better; "
          f"95% CI {lo * 100:.1f}–{hi * 100:.1f}, "
          f"{t['n_test']} test cases), {t['params'] / 1e6:.1f}M parameters, {t['train_seconds'] / 60:.1f} min "
          f"training on {t['device']}; {res.epochs_spent} epochs spent of a budget of {a.budget}")
    return 0


def cmd_crossval(a: argparse.Namespace) -> int:
    from ..runner.crossdata import (cross_evaluate, cross_text, generalization_gaps, matrix, ood_ranking,
                                   parse_partner, write_cross_summary)

    problems: list = []
    partners = [parse_partner(t) for t in a.partner]
    records = cross_evaluate(a.results_dir, data_root=a.data_root, device=a.device, limit=a.limit, progress=True,
                             problems=problems, partners=partners)
    _print_problems(problems)
    if records.empty:
        raise SegarenaError(f"{a.results_dir}: no complete run has a label-compatible partner dataset",
                            fix="train on a dataset with a harmonized group (polyp, skin lesion, breast lesion, ...)")
    write_cross_summary(a.results_dir, records)
    mat, gaps = matrix(records), generalization_gaps(records)
    if a.json:
        _print_json({"matrix": mat.to_dict("records"), "gaps": gaps.to_dict("records"),
                     "ranking": ood_ranking(gaps).to_dict("records")})
        return 0
    print(cross_text(mat, gaps))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluate import evaluate_folders

    for flag, folder, fix in (("--pred", a.pred, "pass the folder your tool wrote its predicted masks to"),
                              ("--ref", a.ref, "pass the folder holding the reference masks")):
        if not Path(folder).expanduser().is_dir():  # before the dataset reader, whose fix names --data-root
            raise SegarenaError(f"{flag} {folder}: " + ("is a file, not a folder" if Path(folder).exists()
                                                         else "folder not found"), fix=fix)
    spacing = None
    if a.spacing:
        try:
            parts = [float(v) for v in a.spacing.split(",")]
            spacing = (parts[0], parts[-1])
        except ValueError:
            raise ConfigError(f"--spacing {a.spacing!r}: expected SY,SX in mm, e.g. 0.5,0.5") from None
    from ..data.masks import parse_mask_values

    mapping = parse_mask_values(a.mask_values, "--mask-values") if a.mask_values else None
    df, summary = evaluate_folders(a.pred, a.ref, labels=list(_csv(a.labels)) if a.labels else None,
                                   spacing=spacing, tau=a.tau, mask_values=mapping)
    if a.out:
        from .._io import atomic_write

        atomic_write(a.out, lambda tmp: df.to_parquet(tmp, index=False) if str(a.out).endswith(".parquet")
                     else df.to_csv(tmp, index=False))
    if a.json:
        _print_json({"summary": summary, "cases": df.to_dict("records")})
    else:
        print(f"{summary['cases']} cases, classes {', '.join(summary['labels'][1:])}")
        dist_unit = "mm" if spacing else "px"
        for k, v in summary["metrics"].items():
            print(f"  {k:<16}{v:.4f}  {_measure_note(k, dist_unit)}")
    return 0


def _data_only(a: argparse.Namespace, command: str, why: str, fix: str):
    """The DataConfig of a command that trains nothing (``--dataset``, ``--fold``, ``--set data.*`` only)."""
    from ..config import RunSpec, apply_overrides

    bad = [o for o in (a.set or []) if not o.startswith("data.")]
    if bad:
        raise ConfigError(f"{command} --set {bad[0]!r}: {why}", fix=fix)
    return apply_overrides(RunSpec(), [f"data.name={a.dataset}", f"data.fold={a.fold}", *(a.set or [])]).data


def cmd_add_method(a: argparse.Namespace) -> int:
    """Score an external method's predicted masks for one fold and store them as a run (family ``external``)."""
    from ..runner.external import add_method

    d = _data_only(a, "add-method", "only data.* settings apply to an external method",
                   "e.g. --set data.num_folds=5 --set data.options.path=/my/folder")
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
    from ..demo import DEMO_DATA, DEMO_MODELS, DEMO_PRESET, demo_specs, paper_note, run_demo

    preset = a.preset or DEMO_PRESET
    specs = demo_specs(a.set or [], preset)  # bad --set values fail here, before anything is printed
    d = specs[0].data
    print(f"segarena demo: {d.name}, first {d.limit} cases, fold {d.fold} of {d.num_folds}, CPU-sized protocol "
          f"({'configs/protocols/cpu-demo.yaml' if preset == DEMO_PRESET else preset})")
    for name, what, _, _ in DEMO_MODELS:
        print(f"  {name:<14}{what}")
    comp = run_demo(a.results, overrides=a.set or [], data_root=a.data_root, device=a.device, preset=preset,
                    argv=a.argv)
    code = _print_comparison(comp, beside=paper_note(specs[0]))
    print("oracle-prompted LiteMedSAM (boxes from the reference masks; an upper bound, never ranked with the "
          f"above): segarena zeroshot --dataset {DEMO_DATA.name} --set data.limit={d.limit}")
    return code


def cmd_zeroshot(a: argparse.Namespace) -> int:
    """Zero-shot LiteMedSAM with oracle boxes (from the reference masks), written apart from any ranking."""
    from ..zeroshot import zeroshot_oracle

    d = _data_only(a, "zeroshot", "only data.* settings apply (nothing is trained)",
                   "e.g. --set data.limit=500 --set data.num_folds=5")
    s = zeroshot_oracle(d.name, d.fold, out=a.out, data_root=a.data_root or d.root, num_folds=d.num_folds,
                        split_seed=d.split_seed, limit=d.limit, max_cases=a.max_cases, device=a.device,
                        progress=True, duplicates=d.duplicates, split=d.split, options=d.options)
    m = s["metrics"]
    print(f"ORACLE-PROMPTED LiteMedSAM (a box per reference component; not an automatic result) on {d.name} fold "
          f"{d.fold}: {s['n_test']} test cases, per-case Dice {m['dice_case_mean'] * 100:.1f}%, "
          f"mDSC {m['mdsc'] * 100:.1f}%")
    print(f"records: {s['folder']}")
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    from ..progress import spinner
    from ..xai import explain, summarize

    with spinner(f"explaining {a.run_dir} ({a.method})"):
        df = explain(a.run_dir, cases=a.cases, method=a.method, out=a.out, data_root=a.data_root, device=a.device)
    rows = summarize(df).to_dict("records")
    if rows:
        print("energy share: fraction (0-1) of the map's mass inside the reference region, higher is better; "
              "deletion AUC: mean class probability (0-1) while the most salient pixels are removed, lower is "
              "better (below the random-order AUC = the map finds what the model uses); [95% bootstrap CI]")
    for r in rows:
        print(f"{r['model']} {r['method']} {r['class_name']}: {r['cases']} cases, energy share "
              f"{r['energy_share']:.3f} [{r['energy_share_ci_low']:.3f}, {r['energy_share_ci_high']:.3f}] "
              f"(fraction, higher is better), deletion AUC {r['deletion_auc']:.3f} (probability, lower is better; "
              f"random order {r['deletion_auc_random']:.3f})")
    print(f"measures and galleries: {a.out or os.path.join(a.run_dir, 'xai')}")
    return 0
