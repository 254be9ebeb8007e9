"""The report opens with a forest plot, per-case distributions and a pairwise matrix; Markdown links the files."""
from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segarena.report.figures import verdict_figures, write_figure_files


def _report() -> dict:
    est = {"a": (0.8, 0.75, 0.85), "b": (0.7, 0.64, 0.76), "c": (0.4, 0.33, 0.47)}
    return {"alpha": 0.05, "datasets": {"kvasir-seg": {
        "metric_label": "per-case Dice", "n_cases": 40, "n_folds": 1, "anchor": "a",
        "estimates": {m: {"estimate": e, "ci": [lo, hi], "n_cases": 40, "n_folds": 1}
                      for m, (e, lo, hi) in est.items()},
        "models": {"b": {"relation": "tied"}, "c": {"relation": "worse"}},
        "pairwise": [{"model": "b", "versus": "a", "difference": -0.1, "p_holm": 0.2},
                     {"model": "c", "versus": "a", "difference": -0.4, "p_holm": 1e-5},
                     {"model": "c", "versus": "b", "difference": -0.3, "p_holm": 1e-4}]}}}


def _cases() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"dataset": "kvasir-seg", "model": m, "fold": 0, "case_id": f"c{i}",
             "dice": float(np.clip(mu + rng.normal(0, .1), 0, 1))}
            for m, mu in (("a", .8), ("b", .7), ("c", .4)) for i in range(40)]
    return pd.DataFrame(rows)


def test_three_opening_figures_with_captions_that_say_which_direction_is_better(tmp_path):
    figs = verdict_figures(_report(), _cases())
    assert [n for n, _, _ in figs] == ["forest", "distributions", "pairwise"]
    for name, caption, b64 in figs:
        assert "better" in caption
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L"))
        assert im.shape[0] > 150 and im.shape[1] > 300 and im.std() > 10, name  # drawn, not blank
    links = write_figure_files(tmp_path, [("verdict", [(n, b) for n, _, b in figs])])
    assert sorted(links.values()) == [f"figures/verdict/{n}.png" for n in ("distributions", "forest", "pairwise")]
    assert all((tmp_path / p).is_file() for p in links.values())


def test_no_estimates_no_figures():
    assert verdict_figures({"datasets": {}}, pd.DataFrame()) == []


@pytest.mark.realdata
def test_markdown_report_links_figure_files(real_data_root, tmp_path):
    from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
    from segarena.protocol import run
    from segarena.report import build_report

    for model in ("tiny-fcn", "tiny-unet"):
        run(RunSpec(data=DataConfig(name="kvasir-seg", root=str(real_data_root), limit=25),
                    model=ModelConfig(name=model),
                    protocol=ProtocolConfig(input_size=32, epochs=1, batch_size=4, max_steps_per_epoch=1, amp=False)),
            tmp_path)
    paths = build_report(tmp_path)
    md = paths["markdown"].read_text()
    assert "see report.html" not in md
    assert md.index("![forest](figures/verdict/forest.png)") < md.index("## Leaderboard")
    for rel in ("figures/verdict/forest.png", "figures/verdict/distributions.png", "figures/verdict/pairwise.png"):
        assert (paths["markdown"].parent / rel).is_file() and f"]({rel})" in md
    # every image link in the Markdown resolves to a written file
    import re

    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (paths["markdown"].parent / rel).is_file(), rel
    html = paths["html"].read_text()
    assert html.index("The verdict at a glance") < html.index("Leaderboard")
