"""The preflight of a study: everything that can fail after GPU time is spent, checked before anything trains.

:func:`plan_study` expands every run of every phase (the learning-rate search and the k-fold CV), validates each
run's config, builds every model at the study's input size with its parameters on the meta device (no memory is
allocated for weights) and counts them, resolves every pretrained source (cached / downloadable, with URL and
checksum / missing, with the fix), checks that every dataset is present and that one sample decodes, and
estimates each run's peak GPU memory and GPU time from the throughput table (:mod:`.throughput`; measured rows
are marked as measured, the others as estimates). ``segarena study plan`` prints it; ``study run`` calls it first
and refuses to start while any run has a problem.

Problems are per run and have a kind: ``config``, ``model``, ``weights`` or ``data``. ``data`` problems can be
waived (``--allow-missing-data``: the runs of the missing datasets are left out); the others cannot.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._errors import SegarenaError
from ..config import RunSpec
from .plan_checks import check_data, weight_status
from .study import StudySpec
from .throughput import REFERENCE_GPU, REFERENCE_GPU_GIB, load_lever_ratios, load_measured, lookup

#: case counts of the official releases (used for time estimates when a dataset is not on disk)
RELEASE_CASES = {"isic2018": 3694, "neopolyp": 1000, "camus": 2000, "kvasir-seg": 1000, "busi": 780, "hc18": 999}
#: assumed share of the maximum epochs a run trains before early stopping ends it (until measured)
EARLY_STOP_SHARE = 0.6
#: bytes per parameter held during AdamW training in fp32 master weights: weights, gradients, two moments
BYTES_PER_PARAM = 16
#: CUDA context, cuDNN workspaces and allocator slack
OVERHEAD_GIB = 1.5
#: what turns a lever's estimate into a measurement
MEASURES = "gpu_check.py --levers measures it"


class StudyRefused(SegarenaError):
    """``study run`` did not start: some runs have problems (``.plan`` holds the whole preflight)."""

    def __init__(self, message: str, *, fix: str | None = None, plan: StudyPlan | None = None) -> None:
        super().__init__(message, fix=fix)
        self.plan = plan


@dataclass
class ModelCheck:
    name: str
    params: int | None = None
    params_paper_m: float | None = None
    fwd_gflops: float | None = None
    #: tensors autograd saves for backward, per image, fp32 (GiB)
    activations_gib: float | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def params_vs_paper(self) -> float | None:
        if self.params is None or not self.params_paper_m:
            return None
        return self.params / 1e6 / self.params_paper_m - 1.0


@dataclass
class RunPlan:
    run_id: str | None
    name: str
    model: str
    dataset: str
    phase: str
    fold: int
    seed: int
    lr: float | None
    epochs: int
    problems: list[dict[str, str]] = field(default_factory=list)
    gpu_seconds: float | None = None
    gpu_seconds_naive: float | None = None
    #: the study's precision, but every run trains all its epochs (no early stopping)
    gpu_seconds_all_epochs: float | None = None
    peak_gib: float | None = None
    #: training images/s the GPU time is computed from (measured or estimated, see ``estimate``)
    train_img_s: float | None = None
    estimate: str = "estimate"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StudyPlan:
    study: str
    runs: list[RunPlan]
    models: dict[str, ModelCheck]
    weights: list[dict[str, Any]]
    datasets: dict[str, dict[str, Any]]
    levers: list[dict[str, Any]]

    @property
    def problems(self) -> list[tuple[RunPlan, dict[str, str]]]:
        return [(r, p) for r in self.runs for p in r.problems]

    def blocking(self, allow_missing_data: bool = False) -> list[tuple[RunPlan, dict[str, str]]]:
        return [(r, p) for r, p in self.problems if not (allow_missing_data and p["kind"] == "data")]

    def gpu_hours(self, naive: bool = False, all_epochs: bool = False) -> dict[str, float]:
        """GPU-hours per phase and in total: as planned, ``all_epochs`` (no early stopping) or ``naive`` (fp32 and
        no early stopping)."""
        out: dict[str, float] = {}
        for r in self.runs:
            s = r.gpu_seconds_naive if naive else r.gpu_seconds_all_epochs if all_epochs else r.gpu_seconds
            out[r.phase] = out.get(r.phase, 0.0) + (s or 0.0) / 3600
        out["total"] = sum(out.values())
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "reference_gpu": REFERENCE_GPU, "runs": [r.to_dict() for r in self.runs],
                "gpu_hours": self.gpu_hours(), "gpu_hours_without_early_stopping": self.gpu_hours(all_epochs=True),
                "gpu_hours_naive": self.gpu_hours(naive=True),
                "models": {k: {**dataclasses.asdict(m), "params_vs_paper": m.params_vs_paper}
                           for k, m in self.models.items()},
                "weights": self.weights, "datasets": self.datasets, "levers": self.levers,
                "problems": len(self.problems)}


# ---- models on the meta device ----------------------------------------------------------------------------
@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Every ``nn.Parameter`` registered inside is created on the meta device: a model builds with its real
    shapes but no weight memory; other tensors the builders compute (drop-path rates, index buffers) stay real."""
    import torch.nn as nn

    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: Any) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def check_model(name: str, n_out: int, in_channels: int, size: int, kwargs: dict[str, Any],
                trace: bool = True) -> ModelCheck:
    """Build ``name`` with meta parameters, count them and (``trace``) run one meta forward at ``size`` to count
    FLOPs and the activations autograd keeps for backward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import MODELS, count_params, create_model

    card = MODELS.get(name).card
    mc = ModelCheck(name, params_paper_m=card.params_paper_m)
    if size < card.min_size:
        mc.problems.append(f"{name} needs inputs of at least {card.min_size} px; protocol.input_size is {size}")
    try:
        with params_on_meta():
            model = create_model(name, n_out, in_channels=in_channels, pretrained=False, **kwargs)
        mc.params = count_params(model)
    except SegarenaError as exc:
        mc.problems.append(str(exc))
        return mc
    except Exception as exc:  # noqa: BLE001 - a builder bug is reported as this model's problem, not a crash
        mc.problems.append(f"{name} does not build: {type(exc).__name__}: {exc}".splitlines()[0])
        return mc
    if not trace:
        return mc
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    try:
        model = model.to("meta").train()
        x = torch.empty(2, in_channels, size, size, device="meta")  # two images: batch norm needs more than one
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = model(x)
        if tuple(y.shape) != (2, n_out, size, size):
            mc.problems.append(f"{name} returned logits of shape {tuple(y.shape)} for a {size}x{size} input")
        mc.fwd_gflops = counter.get_total_flops() / 2 / 1e9
        mc.activations_gib = saved[0] / 2 / 2**30
    except Exception as exc:  # noqa: BLE001 - some operators have no meta kernel; the estimate then falls back
        mc.notes.append(f"forward not traceable on the meta device ({type(exc).__name__}); "
                        "FLOPs estimated from a 128 px CPU forward")
        mc.fwd_gflops, mc.activations_gib = _small_forward(name, n_out, in_channels, size, kwargs)
    return mc


def _small_forward(name: str, n_out: int, in_channels: int, size: int,
                   kwargs: dict[str, Any]) -> tuple[float | None, float | None]:
    """FLOPs and saved activations of a real forward of two 128 px images, scaled by area to ``size``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import create_model

    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    try:
        model = create_model(name, n_out, in_channels=in_channels, **kwargs).train()
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.zeros(2, in_channels, 128, 128))
    except Exception:  # noqa: BLE001 - no estimate then
        return None, None
    scale = (size / 128) ** 2
    return counter.get_total_flops() / 2 / 1e9 * scale, saved[0] / 2 / 2**30 * scale


# ---- the plan ---------------------------------------------------------------------------------------------
def _problem(kind: str, message: str, fix: str | None = None) -> dict[str, str]:
    return {"kind": kind, "message": message, **({"fix": fix} if fix else {})}


def _levers(study: StudySpec, runs: list[RunPlan], measured: dict[str, dict[str, Any]],
            data_gib: dict[str, float]) -> list[dict[str, Any]]:
    """Each lever, whether the study's protocol applies it, and its effect: a measured ratio (``gpu_check.py
    --levers``) where there is one, else an estimate that names its number and where it comes from."""
    from .throughput import SUSTAINED_TFLOPS

    p = study.protocol
    stops = p.patience is not None and p.patience < p.epochs
    amp_gain = SUSTAINED_TFLOPS["amp"] / SUSTAINED_TFLOPS["fp32"]
    # the FLOP-based GPU-hours above do not include the three below; measured rows do (gpu_check.py measures each
    # model with the study's options)
    note = "; not in the estimated GPU-hours, measured rows include it"
    out = [
        {"lever": "bf16 autocast (protocol.amp)", "applied": bool(p.amp), "kind": "estimate",
         "effect": f"x{amp_gain:.1f} training throughput vs fp32 (assumed; gpu_check.py measures it)"},
        {"lever": "early stopping (protocol.patience)", "applied": stops, "kind": "estimate",
         "effect": f"runs train ~{EARLY_STOP_SHARE:.0%} of their maximum epochs (assumed until runs measure it)"},
        {"lever": "size-aware scheduling: largest runs first across workers", "applied": True, "kind": "design",
         "effect": "wall-clock ~ GPU-hours / workers; the GPU-hours themselves do not change"},
    ]
    for key, title in (("channels_last", "channels-last memory format"), ("compile", "torch.compile")):
        applied, exceptions = _option(study, key)
        kind, effect = _lever_effect(key, measured)
        out.append({"lever": f"{title} (protocol.{key})", "applied": applied, "kind": kind,
                    "effect": effect + exceptions + (note if applied else f"; to use it: --set protocol.{key}=true")})
    applied, exceptions = _option(study, "data_on_device")
    kind, effect = _lever_effect("data_on_device", measured, runs, p.batch_size, p.input_size)
    sizes = ", ".join(f"{d} {g:.1f} GiB" for d, g in data_gib.items())
    how = ("copied to the GPU once when they fit in a quarter of its free memory" if p.data_on_device == "auto"
           else "copied to the GPU once (an error where they do not fit)" if applied
           else "not kept there: each batch is copied from the memory-mapped cache")
    out.append({"lever": "prepared data kept on the device (protocol.data_on_device)", "applied": applied,
                "kind": kind, "effect": f"prepared arrays ({sizes or 'sizes unknown'}) {how}; {effect}{exceptions}"
                                        + (note if applied else "; to use it: --set protocol.data_on_device=auto")})
    return out


def _option(study: StudySpec, key: str) -> tuple[bool, str]:
    """Whether the study's protocol turns ``key`` on, and the models whose overrides say otherwise."""
    on = bool(getattr(study.protocol, key))
    other = sorted(m for m, o in study.model_overrides.items()
                   if key in (o.get("protocol") or {}) and bool(o["protocol"][key]) != on)
    return on, (f" ({'off' if on else 'on'} for {', '.join(other)})" if other else "")


def _lever_effect(key: str, measured: dict[str, dict[str, Any]], runs: list[RunPlan] | None = None,
                  batch: int = 8, size: int = 512) -> tuple[str, str]:
    """("measured" | "estimate", the effect in words) of lever ``key`` on training throughput."""
    from .throughput import HOST_FEED_GBPS, LEVER_ESTIMATES

    if key in measured:
        m = measured[key]
        extra = (f", +{m['extra_warmup_s']:.0f} s of warm-up (compilation) per run" if key == "compile"
                 and m.get("extra_warmup_s") is not None else "")
        return "measured", (f"x{m['ratio']:.2f} training throughput, measured by gpu_check.py on {m['gpu']} "
                            f"(geometric mean over {', '.join(m['models'])}){extra}")
    if key in LEVER_ESTIMATES:
        ratio, source = LEVER_ESTIMATES[key]
        return "estimate", f"x{ratio:.1f} training throughput (estimate from {source}); {MEASURES}"
    steps = sorted(batch / r.train_img_s for r in runs or [] if r.train_img_s)
    feed_s = batch * size * size * 4 / (HOST_FEED_GBPS * 1e9)  # three image channels and a mask channel, uint8
    if not steps:
        return "estimate", f"saves ~{feed_s * 1e3:.0f} ms of host feed per step (estimate; no step time known)"
    step = steps[len(steps) // 2]
    return "estimate", (f"at most x{1 + feed_s / step:.2f} training throughput (estimate: ~{feed_s * 1e3:.0f} ms of "
                        f"host feed per step, {batch * size * size * 4 / 2**20:.0f} MiB at an assumed "
                        f"{HOST_FEED_GBPS:.0f} GB/s, against the median estimated step of {step * 1e3:.0f} ms; nothing "
                        f"while the CPU stays ahead of the GPU); {MEASURES}")


def _estimate(run: RunPlan, spec: RunSpec, mc: ModelCheck, n: int | None, measured: dict[str, dict[str, Any]],
              amp: bool) -> None:
    from .throughput import SUSTAINED_TFLOPS

    tp = lookup(run.model, measured, mc.fwd_gflops * 1e9 if mc.fwd_gflops else None, amp)
    if tp is None or n is None:
        return
    p, k = spec.protocol, spec.data.num_folds
    n_train, n_val = n * (k - 2) / k, n / k
    steps = math.ceil(n_train / p.batch_size)
    if p.max_steps_per_epoch is not None:
        steps = min(steps, p.max_steps_per_epoch)
    test = n / k / 3 if p.evaluate_test else 0.0

    def seconds(img_s: float, epochs: float) -> float:
        return epochs * (steps * p.batch_size + n_val / 3) / img_s + test / img_s + 30.0  # + start-up

    stops = p.patience is not None and p.patience < p.epochs
    run.gpu_seconds = seconds(tp.train_img_s, p.epochs * (EARLY_STOP_SHARE if stops else 1.0))
    fp32 = tp.train_img_s * (SUSTAINED_TFLOPS["fp32"] / SUSTAINED_TFLOPS["amp"] if amp else 1.0)
    run.gpu_seconds_naive = seconds(fp32, p.epochs)
    run.gpu_seconds_all_epochs = seconds(tp.train_img_s, p.epochs)
    run.estimate = tp.kind
    run.train_img_s = tp.train_img_s
    if tp.peak_gib is not None and p.batch_size == 8 and p.input_size == 512:
        run.peak_gib = float(tp.peak_gib)
    elif mc.params is not None and mc.activations_gib is not None:
        act = mc.activations_gib * p.batch_size * (0.5 if amp else 1.0)  # traced at the input size
        run.peak_gib = mc.params * BYTES_PER_PARAM / 2**30 + act + OVERHEAD_GIB


def plan_study(study: StudySpec, *, data_root: str | os.PathLike | None = None,
               throughput: str | os.PathLike | None = None, trace: bool = True) -> StudyPlan:
    """Expand, validate, build, resolve and cost every run of ``study`` (see the module docstring)."""
    from ..data import DATASETS
    from ..models import MODELS
    from ..protocol.loop import validate_spec
    from ..protocol.losses import out_channels, resolve_loss

    measured = load_measured(throughput)
    lever_ratios = load_lever_ratios(throughput)
    datasets: dict[str, dict[str, Any]] = {}
    for d in study.datasets:
        spec = study._spec(study.models[0], d, study.folds[0], study.seeds[0])
        datasets[d] = check_data(d, data_root or spec.data.root, dict(spec.data.options), spec.data.limit)
    checks: dict[tuple, ModelCheck] = {}
    traced: dict[str, ModelCheck] = {}
    weights: dict[tuple[str, str], dict[str, Any]] = {}
    runs: list[RunPlan] = []
    for m, d in study.pairs():
        card = MODELS.get(m).card
        phases = [("lr_search", s) for s in study.search_specs(m, d)] + [("cv", s) for s in study.cv_specs(m, d)]
        pair_problems: list[dict[str, str]] = []
        spec0 = phases[0][1]
        dcard = DATASETS.get(d).card_with(dict(spec0.data.options))
        try:
            n_out = out_channels(resolve_loss(spec0.protocol.loss, dcard.num_classes), dcard.num_classes)
        except SegarenaError as exc:
            pair_problems.append(_problem("config", exc.message, exc.fix))
            n_out = dcard.num_classes
        key = (m, n_out, dcard.channels, spec0.protocol.input_size, repr(sorted(spec0.model.kwargs.items())))
        if key not in checks:
            checks[key] = check_model(m, n_out, dcard.channels, spec0.protocol.input_size, dict(spec0.model.kwargs),
                                      trace=trace and m not in traced)
            if m in traced and checks[key].fwd_gflops is None:
                checks[key].fwd_gflops, checks[key].activations_gib = traced[m].fwd_gflops, traced[m].activations_gib
            traced.setdefault(m, checks[key])
        mc = checks[key]
        pair_problems += [_problem("model", msg) for msg in mc.problems]
        pretrained = spec0.model.pretrained
        if pretrained and not card.pretrained:
            alt = " (unet-vgg16 is the U-Net with an ImageNet encoder)" if m == "unet" else ""
            pair_problems.append(_problem("config", f"model {m!r} has no pretrained weights{alt}",
                                          f"set model_overrides.{m}.pretrained: false, or use a model with weights"))
        elif pretrained:
            for tag, w in card.pretrained.items():
                row = weights.setdefault((m, tag), weight_status(m, tag, w, pretrained))
                if row["status"] == "missing":
                    pair_problems.append(_problem("weights", f"{m} {tag} weights ({w.source}) are missing",
                                                  row["fix"]))
        ds = datasets[d]
        if ds["status"] in ("missing", "broken"):
            pair_problems.append(_problem("data", ds["problem"], ds["fix"]))
        n = ds["cases"] if ds["cases"] is not None else RELEASE_CASES.get(d)
        amp = spec0.protocol.amp and card.precision == "amp"
        for phase, spec in phases:
            pending_lr = phase == "cv" and study.lr_search is not None
            problems = list(pair_problems)
            try:
                validate_spec(spec)
            except SegarenaError as exc:
                problems.append(_problem("config", exc.message, exc.fix))
            run = RunPlan(run_id=None if pending_lr else spec.run_id,
                          name=(f"{m}__{d}__f{spec.data.fold}__s{spec.protocol.seed}__<lr from search>" if pending_lr
                                else spec.run_name),
                          model=m, dataset=d, phase=phase, fold=spec.data.fold, seed=spec.protocol.seed,
                          lr=None if pending_lr else spec.protocol.lr, epochs=spec.protocol.epochs, problems=problems)
            _estimate(run, spec, mc, n, measured, amp and spec.protocol.amp)
            runs.append(run)
    models = {mc.name: mc for mc in traced.values()}
    for mc in models.values():
        peak = max((r.peak_gib or 0.0 for r in runs if r.model == mc.name), default=0.0)
        if peak > REFERENCE_GPU_GIB:
            mc.notes.append(f"estimated peak {peak:.0f} GiB exceeds {REFERENCE_GPU_GIB:.0f} GiB at the study's batch "
                            f"size (PyTorch-path activations; a fused kernel or a smaller batch may be needed)")
    return StudyPlan(study.name, runs, models, list(weights.values()), datasets,
                     _levers(study, runs, lever_ratios, _data_gib(study, datasets)))


def _data_gib(study: StudySpec, datasets: dict[str, dict[str, Any]]) -> dict[str, float]:
    """GiB of each dataset's prepared arrays at the study's input size (uint8 images and masks): what
    ``protocol.data_on_device`` copies to the GPU."""
    from ..data import DATASETS

    s, out = study.protocol.input_size, {}
    for d, info in datasets.items():
        n = info["cases"] if info.get("cases") is not None else RELEASE_CASES.get(d)
        if n is not None:
            options = dict(study.dataset_overrides.get(d, {}).get("options", study.data.options))
            out[d] = n * s * s * (DATASETS.get(d).card_with(options).channels + 1) / 2**30
    return out


# ---- text -------------------------------------------------------------------------------------------------
def format_plan(plan: StudyPlan, allow_missing_data: bool = False) -> str:
    """The plan as the terminal shows it: models, weights, datasets, GPU-hours per phase, levers, problems."""
    lines = [f"study {plan.study}: {len(plan.runs)} runs "
             + " + ".join(f"{sum(r.phase == ph for r in plan.runs)} {ph}" for ph in ("lr_search", "cv")
                          if any(r.phase == ph for r in plan.runs))]
    by_model: dict[str, list[RunPlan]] = {}
    for r in plan.runs:
        by_model.setdefault(r.model, []).append(r)
    lines.append("\nmodels (built with meta parameters at the study's input size):")
    lines.append(f"  {'model':<26}{'params':>9}{'paper':>8}{'GFLOPs':>9}{'GPU-h':>8}{'peak GiB':>10}  throughput")
    for name, mc in plan.models.items():
        rs = by_model.get(name, [])
        gh = sum(r.gpu_seconds or 0 for r in rs) / 3600
        peak = max((r.peak_gib or 0 for r in rs), default=0)
        kinds = sorted({r.estimate for r in rs})
        par = ("-" if not mc.params else f"{mc.params / 1e6:.1f}M" if mc.params >= 1e5 else f"{mc.params / 1e3:.1f}k")
        pap = f"{mc.params_paper_m:.0f}M" if mc.params_paper_m else "-"
        fl = f"{mc.fwd_gflops:.0f}" if mc.fwd_gflops else "-"
        lines.append(f"  {name:<26}{par:>9}{pap:>8}{fl:>9}{gh:>8.1f}{peak:>10.1f}  {'/'.join(kinds)}")
    for name, mc in plan.models.items():
        lines += [f"  note: {name}: {note}" for note in mc.notes]
    if plan.weights:
        lines.append("\npretrained weights:")
        for w in plan.weights:
            where = w["path"] if w["status"] in ("cached", "local") else w["url"] or w["source"]
            sha = f", sha256 {w['sha256'][:12]}…" if w.get("sha256") else ", no sha256 pinned"
            lines.append(f"  {w['model']:<26}{w['tag']:<15}{w['status']:<13}{where}"
                         + (sha if w["status"] == "downloadable" else ""))
    lines.append("\ndatasets:")
    for d, info in plan.datasets.items():
        what = (f"{info['cases']} cases in {info['folder']} (first case decodes)" if info["status"] == "present"
                else info.get("url") or info.get("problem") or "")
        lines.append(f"  {d:<14}{info['status']:<13}{what}")
    gh, full, naive = plan.gpu_hours(), plan.gpu_hours(all_epochs=True), plan.gpu_hours(naive=True)
    lines.append(f"\nGPU-hours on {REFERENCE_GPU} (estimates unless marked measured):")
    for ph in [k for k in gh if k != "total"] + ["total"]:
        lines.append(f"  {ph:<10}{gh[ph]:>8.1f}   (without early stopping: {full[ph]:.1f}; naive, fp32 and every "
                     f"epoch: {naive[ph]:.1f})")
    lines.append("\nlevers:")
    for lv in plan.levers:
        lines.append(f"  [{'x' if lv['applied'] else ' '}] {lv['lever']}: {lv['effect']}")
    problems = plan.problems
    if problems:
        grouped: dict[tuple[str, str, str], list[RunPlan]] = {}
        for r, p in problems:
            grouped.setdefault((p["kind"], p["message"], p.get("fix", "")), []).append(r)
        lines.append(f"\nproblems ({len({id(r) for r, _ in problems})} of {len(plan.runs)} runs affected):")
        for (kind, msg, fix), rs in grouped.items():
            waived = " [waived by --allow-missing-data]" if allow_missing_data and kind == "data" else ""
            lines.append(f"  {kind}: {msg} ({len(rs)} runs){waived}" + (f"\n      fix: {fix}" if fix else ""))
    else:
        lines.append("\nno problems: every run can start")
    return "\n".join(lines)


def preflight(study: StudySpec, *, data_root: str | os.PathLike | None = None, allow_missing_data: bool = False,
              throughput: str | os.PathLike | None = None) -> tuple[StudySpec, StudyPlan]:
    """The check ``study run`` makes before anything trains: the study to run (without the datasets whose data
    is missing, when ``allow_missing_data``) and its plan; raises :class:`StudyRefused` while a run has a problem."""
    plan = plan_study(study, data_root=data_root, throughput=throughput)
    blocking = plan.blocking(allow_missing_data)
    if blocking:
        runs = {id(r) for r, _ in blocking}
        only_data = all(p["kind"] == "data" for _, p in blocking)
        raise StudyRefused(f"study {study.name}: {len(runs)} of {len(plan.runs)} runs have problems; nothing was "
                           f"started", plan=plan,
                           fix="fix the problems listed above" + (", or pass --allow-missing-data to run the "
                                                                  "datasets that are present" if only_data else ""))
    if allow_missing_data:
        missing = {r.dataset for r, p in plan.problems if p["kind"] == "data"}
        keep = tuple(d for d in study.datasets if d not in missing)
        if not keep:
            raise StudyRefused(f"study {study.name}: no dataset of the study is present; nothing was started",
                               plan=plan, fix="get at least one dataset (see the problems above)")
        study = dataclasses.replace(study, datasets=keep)
    return study, plan
