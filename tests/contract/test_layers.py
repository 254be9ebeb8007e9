"""The import layers of segarena: every module imports only from its own layer or the layers below it.

Order, lowest first (a module's layer is given by its first package component under ``segarena``):

0. foundations: ``_errors``, ``_io``, ``_registry``, ``_paths``, ``_version``, ``progress`` (bars and spinners
   for terminals and logs), ``_augment_presets`` (plain data, part of the run identity), ``config``, ``configs``
1. ``data``, ``metrics``, ``stats`` -- pure computation over arrays and tables. ``stats`` sits here rather than
   above ``runner``: ``runner.select`` ranks candidates with a bootstrap and ``runner.crossdata`` puts intervals on
   transfer gaps, and ``stats`` itself needs nothing but the foundations.
2. ``models``, and ``_model_catalog`` (the model cards as data for ``models list``; it imports the zoo only to
   rebuild itself)
3. ``store`` -- the results store (run folders, status, locks), low enough that the protocol writes to it
4. the protocol: ``protocol`` (train), ``evaluate`` (score a folder of predictions), ``inference`` (predict with a
   trained run) and ``export`` (package a trained run as a bundle, built on ``inference``). They sit together because
   each is "one run's model over one set of images"; ``protocol.precision`` is the device/autocast helper they share.
   ``zeroshot`` (oracle-prompted LiteMedSAM over a test fold) is one such model over one set of images too.
5. ``runner`` -- grids, studies, executors, select, cross-dataset evaluation
6. ``xai``, ``report``, and ``demo`` (the fixed runs of ``segarena demo``, compared through ``report.compare``)
7. ``cli``, ``__main__`` and the package root ``segarena`` (the public facade, which imports lazily)

Imports inside functions count the same as those at the top of a module: a lazy import hides a cycle from Python
but not from this test.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "segarena"

LAYERS: dict[str, int] = {
    "_errors": 0, "_io": 0, "_registry": 0, "_paths": 0, "_version": 0, "_augment_presets": 0, "progress": 0,
    "config": 0, "configs": 0,
    "data": 1, "metrics": 1, "stats": 1,
    "models": 2, "_model_catalog": 2,
    "store": 3,
    "protocol": 4, "evaluate": 4, "inference": 4, "export": 4, "zeroshot": 4,
    "runner": 5,
    "xai": 6, "report": 6, "demo": 6,
    "cli": 7, "__main__": 7, "": 7,
}

#: within a layer some packages still have a direction: the foundations import each other only this way round
FOUNDATION_ORDER = ["_version", "progress", "_errors", "_io", "_registry", "_paths", "_augment_presets", "config",
                    "configs"]


def _module_name(path: Path, src: Path | None = None) -> str:
    src = src or SRC
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, src: Path | None = None) -> list[tuple[str, int]]:
    """Every ``segarena`` module ``path`` imports (absolute name, line), wherever the import statement stands."""
    src = src or SRC
    name = _module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "segarena":
                # ``from segarena import x`` / ``from .. import x``: x is a submodule, or a name of the root itself
                found += [(f"segarena.{a.name}" if _is_submodule(src, a.name) else "segarena", node.lineno)
                          for a in node.names]
            else:
                found.append((target, node.lineno))
    return [(t, line) for t, line in found if t == "segarena" or t.startswith("segarena.")]


def _is_submodule(src: Path, name: str) -> bool:
    return (src / f"{name}.py").is_file() or (src / name / "__init__.py").is_file()


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    top = _top(module)
    if top not in LAYERS:
        raise AssertionError(f"{module}: package {top!r} has no layer; add it to LAYERS in {__file__}")
    return LAYERS[top]


def _all_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_imports_only_downward():
    bad = []
    for path in _all_modules():
        me = _module_name(path)
        for target, line in _imports(path):
            if _layer(target) > _layer(me):
                bad.append(f"{path.relative_to(SRC.parent)}:{line} ({me}, layer {_layer(me)}) imports {target} "
                           f"(layer {_layer(target)})")
            elif _layer(target) == _layer(me) == 0:
                a, b = _top(me), _top(target)
                if a != b and FOUNDATION_ORDER.index(b) > FOUNDATION_ORDER.index(a):
                    bad.append(f"{path.relative_to(SRC.parent)}:{line}: foundation {a} imports {b}")
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_nothing_below_the_facade_imports_the_package_root():
    """``from segarena import __version__`` would run the facade from inside a layer; take it from ``_version``."""
    bad = [f"{p.relative_to(SRC.parent)}:{line}" for p in _all_modules() if _module_name(p) != "segarena"
           for target, line in _imports(p) if target == "segarena"]
    assert not bad


def test_every_package_has_a_layer():
    tops = {_top(_module_name(p)) for p in _all_modules()}
    assert tops <= set(LAYERS), tops - set(LAYERS)


@pytest.mark.parametrize(("source", "expected"), [
    ("from ...runner.store import RunStore\n", "segarena.runner.store"),
    ("def f():\n    from ...report import overlay\n", "segarena.report"),
    ("def f():\n    from ... import cli\n", "segarena.cli"),
    ("from ... import __version__\n", "segarena"),
    ("import segarena.cli\n", "segarena.cli"),
])
def test_the_parser_sees_relative_and_function_level_imports(tmp_path, source, expected):
    """The checker itself: relative imports two levels up and imports inside functions resolve to absolute names."""
    src = tmp_path / "segarena"
    (src / "protocol" / "sub").mkdir(parents=True)
    (src / "cli.py").write_text("")
    mod = src / "protocol" / "sub" / "mod.py"
    mod.write_text(source)
    names = [t for t, _ in _imports(mod, src)]
    assert names == [expected]
    assert _layer(expected) > _layer("segarena.protocol.sub.mod")  # each of these would be refused
