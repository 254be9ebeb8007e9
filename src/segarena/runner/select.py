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
    """Cumulative epoch milestones of each rung for ``n`` candidates within ``budget_epochs`` total epochs.

    Each of the R = ceil(log_eta n) + 1 rungs gets an equal share of the budget, split over its survivors.
    """
    if n < 1:
        raise ConfigError("select needs at least one candidate model")
    rounds = max(1, math.ceil(math.log(n, eta))) + 1 if n > 1 else 1
    per_round = budget_epochs / rounds
    milestones, survivors, epoch = [], n, 0
    for _ in range(rounds):
        epoch += max(1, int(per_round // survivors))
        milestones.append(epoch)
        survivors = max(1, math.ceil(survivors / eta))
    return milestones


def select(base: RunSpec, models: list[str], results: str | os.PathLike, *, budget_epochs: int = 60, eta: int = 2,
           data_root: str | None = None, device: str | None = None, progress: bool = True) -> SelectionResult:
    from ..protocol import run

    milestones = rung_schedule(len(models), budget_epochs, eta)
    total_epochs = milestones[-1]
    specs = {m: dataclasses.replace(base, model=ModelConfig(name=m, pretrained=resolve_pretrained(m, base.model.pretrained)),
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
            print(f"rung {r + 1}/{len(milestones)} (epoch {milestone}): " +
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
