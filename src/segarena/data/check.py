"""Checking a raw dataset release: every problem at once, with file names.

Adapters stop at the first orphan so that training never runs on a broken release. ``segarena datasets check``
needs the opposite: walk the whole release and report *all* orphans, unreadable files, size mismatches and
unexpected mask values, plus the numbers worth knowing before a study (pairs, class pixel shares, image sizes,
grouping, exact duplicates).

Adapters that want their orphans listed one by one expose ``scan(root) -> Scan`` next to ``find_cases``; the
helpers for that (:class:`Problem`, :class:`Scan`, :func:`pair_files`) live here so that the adapter and the checker
share one definition of "orphan". For adapters without ``scan`` the checker falls back to ``find_cases`` and reports
its error as one layout problem.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError
from .card import DATASETS, Case

#: kinds of problems, in the order they are reported
KINDS = ("layout", "orphan_image", "orphan_mask", "missing_file", "duplicate_id", "unreadable", "size_mismatch",
         "unexpected_values", "empty_mask")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a release: its kind, the file concerned and what exactly is wrong."""

    kind: str
    file: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "file": self.file, "detail": self.detail}


@dataclass
class Scan:
    """What an adapter found under a root: the complete cases and the problems met while pairing files."""

    cases: list[Case] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def cases_or_raise(self, dataset: str) -> list[Case]:
        """The cases, or a :class:`DataError` naming the first problem and how many there are in all."""
        if self.problems:
            first = self.problems[0]
            more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
            raise DataError(f"{dataset}: {first.kind.replace('_', ' ')}: {first.file}"
                            f"{' — ' + first.detail if first.detail else ''}{more}",
                            fix=f"restore or remove the files; `segarena datasets check {dataset}` lists them all")
        if not self.cases:
            raise DataError(f"{dataset}: no cases found", fix="check the dataset root and its layout")
        return self.cases


def pair_files(images: dict[str, Path], masks: dict[str, Path], *,
               image_needs_mask: bool = True) -> tuple[list[tuple[str, Path, Path]], list[Problem]]:
    """Match images and masks by case id; every unmatched file becomes a problem naming it.

    ``image_needs_mask=False`` is for releases whose unlabelled images are expected (a test split without
    annotations): such images are skipped silently, while masks without an image are still reported.
    """
    pairs = [(k, images[k], masks[k]) for k in sorted(set(images) & set(masks))]
    problems = []
    if image_needs_mask:
        problems += [Problem("orphan_image", str(images[k]), "no mask for this image")
                     for k in sorted(set(images) - set(masks))]
    problems += [Problem("orphan_mask", str(masks[k]), "no image for this mask")
                 for k in sorted(set(masks) - set(images))]
    return pairs, problems


def files_by_id(folder: Path, suffixes: Iterable[str], strip: str = "") -> dict[str, Path]:
    """``{case id: file}`` for the files in ``folder`` with one of ``suffixes``; ``strip`` removes a stem suffix
    (``_segmentation``). Hidden files and other extensions (``LICENSE.txt``, ``ATTRIBUTION.txt``) are ignored."""
    wanted = {s.lower() for s in suffixes}
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in wanted:
            continue
        stem = p.stem
        if strip:
            if not stem.endswith(strip):
                continue
            stem = stem[: -len(strip)]
        out[stem] = p
    return out


def child_ci(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched in any letter case (exact spelling first); None when absent."""
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    low = name.lower()
    for p in sorted(folder.iterdir()):
        if p.name.lower() == low:
            return p
    return None


def first_dir(root: Path, candidates: Iterable[str]) -> Path | None:
    """The first ``root/<candidate>`` that is a folder, each path part matched in any letter case (releases are
    unpacked with or without their top folder, and archives differ in case: ``CVC-ClinicDB`` / ``cvc-clinicdb``)."""
    for c in candidates:
        here: Path | None = root
        for part in Path(c).parts:
            here = child_ci(here, part) if here is not None else None
        if here is not None and here.is_dir():
            return here
    return None


# --------------------------------------------------------------------------------------------------------------
def _scan_function(adapter: Any) -> Callable[[Path], Scan] | None:
    module = importlib.import_module(adapter.find_cases.__module__)
    fn = getattr(module, "scan", None)
    return fn if callable(fn) else None


def _list_cases(name: str, adapter: Any, folder: Path, options: dict[str, Any]) -> Scan:
    if not adapter.card.folder:  # user datasets take their options
        try:
            adapter.check_options(options)
            return Scan(cases=list(adapter.find_cases(folder, **options)))
        except DataError as exc:
            return Scan(problems=[Problem("layout", str(folder), str(exc))])
    scan = _scan_function(adapter)
    try:
        if scan is not None:
            return scan(folder)
        return Scan(cases=list(adapter.find_cases(folder)))
    except DataError as exc:
        return Scan(problems=[Problem("layout", str(folder), str(exc))])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _mask_problem(case: Case, exc: Exception) -> Problem:
    text = str(exc)
    kind = "unexpected_values" if "unexpected mask values" in text or "do not fit a label map" in text else "unreadable"
    where = case.masks[0] if case.masks else case.image
    for p in case.masks:  # name the mask file the message is about, when it names one
        if str(p) in text:
            where = p
            break
    return Problem(kind, str(where), text)


def check_dataset(name: str, root: str | os.PathLike | None = None, options: dict[str, Any] | None = None, *,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Walk a raw dataset release and report its contents and every problem found (never stops at the first).

    ``root`` is the data root (``--data-root``) or, for user datasets, their folder. Each case's image and mask are
    decoded through the adapter, exactly as training would read them. ``progress(done, total)`` is called after
    each case. The result is JSON-serialisable; ``result["ok"]`` is true when no problem was found (any file that
    fails to decode is a problem; images and masks are counted separately). Empty (all-background) masks are
    listed in ``empty_mask_files``; they are a problem only when every mask is empty.
    """
    from . import dataset_root  # late: the package imports the adapters, which import this module

    adapter = DATASETS.get(name)
    options = dict(options or {})
    adapter.check_options(options)
    folder = dataset_root(name, root, options, download=False)
    try:
        card = adapter.card_with(options)
    except DataError:  # a broken user dataset still gets its problems listed
        card = adapter.card
    listing = _list_cases(name, adapter, folder, options)
    problems: list[Problem] = list(listing.problems)
    cases = sorted(listing.cases, key=lambda c: c.id)

    ids = Counter(c.id for c in cases)
    first_image = {c.id: c.image for c in reversed(cases)}
    problems += [Problem("duplicate_id", str(first_image[i]), f"case id {i!r} used {n} times")
                 for i, n in sorted(ids.items()) if n > 1]

    k = card.num_classes
    pixels = np.zeros(k, np.int64)
    cases_with = np.zeros(k, np.int64)
    heights: list[int] = []
    widths: list[int] = []
    digests: dict[str, list[str]] = {}
    decoded = images_ok = masks_ok = 0
    empty: list[str] = []
    for i, case in enumerate(cases):
        try:
            digests.setdefault(_sha256(case.image), []).append(str(case.image))
        except OSError as exc:
            problems.append(Problem("unreadable", str(case.image), f"cannot read bytes ({exc})"))
        image = mask = None
        try:
            image = adapter.load_image(case, card.channels)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a problem of this file, keep walking
            problems.append(Problem("unreadable", str(case.image), str(exc)))
        try:
            mask = adapter.read_mask(case)
        except Exception as exc:  # noqa: BLE001 - idem
            problems.append(_mask_problem(case, exc))
        images_ok += image is not None
        masks_ok += mask is not None
        if image is not None:
            heights.append(int(image.shape[0]))
            widths.append(int(image.shape[1]))
        if image is not None and mask is not None and mask.shape != image.shape[:2]:
            problems.append(Problem("size_mismatch", str(case.masks[0]),
                                    f"mask {mask.shape[0]}x{mask.shape[1]} vs image {image.shape[0]}x{image.shape[1]} "
                                    f"({case.image.name})"))
        elif mask is not None:
            bad = np.unique(mask[mask >= k])
            if bad.size:
                problems.append(Problem("unexpected_values", str(case.masks[0]),
                                        f"label values {bad[:8].tolist()} outside 0..{k - 1}"))
            else:
                counts = np.bincount(mask.ravel(), minlength=k)[:k]
                pixels += counts
                cases_with += counts > 0
                decoded += 1
                if k > 1 and not counts[1:].any():
                    empty.append(str(case.masks[0]))
        if progress is not None:
            progress(i + 1, len(cases))

    if empty and len(empty) == decoded:  # nothing to learn: every mask is background only
        problems.append(Problem("empty_mask", empty[0], f"all {len(empty)} masks are all background (no foreground "
                                                        "pixel); check mask_values or the mask folder"))
    total = int(pixels.sum())
    groups = Counter(c.group_id for c in cases)
    sizes = list(groups.values())
    problems.sort(key=lambda p: (KINDS.index(p.kind) if p.kind in KINDS else len(KINDS), p.file))
    unlabelled = _unlabelled(name, options)
    return {
        "dataset": name,
        "title": card.title,
        "root": str(folder),
        "pairs": len(cases),
        "decoded": decoded,
        "images_decoded": images_ok,
        "masks_decoded": masks_ok,
        "empty_masks": len(empty),
        "empty_mask_files": empty,
        "classes": [{"index": j, "name": card.labels[j], "pixels": int(pixels[j]),
                     "share": (float(pixels[j]) / total) if total else 0.0, "cases": int(cases_with[j])}
                    for j in range(k)],
        "image_sizes": {"height": _stats(heights), "width": _stats(widths),
                        "distinct": len(set(zip(heights, widths)))},
        "grouping": {"by": card.grouping, "groups": len(groups), "cases_per_group": _stats(sizes),
                     "histogram": {str(n): c for n, c in sorted(Counter(sizes).items())}},
        "duplicates": [sorted(paths) for paths in digests.values() if len(paths) > 1],
        "problems": [p.as_dict() for p in problems],
        "problem_counts": dict(Counter(p.kind for p in problems)),
        "ok": not problems,
        **({"unlabelled_images": unlabelled} if unlabelled is not None else {}),
    }


def _unlabelled(name: str, options: dict[str, Any]) -> int | None:
    """nnU-Net datasets: the number of ``imagesTs`` cases (unlabelled, for ``predict``); None otherwise."""
    if name != "nnunet" or not options.get("path") or not (Path(options["path"]) / "imagesTs").is_dir():
        return None
    from .adapters.folder import find_nnunet_cases

    try:
        return len(find_nnunet_cases(options, "Ts"))
    except DataError:
        return 0


def _plain(text: str) -> str:
    """Drop reStructuredText markup that card fields share with docstrings (``code``, :role:`target`)."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", str(text))
    return text.replace("``", "")


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`check_dataset` as plain text: a summary, then every problem on its own line."""
    return _plain(_format_report(report))


def _format_report(report: dict[str, Any]) -> str:
    h, w = report["image_sizes"]["height"], report["image_sizes"]["width"]
    g = report["grouping"]
    lines = [f"{report['dataset']} ({report['title']}) at {report['root']}",
             f"  pairs: {report['pairs']}: {report['images_decoded']} image(s) and {report['masks_decoded']} mask(s) "
             f"decoded, {report['decoded']} pair(s) usable; {report['empty_masks']} empty (all-background) mask(s)",
             "  classes: " + ", ".join(f"{c['name']} {100 * c['share']:.2f}% of pixels in {c['cases']} case(s)"
                                       for c in report["classes"]),
             f"  image sizes (HxW): min {h['min']}x{w['min']}, median {h['median']:g}x{w['median']:g}, "
             f"max {h['max']}x{w['max']}; {report['image_sizes']['distinct']} distinct",
             f"  grouping by {g['by']}: {g['groups']} group(s), {g['cases_per_group']['min']}-"
             f"{g['cases_per_group']['max']} case(s) per group (median {g['cases_per_group']['median']:g})",
             f"  exact duplicates (same bytes): {len(report['duplicates'])} set(s)"]
    if "unlabelled_images" in report:
        lines.append(f"  unlabelled images (imagesTs/): {report['unlabelled_images']}")
    lines += [f"    {' = '.join(d)}" for d in report["duplicates"]]
    if report.get("empty_masks"):
        shown = report["empty_mask_files"][:10]
        lines.append(f"  empty masks (all background, trained as negatives): {report['empty_masks']}")
        lines += [f"    {f}" for f in shown] + (["    ..."] if report["empty_masks"] > len(shown) else [])
    if report["problems"]:
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in report["problem_counts"].items())
        lines.append(f"  problems: {len(report['problems'])} ({counts})")
        lines += [f"    {p['kind']}: {p['file']}" + (f" — {p['detail']}" if p["detail"] else "")
                  for p in report["problems"]]
    else:
        lines.append("  problems: none")
    return "\n".join(lines)
