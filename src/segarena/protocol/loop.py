"""``run(spec)``: train on the train folds, select the checkpoint on validation only, evaluate once on test.

Behaviour varies only through the spec's data (loss, schedule, augmentation, early stopping, AMP, resolution, the
speed levers of :mod:`.speed`); there are no trainer subclasses. Batches are sliced from the memory-mapped prepared
cache (or gathered from its copy on the device) and augmented on the device, so the loop has no DataLoader and no
per-sample Python work.
"""
from __future__ import annotations

import os
from collections.abc import Callable
import platform
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._version import __version__
from .._errors import DataError, RunFailed, SegarenaError
from .._io import write_json
from ..config import RunSpec
from ..data.augment import AUGMENTATIONS, augment, normalize, normalize_unit, to_unit
from ..data.prepare import PreparedDataset, prepare
from ..data.splits import load_or_create, rotation, split_digest
from ..metrics.efficiency import device_name
from ..metrics.overlap import per_class, reduce
from ..models import count_params, create_model
from ..store import ResultsDir, RunStore
from .checkpoint import load_state, save_state, save_weights
from .losses import LossSpec, out_channels, resolve_loss, to_labels
from .context import Feed, Fit, RunContext, batches, fetch, to_device
from .precision import autocast, pick_device, use_amp
from .speed import as_input, device_arrays, memory_format, training_forward
from .testset import efficiency, evaluate
from .schedules import make_scheduler


@dataclass
class RunResult:
    store: RunStore
    summary: dict[str, Any]
    skipped: bool = False


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def run(spec: RunSpec, results: str | os.PathLike = "results", *, data_root: str | os.PathLike | None = None,
        device: str | torch.device | None = None, progress: bool = False, time_limit_s: float | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, until_epoch: int | None = None) -> RunResult:
    """Execute one run (or return its stored result if it is already complete).

    ``time_limit_s``: stop with a recorded failure after this many seconds of this call (checked between steps;
    the last finished epoch is kept, so a retry resumes). ``on_epoch``: called with each epoch's log entry (used by
    schedulers such as successive halving). ``until_epoch``: pause after this epoch (status ``paused``, the state
    kept); calling ``run`` again continues — successive halving promotes runs this way.
    """
    validate_spec(spec)
    rd = ResultsDir(results)
    spec = rd.bind(spec)
    if spec.split_digest is None:  # the first run on this split in this folder: make the split, then name the run
        spec = _make_split(spec, rd, data_root, progress)
    store = rd.run(spec)
    if store.is_complete():
        from ..data import stale_user_dataset

        done = store.summary()
        changed = stale_user_dataset(spec.data.name, spec.data.options, done.get("dataset"))
        if changed:
            raise SegarenaError(f"run {spec.run_name} was trained on {done['dataset']}, but the folder "
                                f"{spec.data.options.get('path')} now holds {changed}",
                                fix="use another --results folder, or set data.options.name to tell them apart")
        return RunResult(store, done, skipped=True)
    if not store.acquire():
        raise SegarenaError(f"run {spec.run_name} is being executed by another process",
                            fix="wait for it to finish; finished runs are reused automatically")
    tracker = None
    try:
        store.init()
        store.set_status("running", pid=os.getpid())
        deadline = time.time() + time_limit_s if time_limit_s else None
        tracker = _open_tracker(spec, store)
        summary = _execute(spec, store, data_root, pick_device(device), progress, deadline, on_epoch, until_epoch,
                           tracker)
        if summary.get("paused"):
            store.set_status("paused", epoch=summary["epochs_run"] - 1)
            if tracker is not None:
                tracker.close("FINISHED")
            return RunResult(store, summary)
        store.set_status("complete")
        if tracker is not None:
            tracker.final(summary)
            tracker.close("FINISHED")
        return RunResult(store, summary)
    except BaseException as exc:
        if tracker is not None:
            tracker.close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        reason = str(exc) if isinstance(exc, (SegarenaError, RunFailed)) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            reason = "interrupted"
        store.set_status("failed", error=reason.splitlines()[0] if reason else type(exc).__name__,
                         kind=type(exc).__name__)
        raise
    finally:
        store.release()


def _split_record(spec: RunSpec, data: PreparedDataset, path) -> dict[str, Any]:
    """The split record of ``data`` for ``spec``, read from (or written once to) ``path`` in the results folder."""
    d = spec.data
    return load_or_create(data.card.name, data.ids, data.groups, data.index["sha256"], data.index["phash"],
                          d.num_folds, d.split_seed, path, duplicates=d.duplicates, split=d.split,
                          meta=data.index["meta"])


def _make_split(spec: RunSpec, rd: ResultsDir, data_root, progress: bool) -> RunSpec:
    """Prepare the data, write its split beside the results, and return ``spec`` bound to that split."""
    d = spec.data
    data = prepare(d.name, spec.protocol.input_size, d.root or data_root, d.options, limit=d.limit, progress=progress)
    _split_record(spec, data, rd.split_path(spec))
    return rd.bind(spec)


def bound_spec(spec: RunSpec, results: str | os.PathLike, data_root: str | os.PathLike | None = None) -> RunSpec:
    """``spec`` with the split digest :func:`run` would give it in ``results`` (so its final run id and name),
    writing nothing: the split file there when it exists, else the split computed from the prepared data."""
    from dataclasses import replace

    from ..store import split_path

    path = split_path(results, spec)
    if spec.split_digest is not None:
        return spec
    if path.is_file():
        return ResultsDir(results, create=False).bind(spec)
    d = spec.data
    data = prepare(d.name, spec.protocol.input_size, d.root or data_root, d.options, limit=d.limit)
    return replace(spec, split_digest=split_digest(_split_record(spec, data, None)))


def _open_tracker(spec: RunSpec, store: RunStore):
    """TensorBoard/MLflow loggers of ``spec.tracking`` (None without any); a resumed run continues its logs."""
    if not spec.tracking.loggers:
        return None
    from .trackers import open_run_tracker

    start = len(store.log()) if store.state_file.is_file() else 0
    return open_run_tracker(spec, store.dir, start_epoch=start)


def validate_spec(spec: RunSpec) -> None:
    """Check every name and value before anything is read or written."""
    from ..data import DATASETS
    from ..models import MODELS
    from .losses import LOSSES

    MODELS.get(spec.model.name)
    DATASETS.get(spec.data.name)
    AUGMENTATIONS.get(spec.protocol.augmentation)
    if spec.protocol.loss != "auto":
        LOSSES.get(spec.protocol.loss)
    p = spec.protocol
    for name, value, lo in (("input_size", p.input_size, 8), ("epochs", p.epochs, 1), ("batch_size", p.batch_size, 1),
                            ("data.num_folds", spec.data.num_folds, 3)):
        if value < lo:
            raise SegarenaError(f"{name}={value} is too small", fix=f"use a value >= {lo}")
    if not 0 <= spec.data.fold < spec.data.num_folds:
        raise SegarenaError(f"data.fold={spec.data.fold} is out of range for {spec.data.num_folds} folds",
                            fix=f"use 0..{spec.data.num_folds - 1}")
    if p.lr <= 0:
        raise SegarenaError(f"protocol.lr={p.lr} must be positive", fix="e.g. --set protocol.lr=1e-4")
    if spec.tracking.loggers:
        from .trackers import check_tracking

        check_tracking(spec.tracking)


def train_batch(data: PreparedDataset, idx: list[int], feed: Feed, aug, gen: torch.Generator):
    """uint8 batch on the device -> [0, 1] -> the preset's augmentation (kornia) -> normalized (channels-last when the
    feed says so), with its masks. ``data`` needs only ``images`` and ``masks`` (gpu_check.py feeds random arrays)."""
    idx = sorted(idx)
    x, y = fetch(data, idx, feed)
    if not aug.ops:
        x = normalize(x, feed.mean, feed.std)
    else:
        x, y = augment(to_unit(x), y, aug, gen)
        x = normalize_unit(x, feed.mean, feed.std)
    return as_input(x, feed.channels_last), y


def train_step(forward, x: torch.Tensor, y: torch.Tensor, loss_fn, opt, scaler, feed: Feed,
               grad_clip: float | None = None, params=None) -> torch.Tensor:
    """One optimizer step: ``forward`` under autocast, the loss, a (scaled) backward, optional gradient clipping of
    ``params``, the step. Returns the detached loss (no device sync)."""
    with autocast(feed.device, feed.amp):
        logits = forward(x)
    loss = loss_fn(logits, y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)
    scaler.update()
    return loss.detach()


@torch.no_grad()
def _validate(model, data: PreparedDataset, idx: list[int], loss_spec: LossSpec, feed: Feed) -> dict[str, float]:
    """Validation at network resolution (model selection only; never the test split)."""
    model.eval()
    tp = fp = fn = 0
    losses = []
    for b in batches(idx, feed.batch_size):
        x, y, _ = to_device(data, b, feed)
        with autocast(feed.device, feed.amp):
            logits = model(x)
        losses.append(float(loss_spec.fn(logits, y)) * len(b))
        pred = to_labels(logits)
        fg_p, fg_r = pred > 0, y > 0
        same = pred == y
        tp += int((fg_r & same).sum())
        fp += int((fg_p & ~same).sum())
        fn += int((fg_r & ~same).sum())
    denom = 2 * tp + fp + fn
    return {"val_loss": sum(losses) / max(len(idx), 1), "val_mdsc": 2 * tp / denom if denom else 1.0}


def _execute(spec: RunSpec, store: RunStore, data_root, device: torch.device, progress: bool,
             deadline: float | None = None, on_epoch=None, until_epoch: int | None = None,
             tracker=None) -> dict[str, Any]:
    """One run as three named steps over one :class:`RunContext`: fit, evaluate (unless validation only), summarize."""
    ctx = _setup(spec, store, data_root, device, progress)
    fit = _fit(ctx, deadline, on_epoch, until_epoch, tracker)
    if fit.paused:
        return {"paused": True, "epochs_run": len(fit.log), "log": fit.log,
                "best_val": {spec.protocol.monitor: _sign(spec) * fit.best}}
    tested = evaluate(ctx) if spec.protocol.evaluate_test else None
    summary = _summarize(ctx, fit, tested)
    write_json(store.path("summary.json"), summary)
    store.state_file.unlink(missing_ok=True)
    return summary


def _sign(spec: RunSpec) -> float:
    return 1.0 if spec.protocol.monitor == "val_mdsc" else -1.0


def _setup(spec: RunSpec, store: RunStore, data_root, device: torch.device, progress: bool) -> RunContext:
    """Prepare the data, fix and record the split, seed, build the model and its loss: the run's context."""
    p, d = spec.protocol, spec.data
    t_start = time.time()
    data = prepare(d.name, p.input_size, d.root or data_root, d.options, limit=d.limit, progress=progress)
    card = data.card
    split_path = ResultsDir(store.dir.parents[1], create=False).split_path(spec)
    split_rec = _split_record(spec, data, split_path)
    if split_digest(split_rec) != spec.split_digest:
        raise SegarenaError(f"the split in {split_path} changed since run {spec.run_name} was named",
                            fix="run it again: the run is named after the split it finds")
    split = rotation(split_rec["folds"], data.ids, d.num_folds, d.fold)
    if not split.train or not split.val or not split.test:
        raise SegarenaError(f"fold {d.fold} of {d.name}: empty train, validation or test set",
                            fix="use more cases (data.limit) or fewer folds")
    if not any(np.asarray(data.masks[i]).any() for i in split.train):  # stops at the first foreground pixel
        raise DataError(f"{d.name}: all {len(split.train)} training masks of fold {d.fold} are empty (background "
                        "only), so there is nothing to learn and every score would be meaningless",
                        fix="check the masks folder and data.options.mask_values (e.g. masks stored as 0/1 "
                            "read as 0/255), or run `segarena datasets check`")
    write_json(store.path("split.json"), {k: [data.ids[i] for i in getattr(split, k)] for k in ("train", "val", "test")}
               | {"duplicates": split_rec["duplicates"], "removed": split_rec.get("removed", []),
                  "duplicate_policy": d.duplicates, "split": d.split, "num_folds": d.num_folds, "fold": d.fold})

    seed_everything(p.seed, p.deterministic)
    loss_spec = resolve_loss(p.loss, card.num_classes)
    n_out = out_channels(loss_spec, card.num_classes)
    model = memory_format(create_model(spec.model.name, n_out, in_channels=card.channels,
                                       pretrained=spec.model.pretrained, **spec.model.kwargs).to(device),
                          p.channels_last)
    mean, std = model.card.normalization(spec.model.pretrained)  # the weights' own, when they state it
    feed = Feed(device, use_amp(p.amp, device, model.card), mean, std, p.batch_size, channels_last=p.channels_last,
                arrays=device_arrays(data.images, data.masks, device, p.data_on_device))
    aug = AUGMENTATIONS.get(p.augmentation)
    write_json(store.path("augmentation.json"), {**aug.to_dict(), "description": aug.description,
                                                 "source": aug.source, "notes": list(aug.notes), "seed": p.seed})
    return RunContext(spec, store, data, split, model, loss_spec, n_out, feed, aug, progress, t_start)


def _fit(ctx: RunContext, deadline: float | None, on_epoch, until_epoch: int | None, tracker) -> Fit:
    """Train epoch by epoch, validate after each, keep the best checkpoint and a resume state; stop early on
    ``patience``, pause after ``until_epoch``. A resume state left by an interrupted call is continued."""
    from ..progress import progress_bar

    spec, model, store, feed = ctx.spec, ctx.model, ctx.store, ctx.feed
    p, card = spec.protocol, ctx.data.card
    forward = training_forward(model, p.compile)  # checkpoints, resume state and evaluation use `model` itself
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = make_scheduler(p.schedule, opt, p.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=feed.amp and not torch.cuda.is_bf16_supported())
    gen = torch.Generator().manual_seed(p.seed)
    fit = Fit(log=[], best_epoch=-1)
    bad, start_epoch, sign = 0, 0, _sign(spec)
    ckpt_info = {"model": spec.model.name, "kwargs": spec.model.kwargs, "num_outputs": ctx.n_out,
                 "in_channels": card.channels, "labels": list(card.labels), "input_size": p.input_size,
                 "mean": list(feed.mean), "std": list(feed.std), "dataset": card.name, "run_id": spec.run_id,
                 "loss": ctx.loss.name}
    state = load_state(store.state_file)
    if state is not None:  # resume an interrupted run from its last finished epoch
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        start_epoch, bad = state["epoch"] + 1, state["bad"]
        fit.best, fit.best_epoch = state["best"], state["best_epoch"]
        fit.log = store.log()[:start_epoch]
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])

    # one line in a terminal; a line per ~10% (at least per epoch of a short run) in a log
    bar = progress_bar(range(start_epoch, p.epochs), desc=f"train {spec.model.name[:40]}", enabled=ctx.progress,
                       unit="epoch")
    for epoch in bar:
        if bad and p.patience is not None and bad >= p.patience:
            fit.stopped_early = True
            break
        t0 = time.time()
        total, n_batches = _train_epoch(ctx, forward, opt, scaler, gen, epoch, deadline)
        train_time = time.time() - t0
        lr = opt.param_groups[0]["lr"]
        sched.step()
        val = _validate(model, ctx.data, ctx.split.val, ctx.loss, feed)
        score = sign * val[p.monitor]
        if score > fit.best:
            fit.best, fit.best_epoch, bad = score, epoch, 0
            save_weights(model, store.dir / "checkpoint", ckpt_info | {"epoch": epoch, p.monitor: val[p.monitor]})
        else:
            bad += 1
        fit.log.append({"epoch": epoch, "lr": lr, "train_loss": total / n_batches, **val,
                        "steps": n_batches, "train_seconds": train_time, "seconds": time.time() - t0})
        write_json(store.path("log.json"), fit.log)
        if on_epoch is not None:
            on_epoch(fit.log[-1])
        if tracker is not None:
            tracker.epoch(fit.log[-1], feed.batch_size)
        save_state(store.state_file, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "scheduler": sched.state_dict(), "generator": gen.get_state(),
                                      "best": fit.best, "best_epoch": fit.best_epoch, "bad": bad,
                                      **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {})})
        bar.set_postfix(loss=f"{total / n_batches:.3f}", val_mdsc=f"{val['val_mdsc']:.3f}")
        if until_epoch is not None and epoch >= until_epoch and epoch < p.epochs - 1:
            fit.paused = True
            return fit
    else:
        fit.stopped_early = bool(p.patience is not None and bad >= p.patience and len(fit.log) < p.epochs)
    fit.train_peak_mb = _peak_memory_mb(feed.device)
    return fit


def _train_epoch(ctx: RunContext, forward, opt, scaler, gen: torch.Generator, epoch: int,
                 deadline: float | None) -> tuple[float, int]:
    """One epoch of optimizer steps of ``forward`` (the model, or its compiled wrapper) over a shuffled training
    split: (summed loss, number of steps)."""
    p, model, device = ctx.spec.protocol, ctx.model, ctx.feed.device
    bs = p.batch_size
    model.train()
    train_idx = np.asarray(ctx.split.train)
    order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
    n_batches = max(1, len(order) // bs)
    if p.max_steps_per_epoch:
        n_batches = min(n_batches, p.max_steps_per_epoch)
    total = torch.zeros((), device=device)
    for b in range(n_batches):
        if deadline and time.time() > deadline:
            raise RunFailed(f"time limit exceeded during epoch {epoch} (the last finished epoch is kept; "
                            f"a retry resumes from it)")
        x, y = train_batch(ctx.data, order[b * bs:(b + 1) * bs].tolist(), ctx.feed, ctx.aug, gen)
        total += train_step(forward, x, y, ctx.loss.fn, opt, scaler, ctx.feed, p.grad_clip, model.parameters())
        # finiteness is checked every 16 steps and at the end of the epoch: a per-step check would force a
        # GPU sync on every step; a NaN still stops the run within 16 steps, before any checkpoint is saved
        if (b % 16 == 15 or b == n_batches - 1) and not torch.isfinite(total):
            raise RunFailed(f"non-finite training loss at epoch {epoch} (by step {b}): lower protocol.lr or "
                            f"disable protocol.amp")
    total = float(total)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return total, n_batches


def _summarize(ctx: RunContext, fit: Fit, tested: tuple[Any, float] | None) -> dict[str, Any]:
    """``summary.json``: the run's identity, training facts, and (after a test) metrics, cost and versions."""
    spec, p, model, device = ctx.spec, ctx.spec.protocol, ctx.model, ctx.feed.device
    train_seconds = sum(e["seconds"] for e in fit.log)
    base = {"run_id": spec.run_id, "run_name": spec.run_name, "model": spec.model.name,
            "family": model.card.family, "dataset": ctx.data.card.name, "fold": spec.data.fold, "seed": p.seed}
    if tested is None:  # model-selection run: validation only, the test split is never touched
        best_val = max(e[p.monitor] for e in fit.log) if p.monitor == "val_mdsc" else min(e[p.monitor] for e in fit.log)
        return base | {"lr": p.lr, "validation_only": True, "best_val": {p.monitor: best_val},
                       "best_epoch": fit.best_epoch, "epochs_run": len(fit.log), "train_seconds": train_seconds,
                       "wall_seconds": time.time() - ctx.t_start, "params": count_params(model),
                       "device": device_name(device), "metrics": {}, "per_class": {}}
    df, t_test = tested
    cost = efficiency(model, p, ctx.data.card.channels, device)
    return base | {
        "metrics": reduce(df), "per_class": per_class(df),
        "empty_reference_cases": int(df.groupby("case_id")["ref_empty"].all().sum()),
        "best_epoch": fit.best_epoch, "epochs_run": len(fit.log), "stopped_early": fit.stopped_early,
        "train_seconds": train_seconds, "test_seconds": time.time() - t_test, "wall_seconds": time.time() - ctx.t_start,
        "params": count_params(model), "efficiency": cost, "train_peak_memory_mb": fit.train_peak_mb,
        "seconds_per_epoch": train_seconds / max(len(fit.log), 1), "n_train": len(ctx.split.train),
        "n_val": len(ctx.split.val), "n_test": len(ctx.split.test),
        "eval_resolution": p.eval_resolution, "amp_used": ctx.feed.amp, "device": device_name(device),
        "data_on_device": ctx.feed.arrays is not None,
        "versions": {"segarena": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory of training: CUDA max allocated, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


__all__ = ["RunResult", "run", "train_batch", "train_step"]
