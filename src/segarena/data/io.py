"""Image and mask decoding with validation. Every failure names the file and the fix."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .._errors import DataError

#: suffixes decoded by tifffile / nibabel instead of Pillow
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found", fix="check the dataset root, or re-download the dataset")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)", fix="replace it with the original or remove the case")


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    _exists(path)
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


def _read_tiff(path: Path) -> np.ndarray:
    """First page of a TIFF as ``[H, W]`` or ``[H, W, C]``. tifffile reads what Pillow cannot (CVC-ClinicDB's
    RGB frames tagged BlackIsZero, 16-bit multi-sample, planar), and never drops channels as OpenCV does."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            arr = page.asarray()
            separate = int(getattr(page, "planarconfig", 1)) == 2
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem of this file
        raise DataError(f"{path}: corrupt or unreadable TIFF ({type(exc).__name__}: {exc})",
                        fix="replace it with the original or remove the case") from None
    if arr.ndim == 3 and separate and arr.shape[0] <= 4:
        arr = np.moveaxis(arr, 0, -1)
    while arr.ndim > 3 or (arr.ndim == 3 and arr.shape[-1] > 4 and arr.shape[0] == 1):
        arr = arr[0]
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: TIFF of shape {arr.shape} is not a 2-D image", fix="store one 2-D image per file")
    return arr


def _read_nifti(path: Path) -> np.ndarray:
    """A 2-D NIfTI (nnU-Net stores 2-D cases as ``X x Y x 1``) as ``[rows, cols]``, like SimpleITK reads it."""
    try:
        import nibabel
    except ImportError:
        raise DataError(f"{path}: reading NIfTI needs nibabel", fix="pip install 'segarena[nifti]'") from None
    try:
        arr = np.asarray(nibabel.load(str(path)).dataobj)
    except Exception as exc:  # noqa: BLE001 - idem
        raise DataError(f"{path}: corrupt or unreadable NIfTI ({type(exc).__name__}: {exc})",
                        fix="replace it with the original or remove the case") from None
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise DataError(f"{path}: NIfTI of shape {arr.shape} is not 2-D", fix="segarena reads 2-D images only")
    return np.ascontiguousarray(arr.T)


def decode_array(path: str | Path) -> np.ndarray | None:
    """The pixels of a TIFF or NIfTI file (``None`` for the formats Pillow reads)."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        _exists(path)
        return _read_tiff(path)
    if is_nifti(path):
        _exists(path)
        return _read_nifti(path)
    return None


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


def _array_to_image(arr: np.ndarray, channels: int) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # grey+alpha or RGBA: drop alpha
        arr = arr[..., :1] if arr.shape[2] == 2 else arr[..., :3]
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 1 and arr.shape[2] == 3:  # ITU-R 601 luma, as Pillow's convert("L")
        arr = (arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5).astype(np.uint8)[..., None]
    elif arr.shape[2] != channels:
        arr = arr[..., :channels]
    return np.ascontiguousarray(arr)


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decode an image as ``uint8`` ``[H, W, channels]`` (RGB for 3 channels, luminance for 1).

    TIFF goes through tifffile, NIfTI through nibabel, every other format through Pillow (palette GIF/PNG through
    its palette, 1-bit BMP as 0/255); 16-bit and float images are scaled by their own range."""
    path = Path(path)
    arr = decode_array(path)
    if arr is not None:
        return _array_to_image(arr, channels)
    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_image(np.asarray(im), channels)
    im = im.convert("RGB" if channels == 3 else "L")
    arr = np.asarray(im, dtype=np.uint8)
    return np.ascontiguousarray(arr if arr.ndim == 3 else arr[..., None])


def _palette_is_grey(im) -> bool:
    used = np.unique(np.asarray(im))
    pal = np.asarray(im.getpalette() or [], np.int32).reshape(-1, 3)
    used = used[used < len(pal)]
    return bool(len(pal)) and bool(np.all((pal[used, 0] == pal[used, 1]) & (pal[used, 1] == pal[used, 2])))


def read_gray(path: str | Path) -> np.ndarray:
    """Decode a mask file as a 2-D array of raw values (see :mod:`segarena.data.masks` for what they mean).

    RGB-stored grayscale is reduced to its channel maximum (after refusing colour-coded multi-class masks); a
    palette image gives its grey levels when the palette is grey, else its indices (VOC-style label PNGs)."""
    path = Path(path)
    arr = decode_array(path)
    if arr is None:
        im = _open(path)
        if im.mode in ("P", "PA"):
            if _palette_is_grey(im):
                im = im.convert("L")
            else:
                im = im.convert("P") if im.mode == "PA" else im
        elif im.mode in ("LA", "La", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB") if im.mode not in ("LA", "La") else im.convert("L")
        arr = np.asarray(im)
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):
            arr = arr[..., :1] if arr.shape[2] == 2 else arr[..., :3]
        if arr.shape[2] == 3:
            _refuse_colour_codes(arr, path)
        arr = arr.max(axis=2) if arr.shape[2] > 1 else arr[..., 0]
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        lit = np.unique(arr[arr != 0])
        if lit.size == 1 and lit[0] > 255 and arr.min() >= 0:  # a 16-bit binary mask (0/65535): same as 0/255
            return ((arr > 0) * 255).astype(np.uint8)
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(f"{path}: mask values {int(arr.min())}..{int(arr.max())} do not fit a label map",
                            fix="store masks as 8-bit label maps (0 = background, 1..K-1 = classes)")
        arr = arr.astype(np.uint8)
    return arr


def read_labels(path: str | Path, num_classes: int | None = None, mask_values=None) -> np.ndarray:
    """:func:`read_gray` followed by the one mask rule (:func:`segarena.data.masks.to_labels`)."""
    from .masks import to_labels

    return to_labels(read_gray(path), path, num_classes, mask_values)


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
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES or is_nifti(path):
        arr = decode_array(path)
        return int(arr.shape[0]), int(arr.shape[1])
    im = _open_header(path)
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
