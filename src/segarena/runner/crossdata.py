"""Cross-dataset generalization: every model trained on dataset A is evaluated on every label-compatible dataset B.

Compatibility comes from the cards' ``harmonized`` label groups (e.g. ``polyp``: Kvasir-SEG class 1, CVC-ClinicDB
class 1, NeoPolyp classes 1+2). Predictions and references are both mapped to the group's one foreground class,
so a NeoPolyp model (2 classes) and a Kvasir model (1 class) are scored on the same binary task.

Out-of-domain cases: *all* cases of B (the model never saw B). In-domain reference: the run's own test fold of A,
mapped to the same group. Per-case records are written to ``<run>/cross/<B>__<group>.parquet``; the matrix and
gaps are reductions over them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._errors import ConfigError, SegarenaError
from .._io import atomic_write
from ..data import DATASETS
from ..metrics.overlap import case_records, confusion, mdsc
from ..stats.transfer import cross_text, generalization_gaps, matrix, ood_ranking  # noqa: F401 - re-exported
from ..store import ResultsDir, RunStore


@dataclass(frozen=True)
class Partner:
    """A dataset a run can be tested on: a registered adapter, its options (user datasets: ``path``...) and the
    data root(s) or folder where it lies (``None``: the common ``--data-root``)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    root: str | None = None

    def card(self):
        return DATASETS.get(self.name).card_with(self.options)


def parse_partner(text: str) -> Partner:
    """``NAME`` (found in the data roots), ``NAME=FOLDER`` (a named dataset in its own folder) or
    ``folder=PATH`` / ``nnunet=PATH`` (a user dataset; its options may follow as ``,key=value``)."""
    name, _, rest = text.partition("=")
    name = name.strip()
    adapter = DATASETS.get(name)
    if not rest:
        if not adapter.card.folder:
            raise ConfigError(f"--partner {text!r}: a user dataset needs its folder", fix=f"use {name}=/path/to/it")
        return Partner(name)
    path, *opts = _split_top(rest)
    options: dict[str, Any] = {"path": path.strip()}
    for kv in opts:
        if "=" not in kv:
            raise ConfigError(f"--partner {text!r}: option {kv!r} is not key=value", fix="e.g. ,name=mydata")
        k, v = kv.split("=", 1)
        import yaml

        options[k.strip()] = yaml.safe_load(v)
    adapter.check_options(options)
    if adapter.card.folder:
        return Partner(name, {}, options["path"])
    return Partner(name, options)


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets/braces (``a,labels=[x, y]`` -> ``a``, ``labels=[x, y]``)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def run_card(spec):
    """The card of the dataset a run was trained on (user datasets: built from the run's own options)."""
    return DATASETS.get(spec.data.name).card_with(spec.data.options)


def compatible(dataset: str) -> dict[str, list[str]]:
    """Harmonized group -> the other registered datasets sharing it (by name)."""
    return {g: [p.name for p in ps] for g, ps in partners_for(dataset).items()}


def partners_for(dataset: str, partners: list[Partner] | None = None, options: dict[str, Any] | None = None
                 ) -> dict[str, list[Partner]]:
    """Harmonized group -> the other datasets sharing it: every registered named dataset, plus the given
    ``partners`` (which may be user datasets declaring ``harmonized`` groups or named after one)."""
    card = DATASETS.get(dataset).card_with(options or {})
    given = {p.name: p for p in (partners or []) if DATASETS.get(p.name).card.folder}
    users = [p for p in (partners or []) if not DATASETS.get(p.name).card.folder]
    out: dict[str, list[Partner]] = {}
    for group in card.harmonized:
        others = [given.get(n, Partner(n)) for n, a in DATASETS.items()
                  if a.card.folder and n != card.name and group in a.card.harmonized]
        others += [p for p in users if group in p.card().harmonized and p.card().name != card.name]
        if others:
            out[group] = others
    return out


def _lut(classes: tuple[int, ...]) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    lut[list(classes)] = 1
    return lut


def evaluate_on(store: RunStore, target: str | Partner, group: str, data_root: str | os.PathLike | None = None,
                device: str | None = None, limit: int | None = None, ids: set[str] | None = None) -> pd.DataFrame:
    """Per-case records of a trained run on the cases of ``target`` (all, or ``ids``), in the harmonized
    ``group``. ``target`` is a dataset name or a :class:`Partner` (own folder, or a user dataset)."""
    from ..data.augment import normalize
    from ..data.prepare import prepare
    from ..protocol.checkpoint import build_from_checkpoint
    from ..protocol.precision import pick_device, predict_logits
    from ..protocol.losses import to_labels

    spec = store.spec
    partner = target if isinstance(target, Partner) else Partner(target)
    own = partner.name == spec.data.name and (partner.options or {}) in ({}, spec.data.options)
    src_card = run_card(spec)
    if own:
        partner = Partner(spec.data.name, dict(spec.data.options), spec.data.root or None)
    label = partner.card().name
    out_file = store.dir / "cross" / f"{label}__{group}{'__test' if own else ''}.parquet"
    if out_file.is_file():
        return pd.read_parquet(out_file)
    dev = pick_device(device)
    model, info = build_from_checkpoint(store.dir / "checkpoint", dev)
    src_lut = _lut(src_card.harmonized[group])
    root = (partner.root or data_root) if own else (partner.root or data_root or spec.data.root)
    data = prepare(partner.name, info["input_size"], root, partner.options or None,
                   limit=spec.data.limit if own else limit, download=False)  # crossval never downloads
    tgt_lut = _lut(data.card.harmonized[group])
    if data.card.channels != info["in_channels"]:
        raise ValueError(f"{label} has {data.card.channels} channel(s); the model takes {info['in_channels']}")
    records: list[dict[str, Any]] = []
    bs = spec.protocol.batch_size
    chosen = [i for i, c in enumerate(data.ids) if ids is None or c in ids]
    for b in range(0, len(chosen), bs):
        idx = chosen[b:b + bs]
        x = normalize(torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(dev), info["mean"], info["std"])
        logits = predict_logits(model, x, dev, amp=False)
        for j, i in enumerate(idx):
            h, w = data.native_shape(i)
            pred = to_labels(F.interpolate(logits[j:j + 1], size=(h, w), mode="bilinear", align_corners=False))
            pred = src_lut[pred[0].cpu().numpy().astype(np.uint8)]
            ref = tgt_lut[data.native_mask(i)]
            records += case_records(data.ids[i], confusion(pred, ref, 2), ("background", group),
                                    {"run_id": spec.run_id, "model": spec.model.name, "train": src_card.name,
                                     "test": src_card.name if own else label, "fold": spec.data.fold,
                                     "seed": spec.protocol.seed})
    df = pd.DataFrame.from_records(records)
    atomic_write(out_file, lambda tmp: df.to_parquet(tmp, index=False), suffix=".parquet")
    return df


def cross_evaluate(results: str | os.PathLike, data_root: str | os.PathLike | None = None,
                   device: str | None = None, limit: int | None = None, progress: bool = True,
                   problems: list | None = None, partners: list[Partner] | None = None) -> pd.DataFrame:
    """Evaluate every complete run on every compatible dataset that can be found; return all records.

    Partners are looked up in ``data_root`` (several roots separated by ``os.pathsep``) unless a
    :class:`Partner` gives their own folder; a partner that is not on disk is skipped with a message, never
    downloaded. User datasets join as partners when their labels are compatible (declared ``harmonized`` groups,
    or a binary dataset whose foreground label is the group's name). Damaged or partial runs are skipped and
    appended to ``problems`` (file + fix) when a list is given."""
    from ..store import Problem

    rd = ResultsDir(results, create=False)
    frames = []
    scan = rd.scan(check_records=False)  # damaged runs are listed, never a traceback
    found = problems if problems is not None else []
    found.extend(scan.problems)
    no_weights = {p.run for p in scan.problems if p.file == "checkpoint/model.safetensors"}
    for info in scan.complete:
        if info.dir.name in no_weights:
            continue  # no weights to evaluate with (listed as a problem)
        try:
            store = RunStore(info.dir)
        except SegarenaError as exc:
            found.append(Problem(info.dir.name, "spec.json", f"is not a valid run spec ({exc})",
                                 "delete this run folder and rerun the command that made it"))
            continue
        if not store.spec.protocol.evaluate_test:
            continue
        if store.summary().get("family") == "external":  # scored masks (add-method): no model to run elsewhere
            continue
        spec = store.spec
        try:
            groups = partners_for(spec.data.name, partners, spec.data.options)
        except SegarenaError as exc:
            if progress:
                print(f"skipping {info.dir.name}: {str(exc).splitlines()[0]}")
            continue
        for group, targets in groups.items():
            # in-domain: the run's own test fold through the same harmonized path as the other datasets
            try:
                frames.append(_own_test_harmonized(store, group, data_root, device).assign(group=group))
            except (SegarenaError, OSError, ValueError, KeyError) as exc:
                found.append(Problem(info.dir.name, "split.json / test fold",
                                     f"cannot be evaluated ({str(exc).splitlines()[0]})",
                                     "delete this run folder and rerun the command that made it"))
                break
            for target in targets:
                try:
                    df = evaluate_on(store, target, group, data_root, device, limit)
                except Exception as exc:  # noqa: BLE001 - a missing dataset skips that column, loudly
                    if progress:
                        print(f"skipping {spec.model.name}: {spec.data.name} -> {target.name}: "
                              f"{str(exc).splitlines()[0]}")
                    continue
                frames.append(df.assign(group=group))
                if progress:
                    print(f"{spec.model.name} f{spec.data.fold}: {df['train'].iloc[0]} -> {df['test'].iloc[0]} "
                          f"mDSC {mdsc(df) * 100:.1f}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _own_test_harmonized(store: RunStore, group: str, data_root, device) -> pd.DataFrame:
    import json

    test_ids = set(json.loads((store.dir / "split.json").read_text())["test"])
    return evaluate_on(store, store.spec.data.name, group, data_root, device, ids=test_ids)


def write_cross_summary(results: str | os.PathLike, records: pd.DataFrame) -> Path:
    rd = ResultsDir(results, create=False)
    path = rd.path / "crossdata.parquet"
    atomic_write(path, lambda tmp: records.to_parquet(tmp, index=False), suffix=".parquet")
    return path
