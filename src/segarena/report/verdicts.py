"""The verdicts of a report, as one machine-readable dict (``report.json``), from the per-case records only.

The rule (docs/evaluation.md, "Verdict rule"): per dataset, the verdict metric is the **per-case Dice** (mean over
foreground classes of each case, empty-mask policy applied), because the paired tests and the ranks are per case.
Every model is scored on the **common cases**, those evaluated for every compared model (several seeds of one case
are averaged; a missing run removes its cases from everybody's comparison, never from one model's alone). The
**anchor** is the model with the highest mean per-case Dice there (ties: the first by name, and the report says
so). Every other model is compared with the anchor by the two-sided Wilcoxon signed-rank test on the paired
per-case differences, Holm-adjusted over all pairs of the dataset; its **relation** is ``better`` / ``worse``
when ``p_holm < alpha`` and the mean difference and the rank-biserial correlation agree in sign, else ``tied``.
One set of bootstrap draws per dataset (stratified by fold) gives every CI, every paired difference CI and the
rank distribution, so the numbers cannot disagree. The paper's pooled mDSC is reported with its own CI on the
same draws, as a description, never as a verdict.
"""
from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from .. import stats
from ..config import ProtocolConfig

SCHEMA = "segarena-report/1"
METRIC = "dice_case_mean"
METRIC_LABEL = "per-case Dice"
MIN_CASES = 20  # fewer paired cases than this: significance language is qualified
MARKS = {"anchor": "★", "tied": "≈", "worse": "↓", "better": "↑"}


def pct(x: float) -> str:
    """A fraction as the report prints it: percent with one decimal."""
    return "–" if x is None or not np.isfinite(x) else f"{x * 100:.1f}"


def pts(x: float) -> str:
    """A difference of fractions in percentage points, signed."""
    return f"{x * 100:+.1f}"


def fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _folds(n: int) -> str:
    return f"{n} fold" + ("" if n == 1 else "s")


def _spec(r: pd.Series) -> dict[str, Any]:
    """The run's spec: read once by the store scan (``load_results`` puts it in the ``spec`` column), else from
    its folder."""
    spec = r.get("spec")
    if isinstance(spec, dict):
        return spec
    p = Path(r["dir"]) / "spec.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _protocol_limits(runs: pd.DataFrame) -> tuple[dict[str, set[str]], set[str]]:
    """Where the trained runs fall below the paper protocol, and which models skipped pretrained weights their
    card offers: ``({limit: models}, models)``."""
    paper = ProtocolConfig()
    below: dict[str, set[str]] = {}
    scratch: set[str] = set()
    for _, r in runs.iterrows():
        if r.get("family") == "external":
            continue
        spec = _spec(r)
        p = spec.get("protocol", {})
        for key, name in (("input_size", "input size"), ("epochs", "epochs")):
            if key in p and p[key] < getattr(paper, key):
                below.setdefault(f"{name} {p[key]} (paper protocol: {getattr(paper, key)})", set()).add(r["model"])
        if p.get("max_steps_per_epoch"):
            below.setdefault(f"at most {p['max_steps_per_epoch']} steps per epoch (paper protocol: full epochs)",
                             set()).add(r["model"])
        if not spec.get("model", {}).get("pretrained", False) and _offers_weights(r["model"]):
            scratch.add(r["model"])
    return below, scratch


def _offers_weights(model: str) -> bool:
    """Whether the model's card lists pretrained weights (unknown models: no). Read from the card catalogue, so a
    report never imports torch or the zoo; only by-name models (``smp:...``), which have no catalogued card, are
    resolved through the registry."""
    card = _catalogue().get(model)
    if card is not None:
        return bool(card.get("pretrained"))
    if ":" not in model:
        return False  # a model of another installation: no claim either way
    try:
        from ..models import MODELS

        return bool(MODELS.get(model).card.pretrained)
    except Exception:  # noqa: BLE001 - unresolvable by-name model: no claim either way
        return False


@functools.lru_cache(maxsize=1)
def _catalogue() -> dict[str, dict[str, Any]]:
    from .._model_catalog import cards

    return {c["name"]: c for c in cards()[0]}


def _caveats(runs: pd.DataFrame, failed: pd.DataFrame, datasets: dict[str, Any]) -> list[str]:
    """The design limits of these results, each one sentence (docs/evaluation.md, "Caveat rule")."""
    out: list[str] = []
    below, scratch = _protocol_limits(runs)
    if below:
        out.append("These runs use a reduced protocol (" + "; ".join(sorted(below)) + "), e.g. the CPU-demo "
                   "preset: they show the pipeline working, not how the architectures compare.")
    if scratch:
        out.append(f"{', '.join(sorted(scratch))} trained without the pretrained weights their cards offer: "
                   "such models are normally fine-tuned from them and are at a disadvantage here.")
    for ds, d in datasets.items():
        planned = d.get("planned_folds")
        if planned and d["n_folds"] < planned:
            out.append(f"{ds}: {_folds(d['n_folds'])} of the planned {planned} evaluated; the results rest on "
                       f"{d['n_cases']} test cases of {', '.join(f'fold {f}' for f in d['folds'])} only.")
        if d["n_cases"] < MIN_CASES:
            out.append(f"{ds}: only {d['n_cases']} paired test cases (fewer than {MIN_CASES}); significance "
                       "statements there are withheld and differences are indicative only.")
        if d.get("excluded"):
            out.append(f"{ds}: models were compared on the {d['n_cases']} cases every model has; left out: " +
                       ", ".join(f"{n} case(s) of {m}" for m, n in sorted(d["excluded"].items())) + ".")
    if not failed.empty:
        out.append(f"{len(failed)} run(s) did not complete and are not in any comparison: " + ", ".join(
            f"{r['model']} on {r['dataset']} fold {r['fold']} ({r['state']})" for _, r in failed.iterrows()) + ".")
    ext = sorted(set(runs.loc[runs.get("family", pd.Series(dtype=str)) == "external", "model"])) \
        if "family" in runs else []
    if ext:
        out.append(f"{', '.join(ext)}: scored from supplied prediction masks (segarena add-method); how they "
                   "were trained is not known to segarena.")
    return out


def _replicate_ranks(reps: np.ndarray) -> np.ndarray:
    """Ranks (1 = best, ties averaged) of the models' replicate scores, one row per replicate."""
    return st.rankdata(-reps, axis=1, method="average")


def _dataset(ds: str, cases: pd.DataFrame, alpha: float, n_boot: int, seed: int) -> dict[str, Any]:
    """The verdict of one dataset (see the module docstring for the rule)."""
    key = ["fold", "case_id"]
    models = sorted(cases["model"].unique(), key=str)
    per = cases.groupby(["model", *key], as_index=False).agg(dice=("dice", "mean"), num=("num", "sum"),
                                                            den=("den", "sum"), ref_empty=("ref_empty", "all"))
    have = {m: set(map(tuple, g[key].itertuples(index=False, name=None))) for m, g in per.groupby("model")}
    common = set.intersection(*have.values())
    excluded = {m: len(s - common) for m, s in have.items() if len(s - common)}
    units = sorted(common, key=lambda t: (t[0], str(t[1])))
    out: dict[str, Any] = {"metric": METRIC, "metric_label": METRIC_LABEL, "models_compared": models,
                           "n_cases": len(units), "folds": sorted({int(u[0]) for u in units}),
                           "n_seeds": int(cases["seed"].nunique()), "excluded": excluded}
    out["n_folds"] = len(out["folds"])
    if not units:
        out.update(anchor=None, estimates={}, pooled_mdsc={}, models={}, ranks={}, empty_reference_cases=0)
        return out
    idx = pd.MultiIndex.from_tuples(units, names=key)
    wide = {c: per.pivot_table(index=key, columns="model", values=c, aggfunc="first").reindex(idx)[models]
            for c in ("dice", "num", "den")}
    dice = wide["dice"].to_numpy(np.float64)
    out["empty_reference_cases"] = int(per[per.set_index(key).index.isin(idx)].groupby(key)["ref_empty"]
                                       .all().sum())
    res = stats.Resample(len(units), n_boot=n_boot, seed=seed, strata=[u[0] for u in units])
    reps = res.ratio(dice)  # n_boot x models: mean per-case Dice
    pooled_reps = res.ratio(wide["num"].to_numpy(np.float64), wide["den"].to_numpy(np.float64))
    est = dice.mean(axis=0)
    num, den = wide["num"].to_numpy(np.float64).sum(0), wide["den"].to_numpy(np.float64).sum(0)
    n_folds = out["n_folds"]
    out["estimates"], out["pooled_mdsc"] = {}, {}
    for j, m in enumerate(models):
        ci = stats.percentile_ci(float(est[j]), reps[:, j])
        out["estimates"][m] = {"estimate": ci.estimate, "ci": [ci.low, ci.high], "n_cases": len(units),
                               "n_folds": n_folds}
        pci = stats.percentile_ci(float(num[j] / den[j]) if den[j] else float("nan"), pooled_reps[:, j])
        out["pooled_mdsc"][m] = {"estimate": pci.estimate, "ci": [pci.low, pci.high], "n_cases": len(units),
                                 "n_folds": n_folds}
    order = sorted(range(len(models)), key=lambda j: (-est[j], str(models[j])))
    anchor = models[order[0]]
    out["anchor"] = anchor
    # every pair: Wilcoxon + Holm over the dataset's pairs (the family "which models differ here")
    pairs = []
    for a, b in itertools.combinations(range(len(models)), 2):
        _, p = stats.wilcoxon_paired(dice[:, a], dice[:, b])
        pairs.append({"a": a, "b": b, "p": p})
    for pr, q in zip(pairs, stats.holm([pr["p"] for pr in pairs])):
        pr["p_holm"] = float(q)
    pmap = {(pr["a"], pr["b"]): pr for pr in pairs} | {(pr["b"], pr["a"]): pr for pr in pairs}
    qualified = len(units) < MIN_CASES
    out["qualified"] = qualified
    out["models"], out["pairwise"] = {}, []
    ja = order[0]

    def relation(x: int, y: int) -> tuple[str, dict[str, Any]]:
        pr = pmap[(x, y)]
        d = float(est[x] - est[y])
        ci = stats.percentile_ci(d, reps[:, x] - reps[:, y])
        rb = stats.rank_biserial(dice[:, x], dice[:, y])
        sig = pr["p_holm"] < alpha
        rel = "better" if sig and d > 0 and rb > 0 else "worse" if sig and d < 0 and rb < 0 else "tied"
        rec = {"relation": rel, "difference": d, "ci": [ci.low, ci.high], "p": pr["p"], "p_holm": pr["p_holm"],
               "n": len(units), "n_folds": n_folds, "rank_biserial": rb}
        if sig and rel == "tied":
            rec["note"] = "significant test, but the mean difference and the ranks point in opposite directions"
        return rel, rec

    for j in order[1:]:
        _, rec = relation(j, ja)
        out["models"][models[j]] = rec
    for a, b in itertools.combinations(order, 2):
        _, rec = relation(b, a)  # the lower-listed model against the higher-listed one
        out["pairwise"].append({"model": models[b], "versus": models[a], **rec})
    ranks = _replicate_ranks(reps)
    first = ranks == ranks.min(axis=1, keepdims=True)
    full = st.rankdata(-est, method="average")
    out["ranks"] = {m: {"rank": float(full[j]), "mean_rank": float(ranks[:, j].mean()),
                        "median_rank": float(np.median(ranks[:, j])),
                        "ci": [float(np.quantile(ranks[:, j], 0.025)), float(np.quantile(ranks[:, j], 0.975))],
                        "p_first": float(first[:, j].mean())} for j, m in enumerate(models)}
    out["rank_replicates"] = ranks  # for the blob plot; removed before writing JSON
    notes = []
    tied_top = [models[j] for j in order[1:] if est[j] == est[ja]]
    if tied_top:
        notes.append(f"{anchor} and {', '.join(tied_top)} have exactly the same mean {METRIC_LABEL}; {anchor} is "
                     "the anchor only because its name sorts first.")
    top_pooled = max(models, key=lambda m: (out["pooled_mdsc"][m]["estimate"], m == anchor))
    if top_pooled != anchor:
        notes.append(f"On pooled mDSC (the paper's column, descriptive only) {top_pooled} is highest "
                     f"({pct(out['pooled_mdsc'][top_pooled]['estimate'])}% vs "
                     f"{pct(out['pooled_mdsc'][anchor]['estimate'])}%"
                     f" for {anchor}); the verdict metric is {METRIC_LABEL}, on which {anchor} is highest.")
    top_boot = max(models, key=lambda m: (out["ranks"][m]["p_first"], m == anchor))
    if top_boot != anchor and out["ranks"][top_boot]["p_first"] > out["ranks"][anchor]["p_first"]:
        notes.append(f"In the bootstrap, {top_boot} ranks first more often than {anchor} (P(rank 1) "
                     f"{out['ranks'][top_boot]['p_first']:.2f} vs {out['ranks'][anchor]['p_first']:.2f}).")
    out["anchor_notes"] = notes
    return out


def sentences(ds: str, d: dict[str, Any], alpha: float = 0.05, reduced: bool = False) -> tuple[str, list[str]]:
    """The summary line of one dataset and one sentence per pair, each naming metric, cases and folds."""
    n, k = d["n_cases"], d["n_folds"]
    base = f"{n} paired test cases, {_folds(k)}"
    if d["anchor"] is None:
        return f"On {ds}, no test case was evaluated for every model; no comparison is made.", []
    a = d["anchor"]
    e = d["estimates"][a]
    if len(d["models_compared"]) == 1:
        return (f"On {ds}, only {a} was evaluated: {METRIC_LABEL} {pct(e['estimate'])}% (95% CI "
                f"{pct(e['ci'][0])}–{pct(e['ci'][1])}%), {n} test cases, {_folds(k)}.", [])
    line = (f"On {ds}, {a} has the highest mean {METRIC_LABEL}: {pct(e['estimate'])}% (95% CI "
            f"{pct(e['ci'][0])}–{pct(e['ci'][1])}%; {base}).")
    groups: dict[str, list[str]] = {"tied": [], "worse": [], "better": [], "mixed": []}
    for m, r in d["models"].items():
        groups["mixed" if "note" in r else r["relation"]].append(
            f"{m} ({pts(r['difference'])} points, {fmt_p(r['p_holm'])})")
    words = {"tied": "statistically tied with it", "worse": "significantly worse", "better": "significantly better",
             "mixed": "no verdict (the test is significant, but the mean difference and the ranks disagree in "
                      "direction)"}
    if d["qualified"]:
        words |= {"tied": "not distinguishable from it", "worse": "lower (indicative only)",
                  "better": "higher (indicative only)"}
    for rel in ("better", "tied", "mixed", "worse"):
        if groups[rel]:
            line += f" {words[rel][0].upper() + words[rel][1:]} on {METRIC_LABEL}: {', '.join(groups[rel])}."
    line += f" (Wilcoxon signed-rank on the same {n} cases, Holm-adjusted, alpha {alpha}.)"
    if d["qualified"]:
        line += f" Fewer than {MIN_CASES} paired cases: no claim of significance is made."
    if reduced:
        line += " These tests concern these reduced-protocol runs only, not the architectures (see Caveats)."
    for note in d["anchor_notes"]:
        line += " Note: " + note
    pair_lines = []
    for r in d["pairwise"]:
        m, v = r["model"], r["versus"]
        num = (f"difference {pts(r['difference'])} points (95% CI {pts(r['ci'][0])} to {pts(r['ci'][1])}), "
               f"{fmt_p(r['p_holm'])} Holm, {base}")
        if "note" in r:
            verb = "has no verdict against"
            num += "; the test is significant, but the mean difference and the ranks disagree in direction"
        elif d["qualified"]:  # too few paired cases: the direction only, no significance claim
            verb = {"tied": "is not distinguishable from", "worse": "scored lower (indicative only) than",
                    "better": "scored higher (indicative only) than"}[r["relation"]]
        else:
            verb = {"tied": "is statistically tied with", "worse": "is significantly worse than",
                    "better": "is significantly better than"}[r["relation"]]
        pair_lines.append(f"{m} {verb} {v} on {METRIC_LABEL} on {ds} ({num}).")
    return line, pair_lines


def build_verdicts(cases: pd.DataFrame, runs: pd.DataFrame, failed: pd.DataFrame, *, alpha: float = 0.05,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``report.json``'s content: per-dataset verdicts, ranks, consensus, caveats and the sentences."""
    report: dict[str, Any] = {"schema": SCHEMA, "alpha": alpha, "n_boot": n_boot, "verdict_metric": METRIC,
                              "datasets": {}, "caveats": [], "summary": [], "pairwise": [], "consensus": None,
                              "missing_runs": failed.to_dict("records") if not failed.empty else []}
    planned: dict[str, int] = {}
    for _, r in runs.iterrows():
        spec = _spec(r)
        planned[r["dataset"]] = max(planned.get(r["dataset"], 0), int(spec.get("data", {}).get("num_folds", 0)))
    reduced = bool(_protocol_limits(runs)[0]) if not runs.empty else False
    report["reduced_protocol"] = reduced
    for ds, g in (cases.groupby("dataset", sort=True) if not cases.empty else []):
        d = _dataset(str(ds), g, alpha, n_boot, seed)
        d["planned_folds"] = planned.get(ds)
        report["datasets"][str(ds)] = d
        line, pair = sentences(str(ds), d, alpha, reduced)
        report["summary"].append(line)
        report["pairwise"] += pair
    dsets = {k: v for k, v in report["datasets"].items() if v["anchor"] is not None}
    if len(dsets) > 1:
        rows = [{"dataset": ds, "model": m, "rank": r["rank"]} for ds, d in dsets.items()
                for m, r in d["ranks"].items()]
        cons = stats.consensus_ranking(pd.DataFrame(rows))
        report["consensus"] = {"metric": METRIC, "n_datasets": len(dsets), "ranking": [
            {"model": r.model, "mean_rank": float(r.mean_rank), "n_datasets": int(r.n_datasets),
             "consensus_rank": int(r.consensus_rank)} for r in cons.itertuples()]}
    for ds, d in report["datasets"].items():
        if d.get("empty_reference_cases"):
            report["summary"].append(
                f"On {ds}, {d['empty_reference_cases']} of the {d['n_cases']} compared test cases "
                f"({_folds(d['n_folds'])}) have an empty reference mask; there per-case Dice is 1 for an empty "
                "prediction and 0 for any other.")
    report["caveats"] = _caveats(runs, failed, report["datasets"])
    return report


def to_json(report: dict[str, Any]) -> str:
    """``report.json`` text: the report dict without the array-valued helper fields."""
    clean = {**report, "datasets": {ds: {k: v for k, v in d.items() if k != "rank_replicates"}
                                    for ds, d in report["datasets"].items()}}

    def plain(o: Any) -> Any:  # strict JSON: NaN/inf become null, numpy scalars Python numbers
        if isinstance(o, dict):
            return {str(k): plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        if isinstance(o, np.generic):
            o = o.item()
        if isinstance(o, float) and not np.isfinite(o):
            return None
        return o if isinstance(o, (str, int, float, bool)) or o is None else str(o)

    return json.dumps(plain(clean), indent=1, allow_nan=False)
