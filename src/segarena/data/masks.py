"""The one rule that turns a decoded mask file into a label map (0 = background, 1..K-1 = classes).

Adapters, ``segarena evaluate`` and ``predict``'s reading of references all call :func:`to_labels`, so a mask
means the same thing everywhere. The rule, applied to the grey values of one mask file:

1. An explicit mapping (``data.options.mask_values`` / ``--mask-values``) wins: ``{255: 1}`` maps 255 to class 1;
   0 is background unless the mapping says otherwise; any other value is an error naming the file. The keywords
   ``binary`` (0/1 kept, otherwise every value > 127 is foreground) and ``labels`` (values are class indices)
   force rules 3 and 2. Adapters of releases whose masks are binary by definition (Kvasir-SEG, CVC-ClinicDB,
   BUSI, HC18) use ``binary``, as their documentation prescribes.
2. Values that already are class indices (all <= K-1, or <= 31 when K is unknown) are kept: a 0/1 label map
   stays 0/1.
3. With two classes (or K unknown), a binary mask stored as grey levels is read as binary: a lossless 0/255 mask maps
   255 to 1; a JPEG mask (compression leaves values near 0 and near 255)
   is thresholded at the midpoint (> 127 is foreground) when at most 5% of its non-black pixels lie in the
   ambiguous middle range 33..222. This is what makes a 0/1 prediction score correctly against a 0/255 PNG or a
   Kvasir-SEG JPEG reference. Lossless files with several grey levels (0/7/255) are never thresholded.
4. Anything else (e.g. grey levels 0/85/170/255 with K = 2) is an error that names the file and the fix
   (``--mask-values`` / ``data.options.mask_values``).

Palette images (PNG mode ``P``, GIF) are reduced before the rule by :func:`segarena.data.io.read_gray`: a grey
palette gives its grey levels (DRIVE's GIFs), a colour palette gives its indices (PASCAL-VOC-style label PNGs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np

from .._errors import DataError

#: a mapping raw value -> class, or one of the keywords
MaskValues = Union[dict[int, int], str, None]
KEYWORDS = ("binary", "labels")
#: with an unknown number of classes, values up to this are read as class indices
MAX_AUTO_LABEL = 31
#: formats whose compression adds noise around 0 and 255 (only these are thresholded)
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
#: share of non-black pixels allowed in the ambiguous middle range for a grey mask to count as binary
MIDDLE_SHARE = 0.05


def parse_mask_values(raw: Any, where: str = "data.options.mask_values") -> MaskValues:
    """Accept ``{255: 1}`` (YAML/JSON, keys may be strings), ``"0:0,255:1"``, ``"{255: 1}"``, ``binary``,
    ``labels`` or None; anything else is a :class:`DataError` naming ``where``."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        text = raw.strip()
        if text in KEYWORDS:
            return text
        if text.startswith("{"):
            import yaml

            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError:
                raw = text
        else:
            try:
                raw = {k.strip(): v.strip() for k, v in (kv.split(":") for kv in text.split(",") if kv.strip())}
            except ValueError:
                raw = text
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: expected a mapping RAW -> CLASS like {{255: 1}}, or 'binary' / 'labels', "
                        f"got {raw!r}", fix="e.g. --set 'data.options.mask_values={255: 1}' or --mask-values 0:0,255:1")
    try:
        out = {int(k): int(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f"{where}: keys and values must be integers, got {raw!r}",
                        fix="e.g. {255: 1} or 0:0,255:1") from None
    bad = [k for k in out if not 0 <= k <= 65535] + [v for v in out.values() if not 0 <= v <= 255]
    if bad:
        raise DataError(f"{where}: value {bad[0]} out of range", fix="raw values 0..65535, classes 0..255")
    return out


def _middle_share(values: np.ndarray, counts: np.ndarray) -> float:
    lit = counts[values > 32].sum()
    middle = counts[(values > 32) & (values < 223)].sum()
    return float(middle) / float(lit) if lit else 0.0


def to_labels(raw: np.ndarray, path: str | Path, num_classes: int | None = None,
              mask_values: MaskValues = None) -> np.ndarray:
    """Apply the rule above to one decoded 2-D mask; returns ``uint8`` class indices."""
    if raw.ndim != 2:
        raise DataError(f"{path}: mask has shape {raw.shape}, expected a 2-D label map",
                        fix="store one grey or palette image per mask")
    if raw.dtype == bool:
        return raw.astype(np.uint8)
    values, counts = np.unique(raw, return_counts=True)
    top = int(values[-1]) if values.size else 0
    if isinstance(mask_values, dict):
        mapping = {0: 0, **mask_values}
        unknown = [int(v) for v in values if int(v) not in mapping]
        if unknown:
            raise DataError(f"{path}: unexpected mask values {unknown[:8]}, not in the mapping {mask_values}",
                            fix="add them to the mapping, or use mask_values=binary for JPEG masks (> 127 is "
                                "foreground)")
        lut = np.zeros(max(top, max(mapping)) + 1, np.uint8)
        for k, v in mapping.items():
            lut[k] = v
        return lut[raw]
    if mask_values == "binary":  # 0/1 stays 0/1; grey levels are foreground above the midpoint
        return (raw > 0 if top <= 1 else raw > 127).astype(np.uint8)
    limit = (num_classes - 1) if num_classes else MAX_AUTO_LABEL
    if mask_values == "labels" or top <= limit:
        if top > 255 or (num_classes and top >= num_classes):
            raise DataError(f"{path}: unexpected mask values (up to {top}) for {num_classes or 256} classes",
                            fix="map the values to 0..K-1 with --mask-values / data.options.mask_values")
        return raw.astype(np.uint8)
    if num_classes in (None, 2) and top <= 255:
        lit = values[values > 0]
        if lit.size == 1 and int(lit[0]) == 255:  # lossless binary mask 0/255
            return (raw > 0).astype(np.uint8)
        lossy = Path(str(path)).suffix.lower() in LOSSY_SUFFIXES
        if lossy and top >= 128 and _middle_share(values, counts) <= MIDDLE_SHARE:
            return (raw > 127).astype(np.uint8)
    odd = values[values > limit]
    shown = odd[:8].tolist() + (["..."] if odd.size > 8 else [])
    k = f"{num_classes} classes" if num_classes else "a label map or a binary 0/255 mask"
    raise DataError(f"{path}: unexpected mask values {shown}: they fit neither {k} nor a binary 0/255 mask",
                    fix="map them explicitly, e.g. --mask-values 0:0,128:1,255:2 (evaluate) or "
                        "--set 'data.options.mask_values={128: 1, 255: 2}'")


def describe(mask_values: MaskValues) -> str:
    """A short text of the mapping in use, for reports and errors."""
    if mask_values is None:
        return "auto (class indices kept; 0/255 and JPEG 0/255 thresholded at 127)"
    return mask_values if isinstance(mask_values, str) else ", ".join(f"{k}->{v}" for k, v in mask_values.items())
