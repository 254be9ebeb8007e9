"""Rendering of a report context (see ``build.build_report``) as Markdown, self-contained HTML and LaTeX."""
from __future__ import annotations

import html
import json
import math
from typing import Any

import pandas as pd

from ..metrics.overlap import DESCRIPTIONS


def _pct(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:.1f}"


def _pm(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}" if not math.isnan(std) else \
        f"{mean * scale:.{digits}f}"


LB_HEAD = ["dataset", "model", "family", "mDSC % (mean ± std over folds)", "mDSC % pooled [95% CI]", "vs best",
           "case Dice %", "mIoU %", "HD95", "NSD %", "folds", "params (M)", "train (min/run)"]
MARKS = {"★": "best", "≈": "tied with best", "↓": "significantly worse than best"}


def leaderboard_rows(ctx: dict[str, Any]) -> list[list[str]]:
    lb, ev = ctx["lb"], ctx["evidence"]
    ci = {(r["dataset"], r["model"]): r for _, r in ev.ci.iterrows()} if not ev.ci.empty else {}
    rows = []
    for _, r in lb.iterrows():
        c = ci.get((r["dataset"], r["model"]))
        pooled = f"{c['estimate'] * 100:.1f} [{c['low'] * 100:.1f}, {c['high'] * 100:.1f}]" if c is not None else "–"
        rows.append([r["dataset"], r["model"], r["family"], _pm(r["mdsc_mean"], r["mdsc_std"]), pooled,
                     ev.marks.get((r["dataset"], r["model"]), ""),
                     _pm(r["dice_case_mean_mean"], r["dice_case_mean_std"]), _pm(r["miou_mean"], r["miou_std"]),
                     _pm(r.get("hd95_mean_mean", float("nan")), r.get("hd95_mean_std", float("nan")), 1.0),
                     _pm(r.get("nsd_mean_mean", float("nan")), r.get("nsd_mean_std", float("nan"))),
                     str(int(r["folds"])), f"{r['params_m']:.1f}", f"{r['train_min']:.1f}"])
    return rows


def _search_rows(search: pd.DataFrame, chosen: dict[tuple[str, str], float]) -> list[list[str]]:
    rows = []
    if search.empty:
        return rows
    for (ds, m), g in search.sort_values(["dataset", "model", "lr"]).groupby(["dataset", "model"]):
        best = chosen.get((m, ds), g.loc[g["val_mdsc"].idxmax(), "lr"])
        rows.append([ds, m, ", ".join(f"{r.lr:g}: {r.val_mdsc * 100:.1f}" + (" ✓" if r.lr == best else "")
                                      for r in g.itertuples())])
    return rows


def _sections(ctx: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(title, kind, payload) in reading order; kind: para, list, table, images, gallery, code."""
    ev = ctx["evidence"]
    out: list[tuple[str, str, Any]] = []
    summary = ev.summary or ["No complete test runs yet."]
    if ev.friedman:
        f = ev.friedman
        summary.append(f"Across all models, Friedman test over {f['blocks']}: p={f['p']:.2g}; models whose average "
                       f"ranks differ by less than the critical difference {f['cd']:.2f} are not significantly "
                       f"different (Nemenyi, alpha {f['alpha']}).")
    if not ev.consensus.empty and ev.cases["dataset"].nunique() > 1:
        summary.append("Consensus ranking across datasets (mean rank): " + ", ".join(
            f"{r.model} ({r.mean_rank:.1f})" for r in ev.consensus.itertuples()) + ".")
    out.append(("Summary", "list", summary))
    out.append(("Leaderboard", "table", (LB_HEAD, leaderboard_rows(ctx),
               "mDSC: " + DESCRIPTIONS["mdsc"] + ". Pooled CI: percentile bootstrap over test cases (stratified by "
               "fold). vs best: ★ best, ≈ statistically tied with the best, ↓ significantly worse (Wilcoxon "
               "signed-rank on per-case Dice, Holm). HD95 in mm where the pixel size is known, else pixels.")))
    pc = ctx["pc"]
    if not pc.empty:
        out.append(("Per-class Dice", "table", (["dataset", "class", "model", "Dice % (pooled per fold, mean ± std)"],
                    [[r["dataset"], r["class"], r["model"], _pm(r["mean"], r["std"])] for _, r in pc.iterrows()],
                    "")))
    if ev.sentences:
        out.append(("Pairwise comparisons", "list", ev.sentences))
    figs = [(k, v) for k, v in ev.figures.items() if k in ("cd_diagram", "rank_stability")]
    if figs:
        title = "Critical difference and rank stability" if "cd_diagram" in ev.figures else "Rank stability"
        out.append((title, "images", figs))
    if not ev.ranks.empty:
        out.append(("Bootstrap ranks", "table", (["dataset", "model", "mean rank", "95% interval", "P(rank 1)"],
                    [[r.dataset, r.model, f"{r.mean_rank:.2f}", f"{r.low:.0f}–{r.high:.0f}", f"{r.p_first:.2f}"]
                     for r in ev.ranks.itertuples()], "")))
    if not ev.variance.empty:
        out.append(("Seed versus fold variance", "table", (list(ev.variance.columns),
                    [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
                     for row in ev.variance.itertuples(index=False)], "")))
    pareto = [(k.split(":", 1)[1], v) for k, v in ev.figures.items() if k.startswith("pareto:")]
    if pareto:
        out.append(("Accuracy versus cost", "images", pareto))
    if ev.cross:
        gaps = ev.cross["gaps"]
        out.append(("Cross-dataset generalization", "images",
                    [(k.split(":", 1)[1], v) for k, v in ev.figures.items() if k.startswith("cross:")]))
        if not gaps.empty:
            out.append(("Generalization gaps", "table", (["model", "trained on", "tested on", "in-domain %",
                                                          "out-of-domain %", "gap [95% CI]"],
                        [[r.model, r.train, r.test, _pct(r.in_domain), _pct(r.out_of_domain),
                          f"{r.gap * 100:+.1f} [{r.gap_ci_low * 100:+.1f}, {r.gap_ci_high * 100:+.1f}]"]
                         for r in gaps.itertuples()], "in-domain minus out-of-domain pooled Dice; bootstrap over "
                                                       "cases of both sides")))
    if ctx["curves"]:
        out.append(("Training curves", "images", list(ctx["curves"].items())))
    if ctx["gallery"]:
        out.append(("Best and worst test cases", "gallery", ctx["gallery"]))
    if not ev.xai.empty:
        out.append(("Explainability (Grad-CAM)", "table", (["dataset", "model", "measure", "mean [95% CI]", "cases"],
                    [[r.dataset, r.model, r.measure, f"{r.estimate:.3f} [{r.low:.3f}, {r.high:.3f}]", str(r.n)]
                     for r in ev.xai.itertuples()], "energy_in_gt: share of CAM energy inside the reference region "
                                                    "(higher is better); deletion_auc: area under the deletion curve "
                                                    "(lower is more faithful)")))
    if ev.xai_images:
        out.append(("Grad-CAM galleries", "gallery", {(k, ""): v for k, v in ev.xai_images.items()}))
    if not ctx["search"].empty:
        out.append(("Learning-rate search (validation data only)", "table",
                    (["dataset", "model", "validation mDSC % per learning rate (✓ chosen)"],
                     _search_rows(ctx["search"], ctx.get("chosen_lr", {})), "")))
    if ev.curation:
        out.append(("Data curation", "table", (["dataset", "cases used", "folds", "exact dup. clusters",
                                                "near dup. clusters", "cases in clusters", "policy", "removed",
                                                "examples"],
                    [[c["dataset"], str(c["cases"]), str(c["num_folds"]), str(c["exact_duplicate_clusters"]),
                      str(c["near_duplicate_clusters"]), str(c["cases_in_duplicate_clusters"]), c["policy"],
                      str(c["removed"]), c["examples"]] for c in ev.curation],
                    "Duplicates: same bytes, or perceptual hash within 4 bits. Policy 'group' keeps each cluster "
                    "in one fold (never split across train and test); 'remove' keeps one image per cluster, as "
                    "the paper did.")))
    if ctx["protocols"]:
        out.append(("Protocol", "code", "\n\n".join(json.dumps(p, indent=1, sort_keys=True)
                                                  for p in ctx["protocols"])))
    env = ctx["environment"]
    out.append(("Environment", "code", json.dumps(env, indent=1, sort_keys=True)))
    if ctx["commands"]:
        out.append(("Commands that produced these results", "code", "\n".join(ctx["commands"])))
    failed = ctx["failed"]
    if not failed.empty:
        out.append(("Runs not complete", "table", (["run", "state", "error"],
                    [[r["run"], r["state"], str(r["error"])] for _, r in failed.iterrows()], "")))
    return out


# ---- Markdown -------------------------------------------------------------------------------------------------
def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |"
                                                                                  for r in esc])


def render_markdown(ctx: dict[str, Any]) -> str:
    parts = ["# segarena report", ""]
    for title, kind, payload in _sections(ctx):
        parts += [f"## {title}", ""]
        if kind == "list":
            parts += [f"- {line}" for line in payload]
        elif kind == "table":
            head, rows, note = payload
            parts.append(_md_table(head, rows) if rows else "_none_")
            if note:
                parts += ["", f"_{note}_"]
        elif kind == "code":
            parts += ["```", payload, "```"]
        elif kind in ("images", "gallery"):
            parts.append("_figures: see report.html_")
        parts.append("")
    return "\n".join(parts)


# ---- HTML -----------------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.45}table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccc;
padding:3px 7px;text-align:right}th{background:#f3f3f3}td:nth-child(-n+3){text-align:left}img{max-width:100%}
.gal img{max-height:170px;margin:3px}.note{color:#555;font-size:12.5px}pre{background:#f7f7f7;padding:.6em;
overflow:auto;font-size:12px}ul.summary li{margin:.3em 0}figure{display:inline-block;margin:4px}"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _img(name: str, b64: str) -> str:
    return (f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption class='note'>{html.escape(name)}</figcaption></figure>")


def render_html(ctx: dict[str, Any]) -> str:
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>segarena report</title>"
             "<link rel='icon' href='data:,'>"
             f"<style>{CSS}</style></head><body><h1>segarena report</h1>"]
    for title, kind, payload in _sections(ctx):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if kind == "list":
            parts.append("<ul class='summary'>" + "".join(f"<li>{html.escape(x)}</li>" for x in payload) + "</ul>")
        elif kind == "table":
            head, rows, note = payload
            parts.append(_html_table(head, rows) if rows else "<p>none</p>")
            if note:
                parts.append(f"<p class='note'>{html.escape(note)}</p>")
        elif kind == "code":
            parts.append(f"<pre>{html.escape(payload)}</pre>")
        elif kind == "images":
            parts.append("<div>" + "".join(_img(n, b) for n, b in payload) + "</div>")
        elif kind == "gallery":
            parts.append("<p class='note'>image | overlay: reference outline green, prediction red; name: rank, "
                         "case id and its Dice.</p>")
            for (ds, model), imgs in payload.items():
                label = f"{model} on {ds}" if model else ds
                parts.append(f"<h3>{html.escape(label)}</h3><div class='gal'>" +
                             "".join(_img(n, b) for n, b in imgs) + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- LaTeX ----------------------------------------------------------------------------------------------------
def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("★", r"$\star$"), ("≈", r"$\approx$"), ("↓", r"$\downarrow$"),
                 ("–", "--")):
        s = s.replace(a, b)
    return s


def render_latex(ctx: dict[str, Any]) -> str:
    """The leaderboard and per-class tables as booktabs tables, ready for a paper."""
    rows = leaderboard_rows(ctx)
    cols = [0, 1, 3, 4, 5, 8, 9, 11]
    head = [LB_HEAD[i] for i in cols]
    lines = [r"% generated by segarena; needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             r"\caption{Test results (mean $\pm$ std over folds; pooled mDSC with 95\% bootstrap CI).}",
             r"\begin{tabular}{" + "l" * 2 + "r" * (len(cols) - 2) + "}", r"\toprule",
             " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(str(r[i])) for i in cols) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    pc = ctx["pc"]
    if not pc.empty:
        lines += [r"\begin{table}[t]", r"\centering", r"\caption{Per-class Dice (\%).}",
                  r"\begin{tabular}{lllr}", r"\toprule", r"dataset & class & model & Dice \\", r"\midrule"]
        lines += [f"{_tex(r['dataset'])} & {_tex(r['class'])} & {_tex(r['model'])} & {_tex(_pm(r['mean'], r['std']))}"
                  + r" \\" for _, r in pc.iterrows()]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
