"""``segarena select``: which model for *my* data? A budgeted successive-halving race (Jamieson & Talwalkar,
AISTATS 2016; the synchronous form of ASHA, Li et al. MLSys 2020) over candidate models.

Every candidate is an ordinary segarena run (same protocol, same split, a run id, resumable). Rung by rung, all
surviving candidates train to the rung's epoch, are ranked by their best *validation* mDSC, and the top 1/eta are
promoted; a promoted run continues from its saved state (``run(..., until_epoch=...)``), so no epoch is trained
twice. Only the winner is evaluated on the test split, once, and reported with a bootstrap confidence interval and
its cost. Why not Ray Tune's ASHA scheduler: the race must leave normal runs in the results store (identity,
resume, report), and for the handful of candidates of one user's dataset the synchronous rungs need no cluster
scheduler; on a cluster, use ``segarena study run --executor ray`` for the exhaustive comparison instead.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError
from ..config import ModelConfig, RunSpec
from .grid import resolve_pretrained


@dataclass
class SelectionResult:
    winner: str
    rungs: list[dict[str, Any]] = field(default_factory=list)  # per rung: epoch, scores, promoted
    test: dict[str, Any] = field(default_factory=dict)  # winner's test metrics, CI, cost
    epochs_spent: int = 0


def rung_schedule(n: int, budget_epochs: int, eta: int = 2) -> list[int]:
    """Cumulative epoch milestones of each rung for ``n`` candidates, never spending more than ``budget_epochs``.

    There are R = ceil(log_eta n) + 1 rungs; rung r trains its ``s_r`` survivors from the previous milestone to its
    own, so the race costs ``sum_r s_r * (m_r - m_{r-1})`` epochs (:func:`race_cost`). Each rung gets at least one
    epoch and aims at an equal share of the budget; what rounding leaves over goes to the last rung (the winner
    trains longer). A budget below one epoch per survivor per rung is a user error, not a silent overspend.
    """
    if n < 1:
        raise ConfigError("select needs at least one candidate model")
    if eta < 2:
        raise ConfigError(f"--eta {eta}: must be at least 2", fix="e.g. --eta 2 (keep the best half at each rung)")
    survivors = survivor_counts(n, eta)
    minimum = sum(survivors)
    if budget_epochs < minimum:
        raise ConfigError(f"--budget {budget_epochs} epochs is too small for {n} candidates: the race needs at least "
                          f"{minimum} ({len(survivors)} rungs of {', '.join(map(str, survivors))} survivors, one "
                          f"epoch each)", fix=f"use --budget {minimum} or more, or fewer --models")
    per_round = budget_epochs / len(survivors)
    steps = [max(1, int(per_round // s)) for s in survivors]
    while sum(s * d for s, d in zip(survivors, steps)) > budget_epochs:  # rounding up to 1 epoch overspent
        r = max((i for i in range(len(steps)) if steps[i] > 1), key=lambda i: survivors[i] * steps[i])
        steps[r] -= 1
    left = budget_epochs - sum(s * d for s, d in zip(survivors, steps))
    steps[-1] += left // survivors[-1]
    milestones, epoch = [], 0
    for d in steps:
        epoch += d
        milestones.append(epoch)
    return milestones


def survivor_counts(n: int, eta: int = 2) -> list[int]:
    """How many candidates train in each rung: n, ceil(n / eta), ... down to 1 (one rung for one candidate)."""
    counts = [n]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / eta))
    return counts


def race_cost(milestones: list[int], n: int, eta: int = 2) -> int:
    """Training epochs the race spends with these milestones: each rung's survivors times its new epochs."""
    prev, total = 0, 0
    for s, m in zip(survivor_counts(n, eta), milestones):
        total += s * (m - prev)
        prev = m
    return total


#: candidates when none are named: four mid-sized, strong members of both families, ImageNet-initialised where
#: they have weights (nnU-Net trains from scratch by design)
DEFAULT_CANDIDATES = ("unet-vgg16", "nnunet-plain", "segformer-b2", "upernet-convnext-t")


def select(base: RunSpec, models: list[str] | None, results: str | os.PathLike, *, budget_epochs: int = 60,
           eta: int = 2, data_root: str | None = None, device: str | None = None,
           progress: bool = True) -> SelectionResult:
    """Race ``models`` (``None``: the registered ones of :data:`DEFAULT_CANDIDATES`) by successive halving on
    validation mDSC within ``budget_epochs``; the winner is tested once."""
    from ..models import MODELS
    from ..protocol import run

    if models is None:
        models = [m for m in DEFAULT_CANDIDATES if m in MODELS]
    for m in models:
        MODELS.get(m)  # unknown names fail before anything runs

    milestones = rung_schedule(len(models), budget_epochs, eta)
    total_epochs = milestones[-1]
    specs = {m: dataclasses.replace(base,
                                    model=ModelConfig(name=m, pretrained=resolve_pretrained(m, base.model.pretrained)),
                                    protocol=dataclasses.replace(base.protocol, epochs=total_epochs, patience=None))
             for m in models}
    alive = list(models)
    out = SelectionResult(winner="")
    for r, milestone in enumerate(milestones):
        last = r == len(milestones) - 1
        scores = {}
        for m in alive:
            res = run(specs[m], results, data_root=data_root, device=device, progress=progress,
                      until_epoch=None if last and len(alive) == 1 else milestone - 1)
            log = res.store.log()
            scores[m] = max(e["val_mdsc"] for e in log[:milestone])
        ranked = sorted(alive, key=lambda m: -scores[m])
        keep = ranked[: max(1, math.ceil(len(alive) / eta))] if not last else ranked[:1]
        out.rungs.append({"epoch": milestone, "val_mdsc": scores, "promoted": keep})
        if progress:
            print(f"rung {r + 1}/{len(milestones)} (epoch {milestone}, best validation mDSC %, higher is better): " +
                  ", ".join(f"{m} {scores[m] * 100:.1f}" for m in ranked) + f" -> {', '.join(keep)}", flush=True)
        alive = keep
    out.winner = alive[0]
    # finish the winner (if it paused) and evaluate it on test, once
    res = run(specs[out.winner], results, data_root=data_root, device=device, progress=progress)
    from ..store import ResultsDir

    rd = ResultsDir(results)
    out.epochs_spent = sum(len(rd.run(s).log()) for s in specs.values())
    out.test = _test_with_ci(res.store, res.summary)
    return out


def _test_with_ci(store, summary: dict[str, Any]) -> dict[str, Any]:
    """Pooled test mDSC of the winner with a percentile bootstrap 95% CI over test cases."""
    from ..stats import bootstrap_score

    per_case = store.records().groupby("case_id", as_index=False)[["tp", "fp", "fn"]].sum()
    ci = bootstrap_score(per_case, "dice", "pooled", n_boot=2000, seed=0, clusters="case_id")
    lo, hi = ci.low, ci.high
    return {"mdsc": summary["metrics"]["mdsc"], "mdsc_ci95": [float(lo), float(hi)], "n_test": summary["n_test"],
            "params": summary["params"], "train_seconds": summary["train_seconds"], "device": summary["device"],
            "run": summary["run_name"]}
