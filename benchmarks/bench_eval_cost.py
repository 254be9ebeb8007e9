"""Test-time evaluation of a run against one training epoch of the same run, at the paper's protocol on CPU.

One run per model (SegFormer-B0 and U-Net by default) with the paper protocol (``configs/protocols/paper.yaml``:
'paper' augmentation, AdamW, batch 8, native-resolution evaluation) at 128x128, on Kvasir-SEG, for 2 epochs, in a
fresh efficiency cache. The run's own summary gives the seconds of one training epoch (``seconds_per_epoch``,
train + validation) and of the test phase (``test_seconds``: prediction at native size, overlap and boundary
metrics, gallery, efficiency measurement). A second run of the same model (another seed) measures the test
phase again with the efficiency record already cached, as every later run of a study does.

Ratio = test_seconds / seconds_per_epoch (target <= 1/3). ``--limit`` keeps the run short; the 3:1:1
train/validation/test split makes the ratio independent of it, up to fixed costs (worker start, first calls).

    python benchmarks/bench_eval_cost.py --limit 200
"""
from __future__ import annotations

import os
import tempfile

from _common import data_root, parser


def one(model: str, seed: int, limit: int, size: int, epochs: int, results: str) -> dict:
    from segarena import DataConfig, ModelConfig, RunSpec
    from segarena.configs import load_protocol
    from segarena.protocol import run

    proto = load_protocol("paper")
    import dataclasses

    proto = dataclasses.replace(proto, input_size=size, epochs=epochs, patience=None, amp=False, seed=seed)
    spec = RunSpec(data=DataConfig(name="kvasir-seg", root=data_root(), limit=limit),
                   model=ModelConfig(name=model), protocol=proto)
    return run(spec, results, progress=False).summary


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--models", nargs="+", default=["segformer-b0", "unet"])
    p.add_argument("--limit", type=int, default=100, help="cases of Kvasir-SEG used (3:1:1 split)")
    p.add_argument("--size", type=int, default=128)
    a = p.parse_args()
    models, limit, epochs = (["tiny-unet"], 20, 1) if a.tiny else (a.models, a.limit, 2)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SEGARENA_CACHE"] = os.path.join(tmp, "cache")  # first run measures efficiency, second reuses
        from segarena.data.prepare import prepare

        prepare("kvasir-seg", a.size, data_root(), limit=limit)
        print(f"CPU, {a.size}x{a.size}, paper protocol, Kvasir-SEG limit {limit}, {epochs} epochs")
        for m in models:
            first = one(m, 0, limit, a.size, epochs, os.path.join(tmp, "r"))
            second = one(m, 1, limit, a.size, epochs, os.path.join(tmp, "r"))
            for name, s in (("first run", first), ("second run", second)):
                ratio = s["test_seconds"] / s["seconds_per_epoch"]
                print(f"  {m:14s} {name:10s} epoch {s['seconds_per_epoch']:7.1f} s  test {s['test_seconds']:6.1f} s "
                      f"(n_test {s['n_test']}, efficiency cached: {s['efficiency'].get('cached')})  "
                      f"ratio {ratio:.2f} (target <= 0.33)")


if __name__ == "__main__":
    main()
