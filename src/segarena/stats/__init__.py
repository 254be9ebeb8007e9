"""Statistics over the per-case records: bootstrap CIs, paired tests, Friedman + Nemenyi, rankings, variance.

Inputs are tidy pandas frames (one row per model, dataset, fold, seed, case and class; columns named by the
caller); outputs are tidy frames, frozen dataclasses or matplotlib Figures. Conventions and references are in
``docs/evaluation.md``.
"""
from __future__ import annotations

from .bootstrap import (
    CI,
    METRICS,
    REDUCTIONS,
    Resample,
    bootstrap_ci,
    bootstrap_ratio_ci,
    bootstrap_score,
    ci_table,
    metric_terms,
    percentile_ci,
    ratio_replicates,
)
from .plots import cd_cliques, cd_diagram, rank_blob_plot
from .ranking import bootstrap_ranks, consensus_ranking, rank_stability, rank_summary, rank_table
from .tests import (
                    FriedmanResult,
                    average_ranks,
                    describe_comparisons,
                    friedman_nemenyi,
                    holm,
                    nemenyi_cd,
                    nemenyi_q,
                    pairwise_comparisons,
                    rank_biserial,
                    wilcoxon_paired,
)
from .variance import seed_fold_variance

__all__ = ["CI", "METRICS", "REDUCTIONS", "FriedmanResult", "Resample", "bootstrap_score", "metric_terms",
           "percentile_ci", "average_ranks", "bootstrap_ci", "bootstrap_ranks", "bootstrap_ratio_ci",
           "cd_cliques", "cd_diagram", "ci_table", "consensus_ranking", "describe_comparisons", "friedman_nemenyi",
           "holm", "nemenyi_cd", "nemenyi_q", "pairwise_comparisons", "rank_biserial", "rank_blob_plot",
           "rank_stability", "rank_summary", "rank_table", "ratio_replicates", "seed_fold_variance",
           "wilcoxon_paired"]
