"""Statistics: checked against scipy, hand computations and the published tables of Demšar (2006)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from segarena._errors import ConfigError
from segarena.stats import (
    bootstrap_ci,
    bootstrap_ranks,
    bootstrap_ratio_ci,
    cd_cliques,
    cd_diagram,
    ci_table,
    consensus_ranking,
    describe_comparisons,
    friedman_nemenyi,
    holm,
    nemenyi_cd,
    nemenyi_q,
    pairwise_comparisons,
    rank_biserial,
    rank_blob_plot,
    rank_stability,
    rank_summary,
    rank_table,
    ratio_replicates,
    seed_fold_variance,
    wilcoxon_paired,
)

# Demšar (2006), Table 6: AUC of four C4.5 variants on 14 data sets. The table is printed to 3 decimals; its
# ranks imply C4.5+cf > C4.5+m+cf on "voting" (both print as 0.975), hence 0.97501 here.
DEMSAR_MODELS = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]
DEMSAR_AUC = np.array([
    [0.763, 0.768, 0.771, 0.798], [0.599, 0.591, 0.590, 0.569], [0.954, 0.971, 0.968, 0.967],
    [0.628, 0.661, 0.654, 0.657], [0.882, 0.888, 0.886, 0.898], [0.936, 0.931, 0.916, 0.931],
    [0.661, 0.668, 0.609, 0.685], [0.583, 0.583, 0.563, 0.625], [0.775, 0.838, 0.866, 0.875],
    [1.000, 1.000, 1.000, 1.000], [0.940, 0.962, 0.965, 0.962], [0.619, 0.666, 0.614, 0.669],
    [0.972, 0.981, 0.97501, 0.975], [0.957, 0.978, 0.946, 0.970]])


def _demsar_frame() -> pd.DataFrame:
    return pd.DataFrame([{"dataset": f"d{i}", "model": m, "value": DEMSAR_AUC[i, j]}
                         for i in range(14) for j, m in enumerate(DEMSAR_MODELS)])


def _cases(seed: int = 0, n: int = 40) -> pd.DataFrame:
    """Per-case scores of 4 models on 2 datasets: A best, B ~ A (tied), C clearly worse, D much worse."""
    rng = np.random.default_rng(seed)
    rows = []
    for ds in ("isic", "polyp"):
        base = rng.uniform(0.6, 0.95, n)
        shift = {"A": 0.0, "B": 0.0, "C": -0.05, "D": -0.3}
        for m, s in shift.items():
            v = np.clip(base + s + rng.normal(0, 0.02, n), 0, 1)
            rows += [{"dataset": ds, "model": m, "case_id": f"c{i}", "value": v[i]} for i in range(n)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_mean_ci_is_seeded_and_sensible():
    x = np.random.default_rng(0).normal(10, 2, 400)
    a, b = bootstrap_ci(x, seed=1), bootstrap_ci(x, seed=1)
    assert a == b and a != bootstrap_ci(x, seed=2)
    assert a.low < a.estimate < a.high and a.estimate == pytest.approx(x.mean())
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)  # the normal-theory half width
    assert (a.high - a.low) / 2 == pytest.approx(half, rel=0.1)
    assert (a.n, a.n_boot, a.level) == (400, 2000, 0.95)


def test_ratio_ci_is_pooled_not_mean_of_ratios():
    tp = np.array([90.0, 1.0, 50.0, 0.0])
    fp = np.array([10.0, 9.0, 0.0, 5.0])
    fn = np.array([0.0, 0.0, 50.0, 5.0])
    ci = bootstrap_ratio_ci(2 * tp, 2 * tp + fp + fn, seed=0)
    assert ci.estimate == pytest.approx(2 * tp.sum() / (2 * tp + fp + fn).sum())
    assert ci.estimate != pytest.approx(np.mean(2 * tp / (2 * tp + fp + fn)))
    # with den = 1 the ratio is the mean: same replicates as bootstrap_ci
    x = np.arange(10.0)
    assert np.array_equal(ratio_replicates(x, np.ones(10), seed=3), ratio_replicates(x, seed=3))
    # a replicate is one pooled ratio of a resample: check one by hand
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 4, size=(1, 4))[0]
    num, den = 2 * tp, 2 * tp + fp + fn
    assert ratio_replicates(num, den, n_boot=1, seed=5)[0] == pytest.approx(num[idx].sum() / den[idx].sum())


def test_strata_and_clusters():
    # values constant within two strata of fixed size: a stratified resample always has the same mean
    x = np.r_[np.zeros(30), np.ones(10)]
    folds = np.r_[np.zeros(30), np.ones(10)]
    strat = bootstrap_ci(x, strata=folds, seed=0)
    assert strat.low == strat.high == pytest.approx(0.25)
    plain = bootstrap_ci(x, seed=0)
    assert plain.high - plain.low > 0.1
    # clusters of size one are the plain bootstrap, draw for draw
    assert np.array_equal(ratio_replicates(x, seed=4, clusters=np.arange(40)), ratio_replicates(x, seed=4))
    # strongly clustered data (10 patients, 20 near-identical cases each): the clustered CI is much wider
    rng = np.random.default_rng(0)
    patient = np.repeat(np.arange(10), 20)
    y = rng.normal(0, 1, 10)[patient] + rng.normal(0, 0.05, 200)
    wide, narrow = bootstrap_ci(y, clusters=patient, seed=0), bootstrap_ci(y, seed=0)
    assert (wide.high - wide.low) > 3 * (narrow.high - narrow.low)


def test_ci_table_and_errors():
    df = _cases(n=20)
    t = ci_table(df, "value", by=("model", "dataset"), n_boot=200)
    assert len(t) == 8 and {"model", "dataset", "estimate", "low", "high"} <= set(t.columns)
    row = t[(t.model == "A") & (t.dataset == "isic")].iloc[0]
    sel = df[(df.model == "A") & (df.dataset == "isic")]["value"]
    assert row.estimate == pytest.approx(sel.mean()) and row.n == 20
    with pytest.raises(ConfigError, match="columns"):
        ci_table(df, "dice")
    with pytest.raises(ConfigError, match="either"):
        ci_table(df)
    with pytest.raises(ConfigError, match="NaN"):
        bootstrap_ci([1.0, np.nan])


# ---------------------------------------------------------------- paired tests
def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm([0.2, 0.9]), [0.4, 0.9])
    assert np.allclose(holm([0.5, 0.9]), [1.0, 1.0])  # 0.5 * 2 = 1.0, and the step-down keeps it monotone
    out = holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.02])


def test_rank_biserial_by_hand_and_against_scipy_w():
    a, b = np.array([3.0, 4, 2, 9, 5]), np.array([2.0, 2, 5, 5, 5])  # d = 1, 2, -3, 4, 0
    # zero dropped; |d| ranks 1,2,3,4: W+ = 7, W- = 3 -> r = 4 / 10
    assert rank_biserial(a, b) == pytest.approx(0.4)
    assert rank_biserial(b, a) == pytest.approx(-0.4)
    x = np.random.default_rng(1).normal(0, 1, (2, 25))
    w = st.wilcoxon(x[0], x[1]).statistic  # min(W+, W-)
    assert abs(rank_biserial(x[0], x[1])) == pytest.approx(1 - 2 * w / (25 * 26 / 2))
    assert wilcoxon_paired(a, a) == (0.0, 1.0)


def test_pairwise_comparisons_match_scipy_and_holm():
    df = _cases()
    res = pairwise_comparisons(df, "value", n_boot=300)
    assert len(res) == 2 * 6
    for ds, g in res.groupby("dataset"):
        assert np.allclose(g["p_holm"], holm(g["p"]))
        for _, r in g.iterrows():
            xa = df[(df.dataset == ds) & (df.model == r.model_a)].sort_values("case_id")["value"].to_numpy()
            xb = df[(df.dataset == ds) & (df.model == r.model_b)].sort_values("case_id")["value"].to_numpy()
            assert r.p == pytest.approx(st.wilcoxon(xa, xb).pvalue, rel=1e-12)
            assert r.mean_diff == pytest.approx((xa - xb).mean())
            assert r.diff_low <= r.mean_diff <= r.diff_high and r.n == 40
    sig = res.set_index(["dataset", "model_a", "model_b"])
    assert not sig.loc[("isic", "A", "B"), "significant"]
    assert sig.loc[("isic", "A", "C"), "better"] == "A" and sig.loc[("polyp", "C", "D"), "better"] == "C"
    # lower is better (e.g. HD95): the winner flips
    flipped = pairwise_comparisons(df, "value", higher_is_better=False, n_boot=50).set_index(
        ["dataset", "model_a", "model_b"])
    assert flipped.loc[("isic", "A", "C"), "better"] == "C"


def test_pairwise_pairs_on_cases_and_averages_seeds():
    df = _cases(n=15)
    df = df[df.dataset == "isic"]
    two_seeds = pd.concat([df.assign(seed=0, value=df.value - 0.01), df.assign(seed=1, value=df.value + 0.01)])
    a = pairwise_comparisons(df, "value", by=(), n_boot=50)
    b = pairwise_comparisons(two_seeds, "value", by=(), n_boot=50)
    assert np.allclose(a["p"], b["p"]) and np.allclose(a["mean_diff"], b["mean_diff"])
    partial = df[~((df.model == "D") & df.case_id.isin(["c0", "c1"]))]
    r = pairwise_comparisons(partial, "value", by=(), n_boot=50).set_index(["model_a", "model_b"])
    assert r.loc[("A", "D"), "n"] == 13 and r.loc[("A", "B"), "n"] == 15
    # the shared draws give each pair exactly the interval of its own paired bootstrap (numpy-only recomputation
    # of the percentile interval of mean(a - b) over the same seeded draws), for pairs on all cases and on fewer
    for (ma, mb), row in r.iterrows():
        sub = partial[partial.model.isin([ma, mb])].pivot(index="case_id", columns="model", values="value").dropna()
        d = (sub[ma] - sub[mb]).to_numpy()
        draws = np.random.default_rng(0).integers(0, d.size, size=(50, d.size))
        lo, hi = np.quantile(d[draws].mean(axis=1), [0.025, 0.975])
        assert (row.diff_low, row.diff_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


def test_sentences():
    res = pairwise_comparisons(_cases(), "value", n_boot=200)
    text = describe_comparisons(res, "Dice")
    assert len(text) == 12
    ab = next(s for s in text if s.startswith("A and B") and "isic" in s)
    assert "statistically tied on Dice on isic" in ab and "Holm" in ab
    cd = next(s for s in text if s.startswith("D is significantly worse than C on Dice on isic"))
    assert "p<0.001, Holm; mean difference -0.2" in cd  # D - C is about -0.25


# ---------------------------------------------------------------- Friedman + Nemenyi
def test_nemenyi_q_matches_demsar_table():
    # Demšar (2006), Table 5(a), two-tailed Nemenyi critical values for k = 2..10
    q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    q10 = [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920]
    for k, a, b in zip(range(2, 11), q05, q10):
        assert nemenyi_q(k, 0.05) == pytest.approx(a, abs=1.5e-3)
        assert nemenyi_q(k, 0.10) == pytest.approx(b, abs=1.5e-3)
    # the paper's worked example: k = 4 over N = 14 data sets, CD = 2.569 sqrt(4 * 5 / (6 * 14)) = 1.25
    assert nemenyi_cd(4, 14) == pytest.approx(2.569 * math.sqrt(20 / 84), abs=1e-3)
    assert round(nemenyi_cd(4, 14), 2) == 1.25


def test_friedman_on_demsar_example():
    r = friedman_nemenyi(_demsar_frame())
    assert [round(r.avg_ranks[m], 3) for m in DEMSAR_MODELS] == [3.143, 2.000, 2.893, 1.964]
    assert r.chi2 == pytest.approx(st.friedmanchisquare(*DEMSAR_AUC.T).statistic)  # scipy, tie-corrected
    # Demšar's formula (no tie correction) on our ranks gives the paper's chi2_F = 9.28 and F_F = 3.69
    ranks = np.array([r.avg_ranks[m] for m in DEMSAR_MODELS])
    chi2 = 12 * 14 / (4 * 5) * (np.sum(ranks ** 2) - 4 * 25 / 4)
    assert round(chi2, 2) == 9.28 and round(13 * chi2 / (14 * 3 - chi2), 2) == 3.69
    assert r.cd == pytest.approx(nemenyi_cd(4, 14)) and (r.k, r.n_blocks) == (4, 14)
    # Demšar: C4.5 vs C4.5+m+cf differ by 1.18 < CD = 1.25, not significant at 0.05 but at 0.10 (CD = 1.12)
    p = r.nemenyi_p[("C4.5", "C4.5+m+cf")]
    assert 0.05 < p < 0.10
    assert r.to_dict()["nemenyi_p"]["C4.5 vs C4.5+m"] == r.nemenyi_p[("C4.5", "C4.5+m")]
    with pytest.raises(ConfigError, match="Friedman needs"):
        friedman_nemenyi(_demsar_frame().query("model in ['C4.5', 'C4.5+m']"))


def test_cd_cliques_and_diagram_png(tmp_path):
    r = friedman_nemenyi(_demsar_frame())
    assert cd_cliques(r.avg_ranks, r.cd) == [["C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5"]]
    assert cd_cliques(r.avg_ranks, 0.5) == [["C4.5+m+cf", "C4.5+m"], ["C4.5+cf", "C4.5"]]
    assert cd_cliques({"a": 1.0, "b": 2.0, "c": 3.0}, 0.5) == []
    fig = cd_diagram(r.avg_ranks, r.cd, title="Demšar 2006, Table 6")
    path = tmp_path / "cd.png"
    fig.savefig(path, dpi=80)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "CD = 1.25" in texts and any(t.startswith("C4.5+m+cf (1.96)") for t in texts)


# ---------------------------------------------------------------- ranking
def test_rank_table_consensus_and_ties():
    df = pd.DataFrame({"dataset": ["a"] * 3 + ["b"] * 3, "model": ["x", "y", "z"] * 2,
                       "value": [0.9, 0.8, 0.8, 0.7, 0.9, 0.8]})
    rt = rank_table(df).set_index(["dataset", "model"])["rank"]
    assert rt.loc[("a", "x")] == 1 and rt.loc[("a", "y")] == rt.loc[("a", "z")] == 2.5
    assert rt.loc[("b", "y")] == 1
    cons = consensus_ranking(rank_table(df))
    # a: x 1, y 2.5, z 2.5; b: y 1, z 2, x 3 -> mean ranks y 1.75, x 2.0, z 2.25
    assert list(cons["model"]) == ["y", "x", "z"] and list(cons["consensus_rank"]) == [1, 2, 3]
    assert cons.set_index("model")["mean_rank"].to_dict() == {"x": 2.0, "y": 1.75, "z": 2.25}
    assert (cons["n_datasets"] == 2).all()


def test_bootstrap_ranks_stability_and_blob_png(tmp_path):
    df = _cases()
    boot = bootstrap_ranks(df, "value", n_boot=200, seed=0)
    assert len(boot) == 2 * 200 * 4 and set(boot.columns) == {"dataset", "replicate", "model", "rank"}
    assert boot.equals(bootstrap_ranks(df, "value", n_boot=200, seed=0))
    summ = rank_summary(boot).set_index(["dataset", "model"])
    assert summ.loc[("isic", "D"), "median_rank"] == 4 and summ.loc[("isic", "D"), "p_first"] == 0
    assert summ.loc[("isic", "A"), "p_first"] + summ.loc[("isic", "B"), "p_first"] == pytest.approx(1.0, abs=0.02)
    stab = rank_stability(boot, rank_table(df)).set_index("dataset")
    assert 0.3 < stab.loc["isic", "kendall_mean"] < 1.0  # A and B swap, C and D never move
    clear = df[df.model.isin(["C", "D"])]
    s2 = rank_stability(bootstrap_ranks(clear, "value", n_boot=50), rank_table(clear))
    assert (s2["kendall_mean"] == 1.0).all()
    fig = rank_blob_plot(boot, title="bootstrap ranks")
    path = tmp_path / "blob.png"
    fig.savefig(path, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][-1] == "D"


# ---------------------------------------------------------------- seed vs fold variance
def test_seed_fold_variance_by_hand():
    df = pd.DataFrame({"model": "m", "dataset": "d", "fold": [0, 0, 1, 1], "seed": [0, 1, 0, 1],
                       "value": [1.0, 3.0, 5.0, 7.0]})
    r = seed_fold_variance(df).iloc[0]
    # fold means 2, 6; MSW = 4 / 2 = 2; MSB = 2 (2-4)^2 + 2 (6-4)^2 = 16; n0 = 2 -> var_fold = (16 - 2) / 2 = 7
    assert (r.var_seed, r.var_fold, r.frac_seed) == (2.0, 7.0, pytest.approx(2 / 9))
    assert (r.n_folds, r.n_runs, r["mean"]) == (2, 4, 4.0) and r.sd_fold_means == pytest.approx(math.sqrt(8))
    one_seed = seed_fold_variance(df[df.seed == 0]).iloc[0]
    assert np.isnan(one_seed.var_seed) and np.isnan(one_seed.frac_seed)


def test_seed_fold_variance_recovers_simulated_components():
    rng = np.random.default_rng(0)
    folds, seeds = 60, 8
    fold_effect = rng.normal(0, 0.02, folds)  # var 4e-4
    rows = [{"model": "m", "dataset": "d", "fold": f, "seed": s, "value": 0.9 + fold_effect[f] + rng.normal(0, 0.01)}
            for f in range(folds) for s in range(seeds)]
    df = pd.DataFrame(rows)
    r = seed_fold_variance(df.drop(index=[0, 1, 2])).iloc[0]  # unbalanced: fold 0 keeps 5 seeds
    assert r.var_seed == pytest.approx(1e-4, rel=0.15)
    assert r.var_fold == pytest.approx(4e-4, rel=0.4)
    assert 0.1 < r.frac_seed < 0.3


# ---------------------------------------------------------------- one resample, metric x reduction, ties for first
def test_resample_shared_and_clustered_by_hand():
    from segarena.stats import Resample, bootstrap_score, metric_terms

    # a case evaluated under 3 seeds is one unit: drawing it brings all three copies (Davison & Hinkley 3.8)
    case = np.repeat(np.arange(5), 3)
    x = np.arange(15.0)
    res = Resample(15, n_boot=50, seed=1, clusters=case)
    assert res.n_units == 5 and res.counts.shape == (50, 5)
    assert (res.counts.sum(axis=1) == 5).all()  # every replicate draws as many units as there are
    for b in range(3):  # each replicate by hand: every copy of each drawn case, as often as it is drawn (numpy)
        rows = np.concatenate([np.flatnonzero(case == u) for u in range(5) for _ in range(res.counts[b, u])])
        assert res.ratio(x)[b] == pytest.approx(x[rows].mean())
    # the draws are numpy's own: replicate b draws positions rng.integers(0, 5, 5) (one stratum), counted here
    rng = np.random.default_rng(1)
    first = np.bincount(rng.integers(0, 5, size=(50, 5))[0], minlength=5)
    assert (res.counts[0] == first).all()
    # the same draws score several columns at once; column j equals scoring column j alone
    m = np.c_[x, 2 * x + 1]
    assert np.allclose(res.ratio(m)[:, 1], res.ratio(2 * x + 1))
    # smp-style metric x reduction on one per-case table, checked against hand formulas
    cases = pd.DataFrame({"tp": [9, 0, 5], "fp": [1, 0, 5], "fn": [0, 4, 0], "dice": [18 / 19, 0.0, 10 / 15]})
    n, d = metric_terms(cases, "dice", "pooled")
    assert n.sum() / d.sum() == pytest.approx(28 / (28 + 6 + 4))
    ci = bootstrap_score(cases, "iou", "pooled", n_boot=100)
    assert ci.estimate == pytest.approx(14 / (14 + 6 + 4)) and ci.low <= ci.estimate <= ci.high
    assert bootstrap_score(cases, "dice", "case", n_boot=10).estimate == pytest.approx((18 / 19 + 10 / 15) / 3)
    with pytest.raises(ConfigError, match="reduction"):
        metric_terms(cases, "dice", "macro-ish")


def test_p_first_counts_three_way_ties():
    # three models identical on every case: each shares rank 1 in every replicate (average rank 2)
    rows = [{"dataset": "d", "model": m, "case_id": f"c{i}", "value": v}
            for i, v in enumerate(np.linspace(0.5, 0.9, 12)) for m in ("a", "b", "c")]
    rows += [{"dataset": "d", "model": "z", "case_id": f"c{i}", "value": 0.1} for i in range(12)]
    summ = rank_summary(bootstrap_ranks(pd.DataFrame(rows), "value", n_boot=40)).set_index("model")
    assert summ.loc[["a", "b", "c"], "p_first"].tolist() == [1.0, 1.0, 1.0]
    assert summ.loc["z", "p_first"] == 0.0 and summ.loc["a", "mean_rank"] == 2.0
