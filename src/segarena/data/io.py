"""Image and mask decoding with validation. Every failure names the file and the fix."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .._errors import DataError


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise DataError(f"{path}: file not found", fix="check the dataset root, or re-download the dataset")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)", fix="replace it with the original or remove the case")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(path)
            im.load()
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file PIL can read",
                        fix="replace it with the original or remove the case") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc})",
                        fix="replace it with the original or remove the case") from None
    if im.width == 0 or im.height == 0:
        raise DataError(f"{path}: zero-sized image", fix="replace it with the original or remove the case")
    return im


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    # 16-bit or float images: scale by the image's own maximum (medical 16-bit often uses 10-12 bits only)
    arr = arr.astype(np.float64)
    lo = min(float(arr.min()), 0.0)
    hi = float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip((arr - lo) * 255.0 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decode an image as ``uint8`` ``[H, W, channels]`` (RGB for 3 channels, luminance for 1)."""
    path = Path(path)
    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _to_uint8(np.asarray(im))
        arr = arr[..., None] if arr.ndim == 2 else arr
        if channels == 3:
            arr = np.repeat(arr, 3, axis=2)
        return np.ascontiguousarray(arr)
    im = im.convert("RGB" if channels == 3 else "L")
    arr = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(arr if arr.ndim == 3 else arr[..., None])


def read_gray(path: str | Path) -> np.ndarray:
    """Decode a mask file as a 2-D array (RGB-stored grayscale is reduced to its first channel)."""
    path = Path(path)
    im = _open(path)
    arr = np.asarray(im)
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        if arr.shape[2] == 3:
            _refuse_colour_codes(arr, path)
        arr = arr.max(axis=2) if arr.shape[2] > 1 else arr[..., 0]
    if arr.dtype != np.uint8 and arr.dtype != bool:
        if arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise DataError(f"{path}: mask values up to {int(arr.max())} do not fit a label map",
                            fix="store masks as 8-bit label maps (0 = background, 1..K-1 = classes)")
    return arr.astype(np.uint8)


_COLOUR_NAMES = {(1, 0, 0): "red", (0, 1, 0): "green", (0, 0, 1): "blue", (1, 1, 0): "yellow", (1, 0, 1): "magenta",
                 (0, 1, 1): "cyan"}


def _refuse_colour_codes(rgb: np.ndarray, path: Path) -> None:
    """Several distinct colours in one mask mean a colour-coded multi-class mask: taking the channel maximum
    would silently merge its classes, so it is an error. One colour (a red silhouette, JPEG noise included) is
    fine. A colour counts when its pixels are strongly coloured (channel spread > 64) and cover >= 16 pixels and
    >= 1% of the coloured pixels."""
    if rgb.dtype != np.uint8:
        return
    x = rgb.astype(np.int16)
    coloured = (x.max(axis=2) - x.min(axis=2)) > 64
    n = int(coloured.sum())
    if n < 32:
        return
    on = x[coloured] > 127
    codes, counts = np.unique(on[:, 0] * 4 + on[:, 1] * 2 + on[:, 2], return_counts=True)
    keep = [int(c) for c, k in zip(codes, counts) if c and k >= 16 and k >= 0.01 * n]  # 0: blends into black
    if len(keep) > 1:
        names = [_COLOUR_NAMES.get(((c >> 2) & 1, (c >> 1) & 1, c & 1), "white") for c in keep]
        raise DataError(f"{path}: colour-coded mask with several colours ({', '.join(names)}); this dataset reads "
                        f"grey label maps, so the colours' classes would merge",
                        fix="convert the mask to a label map (0 = background, 1..K-1 = classes) or use the adapter "
                            "of the dataset that defines these colours")


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) without decoding pixels."""
    im = _open_header(Path(path))
    return im.height, im.width


def _open_header(path: Path):
    from PIL import Image

    try:
        return Image.open(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
        raise DataError(f"{path}: cannot read image header ({exc})",
                        fix="replace it with the original or remove the case") from None


def binarize(mask: np.ndarray, threshold: int = 127) -> np.ndarray:
    """JPEG-compressed binary masks have grey edges: threshold them."""
    return (mask > threshold).astype(np.uint8)


def map_values(mask: np.ndarray, mapping: dict[int, int], path: Path | str) -> np.ndarray:
    """Map raw mask values to class indices; any value not in ``mapping`` is an error naming the file."""
    values = np.unique(mask)
    unknown = [int(v) for v in values if int(v) not in mapping]
    if unknown:
        raise DataError(f"{path}: unexpected mask values {unknown[:8]} (expected {sorted(mapping)})",
                        fix="fix the mask, or pass a value mapping, e.g. --set data.options.mask_values={255:1}")
    lut = np.zeros(256, np.uint8)
    for k, v in mapping.items():
        lut[k] = v
    return lut[mask]


def check_labels(mask: np.ndarray, num_classes: int, path: Path | str) -> np.ndarray:
    bad = np.unique(mask[mask >= num_classes])
    if bad.size:
        raise DataError(f"{path}: unexpected mask values {bad[:8].tolist()} for {num_classes} classes",
                        fix="map mask values to 0..K-1 (e.g. --set data.options.mask_values={255:1})")
    return mask
