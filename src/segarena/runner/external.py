"""``segarena add-method``: score another tool's predicted masks for one fold and store them as a run.

The masks (one file per case, matched by file stem to the fold's test cases, any image format ``evaluate`` reads)
are scored with segarena's own per-case metrics (overlap counts and boundary metrics) at each image's native
resolution, against the same references and the same split a trained run of that dataset and fold uses. The result
is an ordinary run folder of family ``external`` (spec, split, per-case records, summary), so nnU-Net's or anyone's
predictions enter the leaderboard, the paired tests and the report like the models segarena trained. Everything is
checked before anything is written: a missing, unreadable or mis-sized prediction is an error naming the files,
and an existing run of that name is never overwritten.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import ConfigError, DataError, SegarenaError
from .._io import atomic_write, write_json
from ..config import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from ..store import ResultsDir, RunStore

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass
class AddedMethod:
    store: RunStore
    n_test: int
    ignored: list[str]  # prediction files of cases outside the fold's test split
    summary: dict[str, Any]


def _as_labels(raw: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """A predicted mask as class indices: 0..K-1 as they are; binary 0/255 (and JPEG-noisy binary) at > 127."""
    if raw.max(initial=0) < num_classes:
        return raw.astype(np.uint8)
    if num_classes == 2:
        return (raw > 127).astype(np.uint8)
    raise DataError(f"{path}: mask values up to {int(raw.max())} but the dataset has {num_classes} classes",
                    fix=f"write label maps with values 0..{num_classes - 1}")


def add_method(results: str | os.PathLike, name: str, dataset: str, fold: int, pred: str | os.PathLike, *,
               data_root: str | os.PathLike | None = None, options: dict[str, Any] | None = None,
               num_folds: int = 5, split_seed: int = 0, duplicates: str = "group", split: str = "kfold",
               limit: int | None = None, nsd_tau: float = 2.0, input_size: int = 64) -> AddedMethod:
    """Score the masks in ``pred`` on ``dataset``'s test fold ``fold`` and store them as run ``name``.

    ``num_folds``, ``split_seed``, ``duplicates``, ``split`` and ``limit`` must be those of the runs it is compared
    with (the defaults are the protocol's), so the test cases are the same. ``input_size`` only sizes the prepared
    cache used to find the split; scoring is at native resolution.
    """
    from ..data.adapters._common import list_images
    from ..data.io import read_gray
    from ..data.prepare import prepare
    from ..data.splits import load_or_create, rotation
    from ..metrics.distance import case_surface_metrics
    from ..metrics.overlap import case_records, confusion, per_class, reduce
    from ..models import MODELS

    if not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits and . _ + - (at most 64, no path separators)",
                          fix="e.g. --name nnunet-2d")
    if name in MODELS:
        raise ConfigError(f"--name {name!r} is a segarena model; an external method needs its own name",
                          fix=f"e.g. --name {name}-external")
    pred_dir = Path(pred).expanduser()
    if not pred_dir.is_dir():
        raise DataError(f"--pred {pred_dir}: folder not found", fix="point --pred at the folder of predicted masks")
    spec = RunSpec(data=DataConfig(name=dataset, num_folds=num_folds, fold=fold, split_seed=split_seed, limit=limit,
                                   duplicates=duplicates, split=split,  # type: ignore[arg-type]
                                   options=dict(options or {})),
                   model=ModelConfig(name=name, kwargs={"external": True}),
                   protocol=ProtocolConfig(nsd_tau=nsd_tau))
    data = prepare(dataset, input_size, data_root, spec.data.options, limit=limit)
    rd = ResultsDir(results)  # the same split file as the trained runs in this folder, so the same test cases
    rec = load_or_create(dataset, data.ids, data.groups, data.index["sha256"], data.index["phash"], num_folds,
                         split_seed, rd.split_path(spec), duplicates=duplicates, split=split, meta=data.index["meta"])
    spec = rd.bind(spec)
    sp = rotation(rec["folds"], data.ids, num_folds, fold)
    test_ids = {data.ids[i]: i for i in sp.test}
    files = list_images(pred_dir, "predictions")
    missing = sorted(set(test_ids) - set(files))
    if missing:
        raise DataError(f"--pred {pred_dir}: {len(missing)} of the {len(test_ids)} test cases of {dataset} fold "
                        f"{fold} have no prediction file, e.g. {', '.join(missing[:5])}",
                        fix="write one mask per test case, named by the case id (e.g. <case>.png)")
    ignored = sorted(set(files) - set(test_ids))
    labels = data.card.labels
    k = len(labels)
    records: list[dict[str, Any]] = []
    wrong: list[str] = []
    extra = {"run_id": spec.run_id, "model": name, "dataset": dataset, "fold": fold, "seed": spec.protocol.seed}
    for cid, i in sorted(test_ids.items()):
        ref = data.native_mask(i)
        try:
            raw = read_gray(files[cid])
        except SegarenaError:
            raise
        except Exception as exc:  # noqa: BLE001 - an undecodable file is the user's to fix, name it
            raise DataError(f"{files[cid]}: cannot read the mask ({exc})", fix="write PNG/BMP/TIFF/JPEG masks") \
                from None
        p = _as_labels(raw, k, files[cid])
        if p.shape != ref.shape:
            wrong.append(f"{files[cid].name} is {p.shape[1]}x{p.shape[0]}, reference {ref.shape[1]}x{ref.shape[0]}")
            continue
        spacing = data.meta(i).get("spacing_mm")
        recs = case_records(cid, confusion(p, ref, k), labels,
                            {**extra, "height": ref.shape[0], "width": ref.shape[1],
                             "spacing_unit": "mm" if spacing else "px",
                             "spacing_y": float(spacing[0]) if spacing else 1.0,
                             "spacing_x": float(spacing[1]) if spacing else 1.0})
        surf = case_surface_metrics(p, ref, range(1, k), spacing or (1.0, 1.0), nsd_tau)
        for r, sm in zip(recs, surf):
            r.update({key: sm[key] for key in ("hd", "hd95", "assd", "nsd", "nsd_tau")}, surface_empty=sm["empty"])
        records += recs
    if wrong:
        raise DataError(f"--pred {pred_dir}: {len(wrong)} prediction(s) not at the image's native size: "
                        + "; ".join(wrong[:5]), fix="predict at each image's original resolution")
    return _store(results, spec, data, sp, rec, records, pred_dir, ignored, per_class, reduce)


def _store(results, spec: RunSpec, data, sp, rec, records, pred_dir: Path, ignored: list[str], per_class,
           reduce) -> AddedMethod:
    import pandas as pd

    from .._version import __version__

    store = ResultsDir(results).run(spec)
    if store.is_complete():
        raise SegarenaError(f"{store.dir}: {spec.model.name} on {spec.data.name} fold {spec.data.fold} was already "
                            "added", fix="choose another --name, or delete that run folder to replace it")
    if not store.acquire():
        raise SegarenaError(f"{store.dir} is in use by another process", fix="wait for it to finish")
    try:
        store.init()
        write_json(store.path("split.json"), {k: [data.ids[i] for i in getattr(sp, k)]
                                              for k in ("train", "val", "test")}
                   | {"duplicates": rec["duplicates"], "removed": rec.get("removed", []),
                      "duplicate_policy": spec.data.duplicates, "split": spec.data.split,
                      "num_folds": spec.data.num_folds, "fold": spec.data.fold})
        df = pd.DataFrame.from_records(records)
        atomic_write(store.path("records.parquet"), lambda tmp: df.to_parquet(tmp, index=False), suffix=".parquet")
        summary = {
            "run_id": spec.run_id, "run_name": spec.run_name, "model": spec.model.name, "family": "external",
            "dataset": spec.data.name, "fold": spec.data.fold, "seed": spec.protocol.seed, "metrics": reduce(df),
            "per_class": per_class(df), "empty_reference_cases": int(df.groupby("case_id")["ref_empty"].all().sum()),
            "source": str(pred_dir.resolve()), "ignored_files": len(ignored), "n_test": int(df["case_id"].nunique()),
            "n_train": len(sp.train), "n_val": len(sp.val), "params": float("nan"), "train_seconds": 0.0,
            "eval_resolution": "native", "device": "external", "added": time.time(),
            "versions": {"segarena": __version__},
        }
        write_json(store.path("summary.json"), summary)
        store.set_status("complete")
    finally:
        store.release()
    return AddedMethod(store, summary["n_test"], ignored, summary)
