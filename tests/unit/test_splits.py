"""Splits: seeded, group-aware, duplicates kept together, written once and reused."""
from __future__ import annotations

import json

import pytest

from segarena import DataError
from segarena.data.splits import assign_folds, find_duplicates, load_or_create, rotation


def _case_set(n=40, per_group=2):
    ids = [f"c{i:03d}" for i in range(n)]
    groups = [f"p{i // per_group}" for i in range(n)]
    sha = [f"{i:064x}" for i in range(n)]
    phash = [f"{(i * 0x9E3779B97F4A7C15) % 2**64:016x}" for i in range(n)]
    return ids, groups, sha, phash


def test_duplicates_exact_and_near():
    ids = ["a", "b", "c", "d"]
    sha = ["1" * 64, "1" * 64, "2" * 64, "3" * 64]
    phash = ["ffffffffffffffff", "0000000000000000", "0000000000000003", "0f0f0f0f0f0f0f0f"]
    assert find_duplicates(ids[:2], sha[:2], phash[:2], max_distance=0) == [{"ids": ["a", "b"], "kind": "exact"}]
    d = find_duplicates(ids, sha, phash, max_distance=2)
    # b and c differ in 2 bits: near duplicates; with a and b exact, they form one cluster
    assert len(d) == 1 and d[0]["ids"] == ["a", "b", "c"] and d[0]["kind"] == "near"
    assert find_duplicates(ids, ["1", "2", "3", "4"], phash, max_distance=0) == []


def test_folds_deterministic_grouped_balanced():
    ids, groups, sha, phash = _case_set()
    a = assign_folds(ids, groups, [], 5, seed=0)
    assert a == assign_folds(ids, groups, [], 5, seed=0)
    assert a != assign_folds(ids, groups, [], 5, seed=1)
    for g in set(groups):
        assert len({a[i] for i, gg in zip(ids, groups) if gg == g}) == 1
    sizes = [list(a.values()).count(f) for f in range(5)]
    assert max(sizes) - min(sizes) <= 2


def test_duplicates_share_a_fold():
    ids, groups, sha, phash = _case_set(per_group=1)
    dups = [{"ids": ["c000", "c017", "c033"], "kind": "near"}]
    a = assign_folds(ids, groups, dups, 5, seed=3)
    assert a["c000"] == a["c017"] == a["c033"]


def test_rotation_uses_every_fold_once_as_test():
    ids, groups, sha, phash = _case_set()
    a = assign_folds(ids, groups, [], 5, seed=0)
    tests = []
    for r in range(5):
        s = rotation(a, ids, 5, r)
        assert not set(s.train) & set(s.val) and not set(s.train) & set(s.test) and not set(s.val) & set(s.test)
        assert len(s.train) + len(s.val) + len(s.test) == len(ids)
        tests += s.test
    assert sorted(tests) == list(range(len(ids)))
    with pytest.raises(DataError, match="out of range"):
        rotation(a, ids, 5, 5)


def test_split_file_written_once_and_reused(tmp_path):
    ids, groups, sha, phash = _case_set()
    path = tmp_path / "split.json"
    rec = load_or_create("x", ids, groups, sha, phash, 5, 0, path=path)
    assert path.is_file() and rec["folds"] == json.loads(path.read_text())["folds"]
    # a hand-edited file is reused as is (the file is the source of truth)
    data = json.loads(path.read_text())
    data["folds"]["c000"] = (data["folds"]["c000"] + 1) % 5
    path.write_text(json.dumps(data))
    assert load_or_create("x", ids, groups, sha, phash, 5, 0, path=path)["folds"]["c000"] == data["folds"]["c000"]
    with pytest.raises(DataError, match="does not match"):
        load_or_create("x", ids[:-1], groups[:-1], sha[:-1], phash[:-1], 5, 0, path=path)


def test_too_few_groups():
    with pytest.raises(DataError, match="independent groups"):
        assign_folds(["a", "b"], ["g", "g"], [], 3, 0)


def test_duplicates_removed_like_the_paper(tmp_path):
    ids, groups, sha, phash = _case_set(per_group=1)
    sha[5] = sha[3]  # c005 is a byte copy of c003
    rec = load_or_create("x", ids, groups, sha, phash, 5, 0, path=tmp_path / "s.json", duplicates="remove")
    assert rec["removed"] == ["c005"] and rec["folds"]["c005"] == -1
    assert sum(rec["fold_sizes"]) == len(ids) - 1
    used = set()
    for r in range(5):
        s = rotation(rec["folds"], ids, 5, r)
        used |= set(s.test)
    assert 5 not in used and 3 in used  # the kept copy is tested, the removed one never


def test_official_folds_from_metadata(tmp_path):
    ids, groups, sha, phash = _case_set(n=10, per_group=1)
    meta = [{"fold_5": 1 + i % 5} for i in range(10)]  # published 1-based partition
    rec = load_or_create("x", ids, groups, sha, phash, 5, 0, path=tmp_path / "o.json", split="official", meta=meta)
    assert [rec["folds"][c] for c in ids] == [i % 5 for i in range(10)]
    with pytest.raises(DataError, match="no official 5-fold"):
        load_or_create("x", ids, groups, sha, phash, 5, 0, path=tmp_path / "p.json", split="official",
                       meta=[{} for _ in ids])
