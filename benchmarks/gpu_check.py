"""The one GPU check: can the paper's study run on this GPU, and what will it cost? Minutes, not hours.

    python benchmarks/gpu_check.py                       # one CUDA device; writes gpu_check.json
    python benchmarks/gpu_check.py --out x.json --levers unet-vgg16 segformer-b3

For each of the 11 models of ``configs/studies/borst2026.yaml`` at 512x512, batch 8, with the study's protocol
options (bf16 autocast, except SegNeXt-L which the paper trained in fp32; the speed levers channels_last, compile
and data_on_device as the study sets them; its augmentation): a few real AdamW training steps on random uint8 data,
through the training loop's own functions (``protocol.speed`` applies the levers, ``loop.train_batch`` gathers and
augments each batch, ``loop.train_step`` takes the step), checking the loss is finite, then images/s and peak
memory. ``--levers MODEL...`` also times those models with every lever off and with each lever alone on: the
ratios the study plan reports as measured. Then one forward of each foundation model (SAM, DINOv2, Mask2Former).
Then the study's projected GPU-hours from the measured throughputs (``segarena study plan`` with the measured rows),
with and without early stopping. The optional fast kernels (mamba-ssm's selective scan, the DCNv3 CUDA extension,
flash attention) are used when installed, and reported.

Everything goes into one JSON file; ``segarena study plan STUDY --throughput gpu_check.json`` uses it. Without CUDA
the script prints why it skipped and writes a JSON saying so (exit 0). A time budget (``--budget-s``, default
360 s for the models; the projection then takes well under a minute) keeps the whole check within 8 minutes on
one H100/H200-class GPU: models left when it runs out are listed
as not run. Random weights throughout: nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "configs" / "studies" / "borst2026.yaml"
FOUNDATION = ("sam-vit-b", "dinov2-b-dpt", "mask2former-swin-t")
#: random cases per batch size held as the "prepared cache" the batches are gathered from
CASES_PER_BATCH = 4
#: the levers ``--levers`` times one by one (gpu_check keyword, the protocol option)
LEVERS = (("channels_last", "channels_last"), ("compile_model", "compile"), ("data_on_device", "data_on_device"))


def study_models(study_path: Path = STUDY) -> list[tuple[str, Any]]:
    """(model, protocol) for every model of the study: the protocol its CV runs get (precision, speed levers)."""
    from segarena.runner.study import load_study

    study = load_study(study_path)
    return [(m, study.cv_specs(m, study.datasets[0])[0].protocol) for m in study.models]


def loop_options(protocol: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`train_steps` that a protocol sets."""
    return {"amp": protocol.amp, "channels_last": protocol.channels_last, "compile_model": protocol.compile,
            "data_on_device": protocol.data_on_device, "augmentation": protocol.augmentation}


def fast_kernels() -> dict[str, Any]:
    """Which optional fused kernels are importable (the models use them on CUDA when they are)."""
    from segarena.models.zoo._dcnv3 import compiled_dcnv3_version, has_compiled_dcnv3
    from segarena.models.zoo._selective_scan import mamba_ssm_available

    out: dict[str, Any] = {"mamba_ssm": mamba_ssm_available(), "dcnv3": has_compiled_dcnv3()}
    if out["dcnv3"]:
        out["dcnv3_version"] = compiled_dcnv3_version()
    try:
        import flash_attn  # noqa: F401

        out["flash_attn_package"] = True
    except ImportError:
        out["flash_attn_package"] = False
    out["torch_flash_sdp"] = bool(torch.cuda.is_available() and torch.backends.cuda.flash_sdp_enabled())
    return out


def train_steps(name: str, device: torch.device, *, amp: bool, size: int = 512, batch: int = 8, steps: int = 5,
                warmup: int = 2, channels_last: bool = False, compile_model: bool = False,
                data_on_device: bool | str = False, augmentation: str = "none") -> dict[str, Any]:
    """``warmup`` + ``steps`` AdamW steps of ``name`` (one logit, BCE) on random uint8 images and masks, fed and
    stepped by the training loop's own functions with the given options.

    Returns images/s over the timed steps, the warm-up time (compilation included), the peak memory (CUDA) and
    whether every loss was finite. Any failure (out of memory included) is returned as the row's error, so one
    model cannot stop the check."""
    row: dict[str, Any] = {"model": name, "amp": amp, "batch_size": batch, "size": size, "steps": steps,
                           "channels_last": channels_last, "compiled": compile_model,
                           "data_on_device": data_on_device, "augmentation": augmentation, "ok": False}
    try:
        _timed_steps(row, name, device, amp=amp, size=size, batch=batch, steps=steps, warmup=warmup,
                     channels_last=channels_last, compile_model=compile_model, data_on_device=data_on_device,
                     augmentation=augmentation)
        row["ok"] = row["finite"]
        if not row["finite"]:
            row["error"] = "non-finite loss"
    except Exception as exc:  # noqa: BLE001 - the row records it; the check goes on with the next model
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        row["oom"] = isinstance(exc, torch.cuda.OutOfMemoryError)
    if device.type == "cuda":  # the model, its optimizer and the data went with _timed_steps' frame
        torch.cuda.empty_cache()
    return row


def _timed_steps(row: dict[str, Any], name: str, device: torch.device, *, amp: bool, size: int, batch: int,
                 steps: int, warmup: int, channels_last: bool, compile_model: bool, data_on_device: bool | str,
                 augmentation: str) -> None:
    from segarena.data.augment import AUGMENTATIONS
    from segarena.models import count_params, create_model
    from segarena.protocol.context import Feed
    from segarena.protocol.loop import train_batch, train_step
    from segarena.protocol.losses import resolve_loss
    from segarena.protocol.precision import use_amp
    from segarena.protocol.speed import device_arrays, memory_format, training_forward

    torch.manual_seed(0)
    model = memory_format(create_model(name, 1, in_channels=3).to(device).train(), channels_last)
    row["params"] = count_params(model)
    forward = training_forward(model, compile_model)
    loss = resolve_loss("auto", 2)  # BCE on one logit, as the study's binary task
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    rng = np.random.default_rng(0)
    n = batch * CASES_PER_BATCH
    data = SimpleNamespace(images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                           masks=(rng.random((n, size, size)) > 0.5).astype(np.uint8))
    mean, std = model.card.normalization(False)
    feed = Feed(device, use_amp(amp, device, model.card), mean, std, batch, channels_last=channels_last,
                arrays=device_arrays(data.images, data.masks, device, data_on_device))
    row["data_on_device"] = feed.arrays is not None  # as resolved ("auto": whether it fits)
    scaler = torch.amp.GradScaler("cuda", enabled=feed.amp and not torch.cuda.is_bf16_supported())
    aug, gen = AUGMENTATIONS.get(augmentation), torch.Generator().manual_seed(0)
    losses: list[torch.Tensor] = []

    def step(i: int) -> None:
        first = (i * batch) % n
        x, y = train_batch(data, list(range(first, first + batch)), feed, aug, gen)
        losses.append(train_step(forward, x, y, loss.fn, opt, scaler, feed))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    sync()
    row["warmup_seconds"] = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    sync()
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    values = [float(v) for v in torch.stack(losses).float().cpu()]  # one sync, after the timing
    row.update(train_img_s=batch * steps / elapsed, step_seconds=elapsed / steps, losses=values,
               finite=all(math.isfinite(v) for v in values))


def lever_rows(name: str, device: torch.device, protocol: Any, **kw: Any) -> list[dict[str, Any]]:
    """``name`` with every lever off, then with each lever alone on (``data_on_device``: required): one row per
    lever with its throughput ratio to the all-off row and its extra warm-up time (compilation)."""
    base_opts = {**loop_options(protocol), "channels_last": False, "compile_model": False, "data_on_device": False}
    base = train_steps(name, device, **base_opts, **kw)
    rows = []
    for arg, lever in LEVERS:
        on = train_steps(name, device, **{**base_opts, arg: True}, **kw)
        row = {"model": name, "lever": lever, "ok": bool(base["ok"] and on["ok"]),
               "baseline_img_s": base.get("train_img_s"), "train_img_s": on.get("train_img_s"),
               "error": on.get("error") or base.get("error")}
        if row["ok"]:
            row["ratio"] = on["train_img_s"] / base["train_img_s"]
            row["extra_warmup_s"] = on["warmup_seconds"] - base["warmup_seconds"]
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def one_forward(name: str, device: torch.device, size: int = 512) -> dict[str, Any]:
    """One inference forward of a foundation model (bf16 autocast on CUDA): it builds, runs and gives logits."""
    from segarena.models import create_model

    row: dict[str, Any] = {"model": name, "size": size, "ok": False}
    try:
        model = create_model(name, 1, in_channels=3).to(device).eval()
        x = torch.rand(1, 3, size, size, device=device)
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                             enabled=device.type == "cuda"):
            y = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row.update(seconds=time.perf_counter() - t0, shape=list(y.shape),
                   ok=bool(torch.isfinite(y.float()).all()) and tuple(y.shape) == (1, 1, size, size))
        del model
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        if isinstance(exc, ImportError) or "pip install" in str(exc):  # an optional extra that is not installed
            row["skipped"] = row.pop("error")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def projected_gpu_hours(result: dict[str, Any], study_path: Path = STUDY) -> dict[str, Any]:
    """The study's GPU-hours per phase from the measured rows (the plan's estimates fill the models that failed):
    with early stopping as the study sets it, and without (every run trains all its epochs)."""
    from segarena.runner.plan import plan_study
    from segarena.runner.study import load_study

    study = load_study(study_path)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "throughput.json"
        path.write_text(json.dumps(result))
        empty = Path(tmp) / "no-data"
        empty.mkdir()
        plan = plan_study(study, data_root=empty, throughput=path)
    kinds = sorted({r.estimate for r in plan.runs})
    return {"with_early_stopping": plan.gpu_hours(), "without_early_stopping": plan.gpu_hours(all_epochs=True),
            "rows": kinds, "measured_models": sorted({r.model for r in plan.runs if r.estimate == "measured"})}


def run_check(device: torch.device, *, models: list[tuple[str, Any]], foundation: tuple[str, ...] = FOUNDATION,
              size: int = 512, batch: int = 8, steps: int = 5, budget_s: float = 360.0, levers: tuple[str, ...] = (),
              study_path: Path = STUDY) -> dict[str, Any]:
    """The whole check on ``device`` (CPU works at small sizes, for the tests): returns the JSON document.
    ``models``: (name, protocol) pairs, each trained with its protocol's options; ``levers``: models also timed
    lever by lever (:func:`lever_rows`)."""
    t_start = time.perf_counter()
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out: dict[str, Any] = {"status": "complete", "device": dev, "torch": torch.__version__, "size": size,
                           "batch_size": batch, "kernels": fast_kernels(), "models": [], "levers": [],
                           "foundation": [], "not_run": []}
    protocols = dict(models)

    def left() -> float:
        return budget_s - (time.perf_counter() - t_start)

    for name, protocol in models:
        if left() <= 0:
            out["not_run"].append(name)
            continue
        row = train_steps(name, device, size=size, batch=batch, steps=steps, **loop_options(protocol))
        out["models"].append(row)
        print(f"{name:<26} {'ok ' if row['ok'] else 'FAIL'} {row.get('train_img_s', 0):8.1f} img/s "
              f"{row.get('peak_gib', 0):6.1f} GiB  {row.get('error', '')}", flush=True)
    for name in levers:
        if left() <= 0:
            out["not_run"].append(f"{name} (levers)")
            continue
        protocol = protocols.get(name) or next(iter(protocols.values()))
        for row in lever_rows(name, device, protocol, size=size, batch=batch, steps=steps):
            out["levers"].append(row)
            print(f"{name:<26} {row['lever']:<15} x{row.get('ratio', float('nan')):.2f}  {row.get('error', '')}",
                  flush=True)
    for name in foundation:
        if left() <= 0:
            out["not_run"].append(name)
            continue
        out["foundation"].append(one_forward(name, device, size))
    out["projected_gpu_hours"] = projected_gpu_hours(out, study_path)
    out["seconds"] = time.perf_counter() - t_start
    if out["not_run"]:
        out["status"] = "partial"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json", help="the JSON file to write (default gpu_check.json)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per model (after 2 warm-up steps)")
    ap.add_argument("--budget-s", type=float, default=360.0, help="stop starting models after this many seconds")
    ap.add_argument("--levers", nargs="*", default=[], metavar="MODEL",
                    help="also time these models with every speed lever off and with each alone on (channels_last, "
                         "compile, data_on_device): the ratios `study plan --throughput` reports as measured")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        msg = "no CUDA device: gpu_check.py measures GPU training and has nothing to do on this machine"
        print(f"gpu_check: skipped: {msg}")
        Path(a.out).write_text(json.dumps({"status": "skipped", "reason": msg}, indent=2))
        return 0
    device = torch.device("cuda")  # cuDNN's autotuner stays as the training loop leaves it (off): what a run does
    result = run_check(device, models=study_models(), steps=a.steps, budget_s=a.budget_s, levers=tuple(a.levers))
    Path(a.out).write_text(json.dumps(result, indent=2, default=str))
    gh = result["projected_gpu_hours"]
    print(f"\nprojected GPU-hours of the study: {gh['with_early_stopping']['total']:.1f} with early stopping, "
          f"{gh['without_early_stopping']['total']:.1f} without ({', '.join(gh['rows'])} rows)")
    print(f"wrote {a.out} in {result['seconds']:.0f} s")
    failed = [r["model"] for r in result["models"] + result["foundation"] if not r["ok"] and not r.get("skipped")]
    if failed:
        print(f"gpu_check: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or result["not_run"] else 0


if __name__ == "__main__":
    sys.exit(main())
