"""Training throughput per model on the reference GPU, for the study plan's GPU-time and memory estimates.

Two kinds of rows, never mixed up:

* **measured**: images/s and peak memory from ``benchmarks/gpu_check.py`` on a real CUDA device (its JSON file,
  passed to ``segarena study plan --throughput FILE``, or rows added to :data:`MEASURED` once a GPU has run it).
  No GPU has run the check for this release, so :data:`MEASURED` is empty.
* **estimate**: derived from the model's forward FLOPs at the study's input size (counted by PyTorch's FLOP
  counter on the meta device) and an assumed sustained training rate of the reference GPU
  (:data:`SUSTAINED_TFLOPS`); a training step costs about three forwards (forward + backward).

The assumed rates are deliberately plain numbers so a measured file can replace them; the plan prints which rows
are estimates.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ConfigError

#: the GPU the estimates describe
REFERENCE_GPU = "one H100/H200-class GPU"
#: memory of the smallest GPU the estimates count as the reference (H100 80 GB)
REFERENCE_GPU_GIB = 80.0
#: assumed sustained training throughput (TFLOP/s of model FLOPs) on the reference GPU: bf16 autocast vs fp32/TF32.
#: About 12% / 10% of the H100's dense bf16 / TF32 peaks: segmentation networks at 512² are partly memory-bound
#: (normalisations, upsampling, attention reshapes), so they sustain far less than the matmul peak. With these
#: rates the paper's study costs ~180 GPU-hours naively (fp32, every epoch), in line with the ~200 GPU-hour figure
#: of the issue that asked for this plan; gpu_check.py replaces them with measured rows.
SUSTAINED_TFLOPS = {"amp": 120.0, "fp32": 50.0}
#: forward + backward ~ 3 forwards
TRAIN_FLOPS_PER_FORWARD = 3.0
#: rows measured on a real GPU: model -> {"train_img_s": ..., "peak_gib": ..., "gpu": ..., "batch_size": ...}
MEASURED: dict[str, dict[str, Any]] = {}
#: training-throughput ratios of the speed levers (lever on / off) until ``gpu_check.py --levers`` measures them:
#: (ratio, where the number comes from). Published figures for other models and GPUs, not measurements of these.
LEVER_ESTIMATES: dict[str, tuple[float, str]] = {
    "channels_last": (1.2, "PyTorch's channels-last tutorial: 22% faster AMP training of ResNet-50 on a V100, 8-35% "
                           "across its CNNs; the study's transformers gain less"),
    "compile": (1.5, "the PyTorch 2.0 release: 51% faster AMP training, geometric mean of 163 open-source models on "
                     "an A100, compilation time not counted"),
}
#: assumed rate of the host feed of one batch (a copy out of the memory-mapped cache, then a pageable host-to-device
#: copy, both CPU work): the data_on_device estimate is this time against the estimated step time, an upper bound
#: (the feed costs GPU time only while the CPU cannot stay ahead of the GPU)
HOST_FEED_GBPS = 4.0


@dataclass(frozen=True)
class Throughput:
    model: str
    train_img_s: float
    #: "measured" (a gpu_check row) or "estimate" (from FLOPs)
    kind: str
    source: str
    peak_gib: float | None = None


def estimate(model: str, fwd_flops: float, amp: bool) -> Throughput:
    """Images/s of training from forward FLOPs per image (an estimate)."""
    rate = SUSTAINED_TFLOPS["amp" if amp else "fp32"] * 1e12
    img_s = rate / max(TRAIN_FLOPS_PER_FORWARD * fwd_flops, 1.0)
    return Throughput(model, img_s, "estimate",
                      f"{fwd_flops / 1e9:.0f} GFLOPs/forward at {SUSTAINED_TFLOPS['amp' if amp else 'fp32']:.0f} "
                      f"TFLOP/s sustained ({'bf16' if amp else 'fp32'})")


def load_measured(path: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """Measured rows: :data:`MEASURED` updated with a ``gpu_check.py`` JSON file (its ``models`` list)."""
    rows = {k: dict(v) for k, v in MEASURED.items()}
    if path is None:
        return rows
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--throughput {p}: no such file",
                          fix="pass the JSON file benchmarks/gpu_check.py wrote") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--throughput {p}: not a JSON file ({type(exc).__name__})",
                          fix="pass the JSON file benchmarks/gpu_check.py wrote") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ConfigError(f"--throughput {p}: no 'models' list", fix="pass the JSON file benchmarks/gpu_check.py wrote")
    for row in models:
        if isinstance(row, dict) and row.get("ok") and isinstance(row.get("train_img_s"), (int, float)):
            rows[str(row["model"])] = {"train_img_s": float(row["train_img_s"]), "peak_gib": row.get("peak_gib"),
                                       "gpu": data.get("device", "?"), "batch_size": row.get("batch_size"),
                                       "source": str(p)}
    return rows


def load_lever_ratios(path: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """Measured lever ratios from a ``gpu_check.py --levers`` file: lever -> its geometric-mean throughput ratio
    (on / off) over the models measured, those models, the GPU and the mean extra warm-up time (compilation)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # load_measured reports an unreadable file
    rows = data.get("levers") if isinstance(data, dict) else None
    by_lever: dict[str, list[dict[str, Any]]] = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("ok") and isinstance(row.get("ratio"), (int, float)) and row["ratio"] > 0:
            by_lever.setdefault(str(row.get("lever")), []).append(row)
    out = {}
    for lever, rs in by_lever.items():
        extra = [r["extra_warmup_s"] for r in rs if isinstance(r.get("extra_warmup_s"), (int, float))]
        out[lever] = {"ratio": math.exp(sum(math.log(r["ratio"]) for r in rs) / len(rs)),
                      "models": sorted(str(r["model"]) for r in rs), "gpu": data.get("device", "?"),
                      "extra_warmup_s": sum(extra) / len(extra) if extra else None, "source": str(path)}
    return out


def lookup(model: str, measured: dict[str, dict[str, Any]], fwd_flops: float | None, amp: bool) -> Throughput | None:
    """The measured row of ``model`` if there is one, else an estimate from its FLOPs (None without FLOPs)."""
    if model in measured:
        r = measured[model]
        return Throughput(model, r["train_img_s"], "measured", f"measured on {r.get('gpu', '?')} ({r.get('source')})",
                          r.get("peak_gib"))
    if fwd_flops is None:
        return None
    return estimate(model, fwd_flops, amp)
