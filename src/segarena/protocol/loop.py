"""``run(spec)``: train on the train folds, select the checkpoint on validation only, evaluate once on test.

Behaviour varies only through the spec's data (loss, schedule, augmentation, early stopping, AMP, resolution);
there are no trainer subclasses. Batches are sliced from the memory-mapped prepared cache and augmented on the
device, so the loop has no DataLoader and no per-sample Python work.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
import platform
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from .._errors import RunFailed, SegarenaError
from .._io import atomic_write, write_json
from ..config import RunSpec
from ..data.augment import AUGMENTATIONS, augment, normalize
from ..data.prepare import PreparedDataset, prepare
from ..data.splits import load_or_create, rotation
from ..metrics.distance import case_surface_metrics
from ..metrics.overlap import case_records, confusion, per_class, reduce
from ..models import count_params, create_model
from ..runner.store import ResultsDir, RunStore
from .checkpoint import load_state, load_weights, save_state, save_weights
from .losses import out_channels, resolve_loss, to_labels
from .schedules import make_scheduler


@dataclass
class RunResult:
    store: RunStore
    summary: dict[str, Any]
    skipped: bool = False


def pick_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
    store = ResultsDir(results).run(spec)
    if store.is_complete():
        return RunResult(store, store.summary(), skipped=True)
    if not store.acquire():
        raise SegarenaError(f"run {spec.run_name} is being executed by another process",
                            fix="wait for it to finish; finished runs are reused automatically")
    try:
        store.init()
        store.set_status("running", pid=os.getpid())
        deadline = time.time() + time_limit_s if time_limit_s else None
        summary = _execute(spec, store, data_root, pick_device(device), progress, deadline, on_epoch, until_epoch)
        if summary.get("paused"):
            store.set_status("paused", epoch=summary["epochs_run"] - 1)
            return RunResult(store, summary)
        store.set_status("complete")
        return RunResult(store, summary)
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, (SegarenaError, RunFailed)) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            reason = "interrupted"
        store.set_status("failed", error=reason.splitlines()[0] if reason else type(exc).__name__,
                         kind=type(exc).__name__)
        raise
    finally:
        store.release()


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


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _batches(indices: list[int], bs: int) -> list[list[int]]:
    return [indices[i:i + bs] for i in range(0, len(indices), bs)]


def _to_device(data: PreparedDataset, idx: list[int], device: torch.device, mean, std):
    idx = sorted(idx)  # memmap locality
    x = torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(device, non_blocking=True)
    y = torch.from_numpy(np.ascontiguousarray(data.masks[idx])).to(device, non_blocking=True).long()
    return normalize(x, mean, std), y, idx


@torch.no_grad()
def _validate(model, data: PreparedDataset, idx: list[int], loss_spec, bs: int, device, amp: bool, mean, std,
              num_classes: int) -> dict[str, float]:
    """Validation at network resolution (model selection only; never the test split)."""
    model.eval()
    tp = fp = fn = 0
    losses = []
    for b in _batches(idx, bs):
        x, y, _ = _to_device(data, b, device, mean, std)
        with _autocast(device, amp):
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


@torch.no_grad()
def predict_logits(model, x: torch.Tensor, device: torch.device, amp: bool) -> torch.Tensor:
    model.eval()
    with _autocast(device, amp):
        return model(x).float()


def _evaluate_test(model, data: PreparedDataset, idx: list[int], spec: RunSpec, device, amp: bool, mean, std,
                   extra: dict[str, Any], progress: bool) -> tuple[list[dict[str, Any]], np.ndarray]:
    from ..progress import progress_bar

    labels = data.card.labels
    k = len(labels)
    records: list[dict[str, Any]] = []
    preds = np.zeros((len(idx), data.size, data.size), np.uint8)
    pos = {c: i for i, c in enumerate(idx)}
    for b in progress_bar(_batches(idx, spec.protocol.batch_size), desc=f"test ({len(idx)} cases)",
                          enabled=progress, unit="batch"):
        x, _, order = _to_device(data, b, device, mean, std)
        logits = predict_logits(model, x, device, amp)
        for j, case in enumerate(order):
            preds[pos[case]] = to_labels(logits[j:j + 1])[0].cpu().numpy().astype(np.uint8)
            if spec.protocol.eval_resolution == "native":
                h, w = data.native_shape(case)
                up = F.interpolate(logits[j:j + 1], size=(h, w), mode="bilinear", align_corners=False)
                pred = to_labels(up)[0].cpu().numpy()
                ref = data.native_mask(case)
            else:
                pred = preds[pos[case]]
                ref = np.asarray(data.masks[case])
                h, w = ref.shape
            counts = confusion(pred, ref, k)
            spacing = data.meta(case).get("spacing_mm")
            if spacing and spec.protocol.eval_resolution == "network":  # pixels were resized: rescale spacing
                nh, nw = data.native_shape(case)
                spacing = (spacing[0] * nh / h, spacing[1] * nw / w)
            recs = case_records(data.ids[case], counts, labels,
                                {**extra, "height": h, "width": w, "spacing_unit": "mm" if spacing else "px",
                                 "spacing_y": float(spacing[0]) if spacing else 1.0,
                                 "spacing_x": float(spacing[1]) if spacing else 1.0})
            surf = case_surface_metrics(pred, ref, range(1, k), spacing or (1.0, 1.0), spec.protocol.nsd_tau)
            for r, sm in zip(recs, surf):
                r.update({key: sm[key] for key in ("hd", "hd95", "assd", "nsd", "nsd_tau")}, surface_empty=sm["empty"])
            records += recs
    return records, preds


def _execute(spec: RunSpec, store: RunStore, data_root, device: torch.device, progress: bool,
             deadline: float | None = None, on_epoch=None, until_epoch: int | None = None) -> dict[str, Any]:
    import pandas as pd

    from ..progress import progress_bar

    p, d = spec.protocol, spec.data
    t_start = time.time()
    data = prepare(d.name, p.input_size, d.root or data_root, d.options, limit=d.limit, progress=progress)
    card = data.card
    split_rec = load_or_create(d.name, data.ids, data.groups, data.index["sha256"], data.index["phash"],
                               d.num_folds, d.split_seed, duplicates=d.duplicates, split=d.split,
                               meta=data.index["meta"])
    split = rotation(split_rec["folds"], data.ids, d.num_folds, d.fold)
    if not split.train or not split.val or not split.test:
        raise SegarenaError(f"fold {d.fold} of {d.name}: empty train, validation or test set",
                            fix="use more cases (data.limit) or fewer folds")
    write_json(store.path("split.json"), {k: [data.ids[i] for i in getattr(split, k)] for k in ("train", "val", "test")}
               | {"duplicates": split_rec["duplicates"], "removed": split_rec.get("removed", []),
                  "duplicate_policy": d.duplicates, "split": d.split, "num_folds": d.num_folds, "fold": d.fold})

    seed_everything(p.seed, p.deterministic)
    num_classes = card.num_classes
    loss_spec = resolve_loss(p.loss, num_classes)
    n_out = out_channels(loss_spec, num_classes)
    model = create_model(spec.model.name, n_out, in_channels=card.channels, pretrained=spec.model.pretrained,
                         **spec.model.kwargs).to(device)
    mean, std = model.card.mean, model.card.std
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = make_scheduler(p.schedule, opt, p.epochs)
    amp = p.amp and device.type == "cuda" and "fp32" not in model.card.notes.lower()
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    gen = torch.Generator().manual_seed(p.seed)
    aug = AUGMENTATIONS.get(p.augmentation)
    start_epoch, best, best_epoch, bad, log = 0, -math.inf, -1, 0, []
    sign = 1.0 if p.monitor == "val_mdsc" else -1.0
    ckpt_info = {"model": spec.model.name, "kwargs": spec.model.kwargs, "num_outputs": n_out,
                 "in_channels": card.channels, "labels": list(card.labels), "input_size": p.input_size,
                 "mean": list(mean), "std": list(std), "dataset": d.name, "run_id": spec.run_id,
                 "loss": loss_spec.name}

    state = load_state(store.state_file)
    if state is not None:  # resume an interrupted run from its last finished epoch
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        start_epoch, best, best_epoch, bad = state["epoch"] + 1, state["best"], state["best_epoch"], state["bad"]
        log = store.log()[:start_epoch]
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])

    bs = p.batch_size
    train_idx = np.asarray(split.train)
    stopped_early = False
    # one line in a terminal; a line per ~10% (at least per epoch of a short run) in a log
    bar = progress_bar(range(start_epoch, p.epochs), desc=f"train {spec.run_name[:40]}", enabled=progress,
                       unit="epoch")
    for epoch in bar:
        if bad and p.patience is not None and bad >= p.patience:
            stopped_early = True
            break
        t0 = time.time()
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        n_batches = max(1, len(order) // bs)
        if p.max_steps_per_epoch:
            n_batches = min(n_batches, p.max_steps_per_epoch)
        total = torch.zeros((), device=device)
        for b in range(n_batches):
            if deadline and time.time() > deadline:
                raise RunFailed(f"time limit exceeded during epoch {epoch} (the last finished epoch is kept; "
                                f"a retry resumes from it)")
            x, y, _ = _to_device(data, order[b * bs:(b + 1) * bs].tolist(), device, mean, std)
            x, y = augment(x, y, aug, gen)
            with _autocast(device, amp):
                logits = model(x)
            loss = loss_spec.fn(logits, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if p.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
            scaler.step(opt)
            scaler.update()
            total += loss.detach()
            # finiteness is checked every 16 steps and at the end of the epoch: a per-step check would force a
            # GPU sync on every step; a NaN still stops the run within 16 steps, before any checkpoint is saved
            if (b % 16 == 15 or b == n_batches - 1) and not torch.isfinite(total):
                raise RunFailed(f"non-finite training loss at epoch {epoch} (by step {b}): lower protocol.lr or "
                                f"disable protocol.amp")
        total = float(total)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.time() - t0
        lr = opt.param_groups[0]["lr"]
        sched.step()
        val = _validate(model, data, split.val, loss_spec, bs, device, amp, mean, std, num_classes)
        score = sign * val[p.monitor]
        if score > best:
            best, best_epoch, bad = score, epoch, 0
            save_weights(model, store.dir / "checkpoint", ckpt_info | {"epoch": epoch, p.monitor: val[p.monitor]})
        else:
            bad += 1
        log.append({"epoch": epoch, "lr": lr, "train_loss": total / n_batches, **val,
                    "steps": n_batches, "train_seconds": train_time, "seconds": time.time() - t0})
        write_json(store.path("log.json"), log)
        if on_epoch is not None:
            on_epoch(log[-1])
        save_state(store.state_file, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "scheduler": sched.state_dict(), "generator": gen.get_state(), "best": best,
                                      "best_epoch": best_epoch, "bad": bad,
                                      **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {})})
        bar.set_postfix(loss=f"{total / n_batches:.3f}", val_mdsc=f"{val['val_mdsc']:.3f}")
        if until_epoch is not None and epoch >= until_epoch and epoch < p.epochs - 1:
            return {"paused": True, "epochs_run": len(log), "log": log, "best_val": {p.monitor: sign * best}}
    else:
        stopped_early = bool(p.patience is not None and bad >= p.patience and len(log) < p.epochs)
    train_seconds = sum(e["seconds"] for e in log)
    train_peak_mb = _peak_memory_mb(device)
    if not p.evaluate_test:  # model-selection run: validation only, the test split is never touched
        best_val = max(e[p.monitor] for e in log) if p.monitor == "val_mdsc" else min(e[p.monitor] for e in log)
        summary = {"run_id": spec.run_id, "run_name": spec.run_name, "model": spec.model.name,
                   "family": model.card.family, "dataset": d.name, "fold": d.fold, "seed": p.seed, "lr": p.lr,
                   "validation_only": True, "best_val": {p.monitor: best_val}, "best_epoch": best_epoch,
                   "epochs_run": len(log), "train_seconds": train_seconds, "wall_seconds": time.time() - t_start,
                   "params": count_params(model), "device": _device_name(device), "metrics": {}, "per_class": {}}
        write_json(store.path("summary.json"), summary)
        store.state_file.unlink(missing_ok=True)
        return summary

    # test: once, with the checkpoint chosen on validation
    t_test = time.time()
    load_weights(model, store.dir / "checkpoint")
    extra = {"run_id": spec.run_id, "model": spec.model.name, "dataset": d.name, "fold": d.fold, "seed": p.seed}
    records, preds = _evaluate_test(model, data, split.test, spec, device, amp, mean, std, extra, progress)
    df = pd.DataFrame.from_records(records)
    atomic_write(store.path("records.parquet"), lambda tmp: df.to_parquet(tmp, index=False), suffix=".parquet")
    atomic_write(store.path("predictions.npz"),
                 lambda tmp: np.savez_compressed(tmp, ids=np.array([data.ids[i] for i in split.test]), labels=preds),
                 suffix=".npz")
    _save_gallery(store, data, split.test, preds, df)
    efficiency = _efficiency(model, p, card.channels, device)
    summary = {
        "run_id": spec.run_id, "run_name": spec.run_name, "model": spec.model.name, "family": model.card.family,
        "dataset": d.name, "fold": d.fold, "seed": p.seed, "metrics": reduce(df), "per_class": per_class(df),
        "empty_reference_cases": int(df.groupby("case_id")["ref_empty"].all().sum()),
        "best_epoch": best_epoch, "epochs_run": len(log), "stopped_early": stopped_early,
        "train_seconds": train_seconds, "test_seconds": time.time() - t_test, "wall_seconds": time.time() - t_start,
        "params": count_params(model), "efficiency": efficiency, "train_peak_memory_mb": train_peak_mb,
        "seconds_per_epoch": train_seconds / max(len(log), 1), "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
        "eval_resolution": p.eval_resolution, "amp_used": amp, "device": _device_name(device),
        "versions": {"segarena": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    write_json(store.path("summary.json"), summary)
    store.state_file.unlink(missing_ok=True)
    return summary


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory of training: CUDA max allocated, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _efficiency(model, p, in_channels: int, device: torch.device) -> dict[str, Any]:
    """Parameters, FLOPs/MACs, latency (batch 1) and throughput at the protocol's input size on this device."""
    from ..metrics.efficiency import measure_efficiency

    try:
        eff = measure_efficiency(model, p.input_size, in_channels=in_channels, device=device,
                                 batch_size=p.batch_size, warmup=1, repeats=3 if device.type == "cpu" else 20,
                                 dtype=torch.bfloat16 if p.amp and device.type == "cuda" else torch.float32,
                                 name=model.card.name)
        return eff.to_dict()
    except Exception as exc:  # noqa: BLE001 - a cost measurement must never lose a finished run's results
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def _save_gallery(store: RunStore, data: PreparedDataset, test_idx: list[int], preds: np.ndarray, df,
                  n: int = 3) -> None:
    """Best and worst test cases (by per-case Dice) as image | overlay PNGs, for the report."""
    from PIL import Image

    from ..report.overlay import side_by_side

    case_dice = df.groupby("case_id")["dice"].mean().sort_values(kind="stable")
    pos = {data.ids[i]: (j, i) for j, i in enumerate(test_idx)}
    folder = store.dir / "gallery"
    folder.mkdir(exist_ok=True)
    picks = [("worst", c) for c in case_dice.index[:n]] + [("best", c) for c in case_dice.index[::-1][:n]]
    for rank, (kind, cid) in enumerate(picks):
        j, i = pos[cid]
        strip = side_by_side(np.asarray(data.images[i]), np.asarray(data.masks[i]), preds[j])
        name = f"{kind}_{rank % n}_{cid}_dice{case_dice[cid]:.3f}.png"
        atomic_write(folder / name, lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"), suffix=".png")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


__all__ = ["RunResult", "run", "predict_logits", "pick_device"]
