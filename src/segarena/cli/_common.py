"""Helpers shared by the subcommands: tables, JSON, specs from options, printed verdicts."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from .._errors import ConfigError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _table(rows: list[tuple[str, ...]], widths: tuple[int | None, ...] = ()) -> str:
    """Rows as aligned columns, two spaces apart; a cell longer than its column's width limit is cut with '…'."""
    def cut(text: str, limit: int | None) -> str:
        return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"

    cells = [[cut(str(v), widths[j] if j < len(widths) else None) for j, v in enumerate(r)] for r in rows]
    size = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))] if cells else []
    return "\n".join("  ".join(v.ljust(size[j]) for j, v in enumerate(r)).rstrip() for r in cells)


def _options(sets: list[str]) -> dict[str, Any]:
    from ..config import RunSpec, apply_overrides

    spec = apply_overrides(RunSpec(), [s if s.startswith("data.options.") else f"data.options.{s}" for s in sets])
    return spec.data.options


def _progress_bar(what: str):
    """A ``progress(done, total)`` callback drawing :func:`..progress.progress_bar` on stderr (long dataset commands
    never go silent; one line in a terminal, a line per 10% in a log)."""
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        from ..progress import progress_bar

        if "bar" not in state:
            state["bar"] = progress_bar(total=total, desc=what, unit="case")
        state["bar"].update(done - state["bar"].n)
        if done >= total:
            state["bar"].close()

    return update


def _base_spec(a: argparse.Namespace):
    from ..config import RunSpec, apply_overrides
    from ..configs import load_preset

    spec = _spec_file(a.config) if getattr(a, "config", None) else RunSpec()
    if a.preset:
        protocol, model_defaults = load_preset(a.preset)
        if getattr(a, "config", None):  # a config file's own model section wins over the preset's defaults
            model_defaults = {}
        spec = dataclasses.replace(spec, protocol=protocol, model=dataclasses.replace(spec.model, **model_defaults))
    return apply_overrides(spec, a.set or [])


def _spec_file(path: str):
    from ..config import load_yaml, spec_from_dict

    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with data/model/protocol sections, got a "
                          f"{type(raw).__name__}", fix="write e.g. `protocol: {epochs: 10}` at the top level")
    try:
        return spec_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", fix=exc.fix) from None


def _run_spec(a: argparse.Namespace):
    """The resolved spec of `run` (and `config show`): file, preset, --model/--dataset/--fold, then --set."""
    from ..config import apply_overrides

    spec = _base_spec(a)
    pre = [f"model.name={a.model}"] if a.model else []
    pre += [f"data.name={a.dataset}"] if a.dataset else []
    pre += [f"data.fold={a.fold}"] if a.fold is not None else []
    spec = apply_overrides(spec, pre + (a.set or []))
    from ..runner.grid import resolve_pretrained

    return dataclasses.replace(spec, model=dataclasses.replace(
        spec.model, pretrained=resolve_pretrained(spec.model.name, spec.model.pretrained)))


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _print_comparison(comp, beside: str = "") -> int:
    """Leaderboard (then ``beside`` it, e.g. the paper's numbers), caveats and verdicts, the report's path; 1 when a
    run failed (named on stderr)."""
    print()
    print(comp.leaderboard)
    if beside:
        print(f"\n{beside}")
    _print_verdicts(comp.paths)
    print(f"\nreport: {comp.paths['html']}")
    if comp.failed:
        print(f"segarena: {len(comp.failed)} of {len(comp.rows)} run(s) failed: "
              f"{_names([f'{r.spec.run_name} ({r.error})' for r in comp.failed])}", file=sys.stderr)
        return 1
    return 0


def _print_verdicts(paths: dict[str, Any]) -> None:
    """The report's caveats, then its verdict sentences, as printed at the end of compare/demo/report/study."""
    rep = json.loads(paths["json"].read_text())
    if rep.get("caveats"):
        print("\nCaveats:")
        for c in rep["caveats"]:
            print(f"  ! {c}")
    for line in rep.get("summary", []):
        print(f"\n{line}")


def _print_problems(problems: list) -> None:
    """Damaged or partial runs of a results folder, one line each on stderr (the rest was built)."""
    for p in problems:
        print(f"segarena: warning: {p.line()}", file=sys.stderr)
    if problems:
        print(f"segarena: {len(problems)} run(s) left out or partial; everything else is included", file=sys.stderr)


def _names(names: list[str], most: int = 8) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _measure_note(name: str, dist_unit: str = "px") -> str:
    """Unit and better direction of a metric, for printed output."""
    if name.startswith(("hd", "assd")):
        return f"({dist_unit}, lower is better)"
    return "(fraction 0-1, higher is better)"



_LOGGED = {"run", "compare", "study", "select", "crossval", "demo", "add-method"}


def _log_command(args: argparse.Namespace, argv: list[str]) -> None:
    results = getattr(args, "results", None) or getattr(args, "results_dir", None)
    if args.command in _LOGGED and results and (args.command != "study" or args.sub == "run"):
        from ..store import ResultsDir

        ResultsDir(results).log_command(argv)
