"""Shared fixtures. Tests are offline: no hub, no downloads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SEGARENA_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def _shared_data() -> Path | None:
    env = os.environ.get("SEGARENA_DATA_ROOT")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if (c / "kvasir-seg" / "images").is_dir():
            return c.resolve()
    return None


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real datasets (../shared/data or $SEGARENA_DATA_ROOT); tests using it skip where it is absent."""
    root = _shared_data()
    if root is None:
        pytest.skip("real datasets not found (set SEGARENA_DATA_ROOT)")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own segarena cache, so nothing leaks between tests or into ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SEGARENA_CACHE", str(cache))
    yield
