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


LB_HEAD = ["dataset", "model", "family", "per-case Dice % [95% CI] (verdict)", "vs anchor",
           "mDSC % pooled [95% CI]", "mDSC % (mean ± std over runs)", "case Dice % (mean ± std over runs)", "mIoU %",
           "HD95", "NSD %", "runs", "params (M)", "train (min/run)"]
MARKS = {"★": "anchor (highest per-case Dice)", "≈": "statistically tied with the anchor",
         "↓": "significantly worse than the anchor", "↑": "significantly better than the anchor"}


def _ci(rec: dict[str, Any] | None) -> str:
    if not rec or rec.get("estimate") is None:
        return "–"
    lo, hi = rec["ci"]
    return f"{_pct(rec['estimate'])} [{_pct(lo)}, {_pct(hi)}]"


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def leaderboard_rows(ctx: dict[str, Any]) -> list[list[str]]:
    """Leaderboard rows from ``report.json``'s ``leaderboard`` records (so every rendering shows the same)."""
    rows = []
    for r in ctx["report"].get("leaderboard", []):
        g = lambda k: _num(r.get(k))  # noqa: E731
        rows.append([r["dataset"], r["model"], r["family"], _ci(r["verdict"]), r["mark"], _ci(r["pooled_mdsc"]),
                     _pm(g("mdsc_mean"), g("mdsc_std")), _pm(g("dice_case_mean_mean"), g("dice_case_mean_std")),
                     _pm(g("miou_mean"), g("miou_std")), _pm(g("hd95_mean_mean"), g("hd95_mean_std"), 1.0),
                     _pm(g("nsd_mean_mean"), g("nsd_mean_std")), str(r["runs"]),
                     "–" if math.isnan(g("params_m")) else f"{g('params_m'):.1f}",
                     "–" if math.isnan(g("train_min")) else f"{g('train_min'):.1f}"])
    return rows


def _verdict_sections(rep: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Caveats, summary, leaderboard note, pairwise sentences, ranks and consensus: all from ``report.json``."""
    out: list[tuple[str, str, Any]] = []
    if rep.get("caveats"):
        out.append(("Caveats", "list", list(rep["caveats"])))
    summary = list(rep.get("summary") or ["No complete test runs yet."])
    f = rep.get("friedman")
    if f:
        summary.append(f"Across the models evaluated everywhere, Friedman test on per-case Dice over {f['blocks']}: "
                       f"p={f['p']:.2g}; models whose average ranks differ by less than the critical difference "
                       f"{f['cd']:.2f} are not significantly different (Nemenyi, alpha {f['alpha']})." +
                       (" Indicative only: fewer than 20 paired cases." if any(
                           d.get("qualified") for d in rep.get("datasets", {}).values()) else ""))
    out.append(("Summary", "list", summary))
    return out


def _rank_rows(rep: dict[str, Any]) -> list[list[str]]:
    rows = []
    for ds, d in rep.get("datasets", {}).items():
        if len(d.get("models_compared", [])) < 2 or not d.get("ranks"):
            continue
        for m, r in sorted(d["ranks"].items(), key=lambda kv: (kv[1]["rank"], kv[0])):
            rows.append([ds, m, f"{r['rank']:g}", f"{r['mean_rank']:.2f}", f"{r['ci'][0]:g}–{r['ci'][1]:g}",
                         f"{r['p_first']:.2f}", str(d["n_cases"]), str(d["n_folds"])])
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


#: what each figure shows and which direction is better (the opening figures carry theirs from ``figures.py``)
CAPTIONS = {
    "rank_stability": "Bootstrap rank distribution of each model (per-case Dice on the common test cases, the same "
                      "resampled cases for every model): a circle's area is how often the model takes that rank, "
                      "the cross its median rank. Rank 1 is best; a model spread over several ranks is not "
                      "reliably placed.",
    "cd_diagram": "Critical-difference diagram (Friedman + Nemenyi): each model at its average rank (lower is "
                  "better); models joined by a thick bar differ by less than the critical difference and are not "
                  "significantly different.",
    "pareto": "{}: pooled mDSC on the test cases (higher is better) against forward GMACs per image (lower is "
              "cheaper, log scale); the step line joins the models that no other model beats on both.",
    "cross": "{}: pooled mDSC % when trained on the row's dataset and tested on the column's (higher is better); "
             "the diagonal is in-domain, the rest out-of-domain.",
    "curves": "{}: training loss (lower is better) and validation mDSC (higher is better) by epoch; each line is "
              "the mean over a model's runs (folds, seeds), the band spans its lowest to highest run.",
}


def _sections(ctx: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(title, kind, payload) in reading order; kind: para, list, table, images, gallery, code."""
    ev, rep = ctx["evidence"], ctx["report"]
    out = [("The verdict at a glance", "figures", ctx["verdict_figures"])] if ctx.get("verdict_figures") else []
    out += _verdict_sections(rep)
    out.append(("Leaderboard", "table", (LB_HEAD, leaderboard_rows(ctx),
               "Verdict metric: per-case Dice (mean over foreground classes of each case; empty-mask policy applies), "
               "mean over the test cases every model has, 95% percentile-bootstrap CI over cases (stratified by "
               "fold). vs anchor: " + ", ".join(f"{k} {v}" for k, v in MARKS.items()) + " (two-sided Wilcoxon "
               "signed-rank on the paired per-case Dice, Holm-adjusted over the dataset's pairs, alpha "
               f"{rep.get('alpha', 0.05)}). mDSC: " + DESCRIPTIONS["mdsc"] + ", descriptive only, CI on the same "
               "bootstrap draws. mean ± std: over the runs (folds, seeds), as in the paper's table. HD95 in mm "
               "where the pixel size is known, else pixels.")))
    pc = ctx["pc"]
    if not pc.empty:
        out.append(("Per-class Dice", "table", (["dataset", "class", "model", "Dice % (pooled per fold, mean ± std)"],
                    [[r["dataset"], r["class"], r["model"], _pm(r["mean"], r["std"])] for _, r in pc.iterrows()],
                    "")))
    if rep.get("pairwise"):
        out.append(("Pairwise comparisons", "list", list(rep["pairwise"])))
    figs = [(k, CAPTIONS[k], v) for k, v in ev.figures.items() if k in ("cd_diagram", "rank_stability")]
    if figs:
        title = "Critical difference and rank stability" if "cd_diagram" in ev.figures else "Rank stability"
        out.append((title, "figures", figs))
    ranks = _rank_rows(rep)
    if ranks:
        out.append(("Bootstrap ranks", "table", (["dataset", "model", "rank", "mean rank", "95% interval",
                                                 "P(rank 1)", "cases", "folds"], ranks,
                    "Ranks on per-case Dice over the common cases (1 = best, ties share the mean rank), in each "
                    "bootstrap replicate of the cases; P(rank 1) counts every model sharing the best rank.")))
    cons = rep.get("consensus")
    if cons:
        out.append(("Consensus ranking", "table", (["consensus rank", "model", "mean rank", "datasets"],
                    [[str(r["consensus_rank"]), r["model"], f"{r['mean_rank']:.2f}", str(r["n_datasets"])]
                     for r in cons["ranking"]],
                    f"Mean of the per-dataset ranks on per-case Dice over {cons['n_datasets']} datasets "
                    "(challengeR's 'average' consensus).")))
    if not ev.variance.empty:
        out.append(("Seed versus fold variance", "table", (list(ev.variance.columns),
                    [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
                     for row in ev.variance.itertuples(index=False)], "")))
    pareto = [(k.split(":", 1)[1], CAPTIONS["pareto"].format(k.split(":", 1)[1]), v)
              for k, v in ev.figures.items() if k.startswith("pareto:")]
    if pareto:
        out.append(("Accuracy versus cost", "figures", pareto))
    if ev.cross:
        gaps = ev.cross["gaps"]
        out.append(("Cross-dataset generalization", "figures",
                    [(k.split(":", 1)[1], CAPTIONS["cross"].format(k.split(":", 1)[1]), v)
                     for k, v in ev.figures.items() if k.startswith("cross:")]))
        if not gaps.empty:
            out.append(("Generalization gaps", "table", (["model", "trained on", "tested on", "in-domain %",
                                                          "out-of-domain %", "gap [95% CI]"],
                        [[r.model, r.train, r.test, _pct(r.in_domain), _pct(r.out_of_domain),
                          f"{r.gap * 100:+.1f} [{r.gap_ci_low * 100:+.1f}, {r.gap_ci_high * 100:+.1f}]"]
                         for r in gaps.itertuples()], "in-domain minus out-of-domain pooled Dice; bootstrap over "
                                                       "cases of both sides")))
    if ctx["curves"]:
        out.append(("Training curves", "figures", [(ds, CAPTIONS["curves"].format(ds), v)
                                                   for ds, v in ctx["curves"].items()]))
    if ctx["gallery"]:
        out.append(("Best and worst test cases", "gallery", ctx["gallery"]))
    if rep.get("xai"):
        out.append(("Explainability (Grad-CAM)", "table", (["dataset", "model", "method", "measure",
                                                            "mean [95% CI]", "cases"],
                    [[r["dataset"], r["model"], r["method"], r["measure"],
                      f"{r['estimate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]", str(r["n_cases"])]
                     for r in rep["xai"]], "energy_share: share of CAM energy inside the reference region "
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
    missing = rep.get("missing_runs", [])
    if missing:
        out.append(("Runs not complete", "table", (["run", "model", "dataset", "fold", "state", "error"],
                    [[r["run"], r["model"], r["dataset"], str(r["fold"]), r["state"], str(r["error"])]
                     for r in missing], "Not part of any comparison above.")))
    return out


# ---- Markdown -------------------------------------------------------------------------------------------------
def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |"
                                                                                  for r in esc])


def render_markdown(ctx: dict[str, Any]) -> str:
    from .figures import figure_key

    files = ctx.get("figure_files", {})  # image -> file under report/figures/ (written by build_report)
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
        elif kind == "figures":
            for name, caption, b64 in payload:
                parts += [f"![{name}]({files.get(figure_key(b64), '')})", "", f"_{caption}_", ""]
        elif kind == "gallery":
            for (ds, model), imgs in payload.items():
                parts += [f"**{model} on {ds}**" if model else f"**{ds}**", ""]
                parts += [f"![{name}]({files.get(figure_key(b64), '')})" for name, b64 in imgs]
                parts.append("")
        parts.append("")
    return "\n".join(parts)


# ---- HTML -----------------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.45}table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccc;
padding:3px 7px;text-align:right}th{background:#f3f3f3}td:nth-child(-n+3){text-align:left}img{max-width:100%}
.gal img{max-height:170px;margin:3px}.note{color:#555;font-size:12.5px}pre{background:#f7f7f7;padding:.6em;
overflow:auto;font-size:12px}ul.summary li{margin:.3em 0}figure{display:inline-block;margin:4px}
ul.caveats{background:#fff4d6;border-left:4px solid #e0a000;padding:.5em 1em .5em 2em}
figure.verdict{display:block;margin:.8em 0 1.4em}figure.verdict img{max-width:100%}"""


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
            cls = "caveats" if title == "Caveats" else "summary"
            parts.append(f"<ul class='{cls}'>" + "".join(f"<li>{html.escape(x)}</li>" for x in payload) + "</ul>")
        elif kind == "table":
            head, rows, note = payload
            parts.append(_html_table(head, rows) if rows else "<p>none</p>")
            if note:
                parts.append(f"<p class='note'>{html.escape(note)}</p>")
        elif kind == "code":
            parts.append(f"<pre>{html.escape(payload)}</pre>")
        elif kind == "figures":
            parts.append("".join(f"<figure class='verdict'><img alt='{html.escape(n)}' "
                                 f"src='data:image/png;base64,{b}'><figcaption class='note'>{html.escape(c)}"
                                 "</figcaption></figure>" for n, c, b in payload))
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
                 ("↑", r"$\uparrow$"),
                 ("–", "--")):
        s = s.replace(a, b)
    return s


def render_latex(ctx: dict[str, Any]) -> str:
    """The leaderboard and per-class tables as booktabs tables, ready for a paper."""
    rows = leaderboard_rows(ctx)
    cols = [0, 1, 3, 4, 5, 6, 9, 10]
    head = [LB_HEAD[i] for i in cols]
    lines = [r"% generated by segarena from report.json; needs \usepackage{booktabs}", r"\begin{table}[t]",
             r"\centering",
             r"\caption{Test results. Verdict metric: per-case Dice with 95\% bootstrap CI on the cases every "
             r"model has; marks: $\star$ anchor, $\approx$ tied, $\downarrow$ significantly worse (Wilcoxon, Holm). "
             r"Pooled mDSC with its CI, and mean $\pm$ std over runs, are descriptive.}",
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
