"""The model cards as data, so ``segarena models list`` answers without importing torch or the model zoo.

Importing the zoo (torch, every model module, the weights helpers and through them the dataset adapters and
scipy) takes seconds; the cards it registers are plain data. This module keeps them as JSON together with a
fingerprint of the code that defines them (the sha256 of every ``segarena/models/**/*.py`` file and the package
version). A catalogue is used only when its fingerprint equals the current one, so it can never be stale: after
any change to a model module the first listing imports the zoo once, answers from the live registry and saves
the fresh catalogue to the user cache (``$SEGARENA_CACHE`` or ``~/.cache/segarena``); later listings read that.

Looked up in order: the catalogue shipped in the package (``model_catalog.json``, regenerated with
``python -m segarena._model_catalog --write``), then the one in the user cache. Models registered by installed
plugins (entry-point group ``segarena.models``) are only known by importing them, so their presence forces the
live registry. This module must stay import-light: stdlib only.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED = PACKAGE_DIR / "model_catalog.json"
PLUGIN_GROUP = "segarena.models"


@functools.lru_cache(maxsize=None)
def fingerprint() -> str:
    """sha256 over the package version and the path and bytes of every file under ``segarena/models``."""
    from ._version import __version__

    h = hashlib.sha256(__version__.encode())
    for path in sorted((PACKAGE_DIR / "models").rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_file() -> Path:
    """The user-cache copy (same rule as :func:`segarena.data.download.cache_dir`, without importing it)."""
    root = Path(os.environ.get("SEGARENA_CACHE") or Path.home() / ".cache" / "segarena").expanduser()
    return root / "model_catalog.json"


def _plugins_installed() -> bool:
    from importlib.metadata import entry_points

    return bool(entry_points(group=PLUGIN_GROUP))


def live_cards() -> list[dict[str, Any]]:
    """Every registered card as a dict, in registry order (imports the zoo)."""
    from .models import MODELS

    return [json.loads(json.dumps(MODELS.get(n).card.to_dict() | {"origin": MODELS.get(n).origin}))
            for n in MODELS.names()]


def live_patterns() -> list[list[Any]]:
    """The by-name patterns of the registry (``smp:<Arch>:<encoder>``, ...) with their examples."""
    from .models import MODELS

    return [[pattern, list(examples)] for pattern, examples in MODELS.patterns()]


def patterns() -> list[list[Any]]:
    """The by-name patterns, from the same catalogue as :func:`cards` when it is current, else live."""
    if not _plugins_installed():
        fp = fingerprint()
        for path in (SHIPPED, cache_file()):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("fingerprint") == fp and isinstance(data.get("patterns"), list):
                return data["patterns"]
    return live_patterns()


def _read(path: Path, fp: str) -> list[dict[str, Any]] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fp or not isinstance(data.get("cards"), list):
        return None
    return data["cards"]


def _write(path: Path, cards: list[dict[str, Any]], fp: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    data = {"fingerprint": fp, "cards": cards, "patterns": live_patterns()}
    tmp.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    os.replace(tmp, path)


def cards() -> tuple[list[dict[str, Any]], str]:
    """The cards and where they came from: ``"shipped"``, ``"cache"`` or ``"live"`` (the zoo was imported)."""
    if not _plugins_installed():
        fp = fingerprint()
        for source, path in (("shipped", SHIPPED), ("cache", cache_file())):
            found = _read(path, fp)
            if found is not None:
                return found, source
        live = live_cards()
        try:
            _write(cache_file(), live, fp)
        except OSError:  # a read-only cache only costs speed next time
            pass
        return live, "live"
    return live_cards(), "live"


def main(argv: list[str] | None = None) -> int:
    """``python -m segarena._model_catalog --write``: regenerate the shipped catalogue from the live registry."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--write"]:
        print("usage: python -m segarena._model_catalog --write", file=sys.stderr)
        return 2
    _write(SHIPPED, live_cards(), fingerprint())
    print(f"wrote {SHIPPED}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
