"""`segarena predict`, `export` and `convert-weights`."""
from __future__ import annotations

import argparse
import json
import os
import sys



# ---- predict / export -------------------------------------------------------------------------------------
def cmd_predict(a: argparse.Namespace) -> int:
    from ..inference import predict

    res = predict(a.run_dir, a.input, a.output, batch_size=a.batch_size, device=a.device,
                  probabilities=a.probabilities or False, overlays=a.overlays, raw_labels=a.raw_labels,
                  progress=sys.stderr.isatty())
    for _, reason in res.skipped:
        print(f"segarena: skipped {reason}", file=sys.stderr)
    print(f"wrote {len(res.label_maps)} mask(s) to {a.output}" +
          (f" and {len(res.raw_maps)} label map(s) to {os.path.join(a.output, 'labels')}" if res.raw_maps else "") +
          (f"; skipped {len(res.skipped)} unreadable input(s)" if res.skipped else ""))
    return 1 if res.skipped else 0


def cmd_export(a: argparse.Namespace) -> int:
    from ..export import export_bundle

    path = export_bundle(a.run_dir, a.out, onnx=a.onnx, opset=a.opset)
    info = json.loads(path.read_text())
    print(f"bundle: {path.parent} (model.safetensors sha256 {info['weights']['sha256'][:12]}…)")
    if "onnx" in info:
        print(f"onnx: {path.parent / 'model.onnx'} (opset {a.opset}, max |onnxruntime - pytorch| = "
              f"{info['onnx']['max_abs_diff_vs_pytorch']:.2e})")
    return 0


def cmd_convert_weights(a: argparse.Namespace) -> int:
    from ..models.weights import convert_to_safetensors

    n = convert_to_safetensors(a.checkpoint, a.out, trust_file=a.trust_file)
    print(f"wrote {n} tensors to {a.out}; pass it as model.pretrained={a.out}")
    return 0
