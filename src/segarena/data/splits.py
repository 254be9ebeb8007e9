"""Duplicate detection and seeded, group-aware k-fold splits, written once to a split file and reused.

Rotation ``r`` of a ``k``-fold split: test = fold ``r``, validation = fold ``(r + 1) % k``, train = the other
``k - 2`` folds (Borst & Kounev: 5 folds, 3 train / 1 val / 1 test). Cases of one group (patient, video sequence)
and all near-duplicates of a case always share a fold, so no image leaks across train and test.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError
from .._io import write_json

#: perceptual-hash Hamming distance (of 64 bits) at or below which two images count as near-duplicates
PHASH_MAX_DISTANCE = 4


@dataclass(frozen=True)
class Split:
    train: list[int]
    val: list[int]
    test: list[int]


def find_duplicates(ids: list[str], sha256: list[str], phash: list[str],
                    max_distance: int = PHASH_MAX_DISTANCE) -> list[dict[str, Any]]:
    """Clusters of exact (same bytes) and near (perceptual hash within ``max_distance``) duplicates.

    Returns one record per cluster of two or more cases: ``{"ids": [...], "kind": "exact" | "near"}``.
    """
    n = len(ids)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    exact_pairs: set[tuple[int, int]] = set()
    first: dict[str, int] = {}
    for i, h in enumerate(sha256):
        if h in first:
            parent[find(i)] = find(first[h])
            exact_pairs.add((first[h], i))
        else:
            first[h] = i
    if n > 1:
        bits = np.array([int(h, 16) for h in phash], dtype=np.uint64)
        for i in range(n - 1):
            # popcount of XOR, vectorised over the remaining cases
            x = np.bitwise_xor(bits[i + 1:], bits[i])
            dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
            for j in np.nonzero(dist <= max_distance)[0]:
                parent[find(i + 1 + int(j))] = find(i)
    clusters: dict[int, list[int]] = {}
    for i in range(n):
        clusters.setdefault(find(i), []).append(i)
    out = []
    for members in clusters.values():
        if len(members) > 1:
            exact = all(sha256[m] == sha256[members[0]] for m in members)
            out.append({"ids": [ids[m] for m in sorted(members)], "kind": "exact" if exact else "near"})
    return sorted(out, key=lambda r: r["ids"][0])


def assign_folds(ids: list[str], groups: list[str], duplicates: list[dict[str, Any]], num_folds: int,
                 seed: int) -> dict[str, int]:
    """Seeded group-aware assignment: merge groups joined by duplicates, shuffle, then place groups (largest first)
    into the fold with the fewest cases."""
    if num_folds < 3:
        raise DataError(f"num_folds={num_folds}: need at least 3 (train, validation and test folds)",
                        fix="use --set data.num_folds=5")
    unit = {cid: g for cid, g in zip(ids, groups)}
    # union groups connected through duplicate clusters
    parent: dict[str, str] = {g: g for g in set(groups)}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for cl in duplicates:
        roots = [find(unit[c]) for c in cl["ids"]]
        for r in roots[1:]:
            parent[r] = roots[0]
    members: dict[str, list[str]] = {}
    for cid in ids:
        members.setdefault(find(unit[cid]), []).append(cid)
    if len(members) < num_folds:
        raise DataError(f"only {len(members)} independent groups for {num_folds} folds",
                        fix="use fewer folds or more data")
    keys = sorted(members)
    random.Random(seed).shuffle(keys)
    keys.sort(key=lambda k: -len(members[k]))  # stable: ties keep the seeded order
    sizes = [0] * num_folds
    fold_of: dict[str, int] = {}
    for k in keys:
        f = min(range(num_folds), key=lambda i: (sizes[i], i))
        sizes[f] += len(members[k])
        for cid in members[k]:
            fold_of[cid] = f
    return fold_of


def rotation(fold_of: dict[str, int], ids: list[str], num_folds: int, fold: int) -> Split:
    if not 0 <= fold < num_folds:
        raise DataError(f"fold {fold} is out of range for {num_folds} folds", fix=f"use 0..{num_folds - 1}")
    val_fold = (fold + 1) % num_folds
    tr, va, te = [], [], []
    for i, cid in enumerate(ids):
        f = fold_of[cid]
        if f < 0:  # removed as a duplicate
            continue
        (te if f == fold else va if f == val_fold else tr).append(i)
    return Split(train=tr, val=va, test=te)


def split_digest(record: dict[str, Any]) -> str:
    """Digest of what a split decides: every case's fold and the cases removed as duplicates (12 hex digits)."""
    blob = json.dumps({"folds": record["folds"], "removed": sorted(record.get("removed", []))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def official_folds(ids: list[str], meta: list[dict[str, Any]], num_folds: int, dataset: str) -> dict[str, int]:
    """The dataset's published partition, from ``meta["fold_<k>"]`` of every case (values mapped to 0..k-1)."""
    key = f"fold_{num_folds}"
    values = [m.get(key) for m in meta]
    if any(v is None for v in values):
        missing = sum(v is None for v in values)
        raise DataError(f"{dataset}: {missing} case(s) have no official {num_folds}-fold assignment ({key})",
                        fix="use --set data.split=kfold, or the dataset's published number of folds")
    order = {v: i for i, v in enumerate(sorted(set(values)))}
    if len(order) != num_folds:
        raise DataError(f"{dataset}: the official partition has {len(order)} folds, not {num_folds}",
                        fix=f"use --set data.num_folds={len(order)}")
    return {cid: order[v] for cid, v in zip(ids, values)}


def load_or_create(dataset: str, ids: list[str], groups: list[str], sha256: list[str], phash: list[str],
                   num_folds: int, seed: int, path: Path | None = None, *, duplicates: str = "group",
                   split: str = "kfold", meta: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The split record for these cases: read from ``path`` if it exists, else computed (and written to ``path``;
    with ``path=None`` only computed). A run's split file lives in its results folder
    (:meth:`segarena.store.ResultsDir.split_path`), and its digest (:func:`split_digest`) is part of the run id.

    A dataset that ships its own folds as nnU-Net's ``splits_final.json`` (``meta["splits_final"]``) uses them:
    they are segarena's split unless ``data.options.splits_final=false``."""
    meta_k = {m.get("splits_final") for m in meta} if meta else set()
    if split == "kfold" and meta_k and None not in meta_k:
        k = meta_k.pop()
        if k != num_folds:
            raise DataError(f"{dataset}: splits_final.json has {k} folds, the run asks for {num_folds}",
                            fix=f"use --set data.num_folds={k}, or --set data.options.splits_final=false")
        split = "official"
    if path is not None and path.is_file():
        record = json.loads(path.read_text())
        if sorted(record["folds"]) != sorted(ids):
            raise DataError(f"split file {path} does not match the dataset's cases",
                            fix="delete it to have the split recomputed (results from the old split stay valid)")
        if record.get("split") == "official" and meta:
            now = official_folds(ids, meta, num_folds, dataset)
            if any(f >= 0 and now[c] != f for c, f in record["folds"].items()):
                raise DataError(f"split file {path} no longer matches {dataset}'s published folds",
                                fix="delete it to have the split recomputed (runs on the old split keep their "
                                    "folders; new runs get new run ids)")
        return record
    dups = find_duplicates(ids, sha256, phash)
    if split == "official":
        fold_of = official_folds(ids, meta or [{} for _ in ids], num_folds, dataset)
    else:
        fold_of = assign_folds(ids, groups, dups, num_folds, seed)
    removed: list[str] = []
    if duplicates == "remove":  # keep the first image (by id) of each cluster, as the paper's curation did
        for cl in dups:
            for cid in cl["ids"][1:]:
                fold_of[cid] = -1
                removed.append(cid)
    across = [cl["ids"] for cl in dups if len({fold_of[c] for c in cl["ids"] if fold_of[c] >= 0}) > 1]
    record = {
        "dataset": dataset, "num_folds": num_folds, "seed": seed, "split": split, "folds": fold_of,
        "duplicates": dups, "duplicate_policy": duplicates, "removed": removed,
        "duplicates_across_folds": across, "phash_max_distance": PHASH_MAX_DISTANCE,
        "fold_sizes": [sum(1 for f in fold_of.values() if f == k) for k in range(num_folds)],
        "num_groups": len(set(groups)),
    }
    if path is not None:
        write_json(path, record)
    return record
