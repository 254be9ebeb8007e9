"""CAMUS (Leclerc et al., IEEE TMI 2019): 2D apical two- and four-chamber echocardiography of 500 patients.

Public NIfTI release (``CAMUS_public``, the top folder may be present or not)::

    database_nifti/patient0001/patient0001_2CH_ED.nii.gz     end-diastole frame, 2-chamber view
    database_nifti/patient0001/patient0001_2CH_ED_gt.nii.gz  its label map (0 bg, 1 LV cavity, 2 myocardium, 3 LA)
    ...                        _2CH_ES, _4CH_ED, _4CH_ES (+ _gt); _half_sequence files are not used
    database_nifti/patient0001/Info_2CH.cfg, Info_4CH.cfg    ED, ES, NbFrame, Sex, Age, ImageQuality, EF, FrameRate
    database_split/subgroup_{training,validation,testing}.txt   the official patient split (optional)

Each 2D frame is stored with the image columns on the first array axis (NIfTI x) and, in some copies, a trailing
singleton axis; it is transposed here to ``[H, W]``. Pixel spacing comes from the NIfTI header (``pixdim``), x
first, so ``spacing_mm = (pixdim_y, pixdim_x)``. The older challenge release (``training/patientXXXX/
patientXXXX_2CH_ED.mhd`` + ``.raw``, ``ElementSpacing`` in the header) is read too; its ``testing/`` patients
have no public labels and are skipped. That gives 4 frames x 500 patients = 2,000 pairs (1,996 after duplicate
removal in Borst & Kounev), grouped by patient.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import DataError
from ..card import Case, DatasetCard, register_dataset
from ..check import Problem, Scan, first_dir
from ..io import _to_uint8, check_labels

CARD = DatasetCard(
    name="camus",
    title="CAMUS: Cardiac Acquisitions for Multi-structure Ultrasound Segmentation",
    modality="echocardiography (grayscale), apical 2- and 4-chamber views at ED and ES",
    labels=("background", "LV cavity", "LV myocardium", "left atrium"),
    channels=1,
    license="free for research after accepting the terms on the CAMUS download page; cite the paper",
    citation="Leclerc et al., Deep Learning for Segmentation using an Open Large-Scale Dataset in 2D "
             "Echocardiography, IEEE Transactions on Medical Imaging 38(9):2198-2210, 2019, "
             "doi:10.1109/TMI.2019.2900516",
    url="https://www.creatis.insa-lyon.fr/Challenge/camus/",
    folder="camus",
    aliases=("CAMUS_public", "CAMUS"),
    description="500 patients x {2CH, 4CH} x {ED, ES} = 2,000 frames with expert labels of the LV endocardium, "
                "LV epicardium (myocardium) and left atrium; anisotropic pixels (about 0.15 x 0.31 mm).",
    grouping="patient (patientXXXX; all four frames of a patient land in one fold)",
    how_to_get="download CAMUS_public (database_nifti + database_split) from the CAMUS page "
               "(https://humanheart-project.creatis.insa-lyon.fr/database/#collection/6373703d73e9f0047faa1bc8) "
               "and unpack it into <data-root>/camus/",
    harmonized={"LV cavity": (1,), "LV myocardium": (2,), "left atrium": (3,), "left ventricle": (1, 2)},
    has_spacing=True,
)

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
_PATIENT = re.compile(r"^patient\d{4}$")


# ---- readers --------------------------------------------------------------------------------------------------
def _nifti(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    try:
        import nibabel as nib
    except ImportError:
        raise DataError("reading CAMUS NIfTI files needs nibabel", fix="pip install nibabel") from None
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        zooms = img.header.get_zooms()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found", fix="check the dataset root, or re-download the dataset") from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise DataError(f"{path}: cannot read NIfTI ({exc})", fix="replace it with the original file") from None
    data = _squeeze_2d(data, path)
    sx = float(zooms[0]) if len(zooms) > 0 else 1.0
    sy = float(zooms[1]) if len(zooms) > 1 else 1.0
    return np.ascontiguousarray(data.T), (sy, sx)


def _squeeze_2d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise DataError(f"{path}: expected one 2D frame, got an array of shape {data.shape}",
                        fix="use the ED/ES files, not the *_half_sequence files")
    return data


_MET_TYPES = {"MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2", "MET_UINT": "u4",
              "MET_INT": "i4", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}


def _mhd_header(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})", fix="restore the file from the release") from None
    header = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            header[key.strip()] = value.strip()
    return header


def _mhd(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A MetaImage (``.mhd`` + ``.raw``) 2D frame as ``[H, W]`` and its spacing ``(sy, sx)``."""
    h = _mhd_header(path)
    try:
        dims = [int(v) for v in h["DimSize"].split()]
        dtype = np.dtype(_MET_TYPES[h["ElementType"]])
        spacing = [float(v) for v in h.get("ElementSpacing", h.get("ElementSize", "1 1")).split()]
        raw = path.parent / h["ElementDataFile"]
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: malformed MetaImage header ({exc})",
                        fix="restore the file from the release") from None
    if h.get("BinaryDataByteOrderMSB", "False").lower() == "true":
        dtype = dtype.newbyteorder(">")
    try:
        payload = raw.read_bytes()
        if h.get("CompressedData", "False").lower() == "true":
            payload = zlib.decompress(payload)
        data = np.frombuffer(payload, dtype=dtype).reshape(dims[::-1])  # x varies fastest
    except (OSError, ValueError, zlib.error) as exc:
        raise DataError(f"{raw}: cannot read the pixel data of {path.name} ({exc})",
                        fix="restore the .raw file from the release") from None
    data = data.reshape(data.shape[-2:]) if data.ndim > 2 and int(np.prod(data.shape[:-2])) == 1 else data
    if data.ndim != 2:
        raise DataError(f"{path}: expected one 2D frame, got shape {data.shape}", fix="use the ED/ES files")
    sx = spacing[0] if spacing else 1.0
    sy = spacing[1] if len(spacing) > 1 else sx
    return np.ascontiguousarray(data), (sy, sx)


def read_frame(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """One CAMUS frame (NIfTI or MetaImage) as ``[H, W]`` plus ``(sy, sx)`` in mm."""
    return _mhd(path) if path.suffix.lower() == ".mhd" else _nifti(path)


def read_image(case: Case, channels: int) -> np.ndarray:
    frame, _ = read_frame(case.image)
    arr = _to_uint8(frame)[..., None]
    return np.repeat(arr, 3, axis=2) if channels == 3 else arr


def read_mask(case: Case) -> np.ndarray:
    labels, _ = read_frame(case.masks[0])
    if labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise DataError(f"{case.masks[0]}: unexpected mask values (non-integer labels)",
                            fix="use the official *_gt files (labels 0..3)")
    if labels.min() < 0 or labels.max() > 255:
        raise DataError(f"{case.masks[0]}: unexpected mask values {sorted({int(labels.min()), int(labels.max())})}",
                        fix="use the official *_gt files (labels 0..3)")
    return check_labels(labels.astype(np.uint8), CARD.num_classes, case.masks[0])


# ---- metadata -------------------------------------------------------------------------------------------------
def _info(cfg: Path) -> dict[str, Any]:
    """``Info_2CH.cfg``: ``Key: value`` lines; numbers are parsed, the rest kept as text."""
    out: dict[str, Any] = {}
    if not cfg.is_file():
        return out
    for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def _official_split(base: Path) -> dict[str, str]:
    folder = base.parent / "database_split"
    out: dict[str, str] = {}
    for split in ("training", "validation", "testing"):
        f = folder / f"subgroup_{split}.txt"
        if f.is_file():
            for line in f.read_text(encoding="utf-8").split():
                out[line.strip()] = split
    return out


# ---- layout ---------------------------------------------------------------------------------------------------
def _layout(root: Path) -> tuple[Path, str]:
    """The folder holding ``patientXXXX/`` and the file extension of its frames."""
    nifti = first_dir(root, ("database_nifti", "CAMUS_public/database_nifti"))
    if nifti is not None:
        return nifti, ".nii.gz"
    mhd = first_dir(root, ("training", "CAMUS_public/training"))
    if mhd is not None:
        return mhd, ".mhd"
    raise DataError(f"CAMUS: neither {root}/database_nifti nor {root}/training found",
                    fix="unpack CAMUS_public into <data-root>/camus/ (database_nifti/patientXXXX/...)")


def scan(root: Path) -> Scan:
    """One case per patient, view and phase: ``patientXXXX_<2CH|4CH>_<ED|ES>`` with its ``_gt`` file."""
    base, ext = _layout(root)
    official = _official_split(base) if ext == ".nii.gz" else {}
    out = Scan()
    for pdir in sorted(p for p in base.iterdir() if p.is_dir() and _PATIENT.match(p.name)):
        patient = pdir.name
        for view in VIEWS:
            info = _info(pdir / f"Info_{view}.cfg")
            for phase in PHASES:
                cid = f"{patient}_{view}_{phase}"
                img, gt = pdir / f"{cid}{ext}", pdir / f"{cid}_gt{ext}"
                if not img.is_file() and not gt.is_file():
                    out.problems.append(Problem("missing_file", str(img), f"{cid}: neither image nor label present"))
                    continue
                if not gt.is_file():
                    out.problems.append(Problem("orphan_image", str(img), "no _gt label map for this frame"))
                    continue
                if not img.is_file():
                    out.problems.append(Problem("orphan_mask", str(gt), "no image for this label map"))
                    continue
                meta: dict[str, Any] = {"view": view, "phase": phase}
                for key, name in (("ImageQuality", "image_quality"), ("EF", "ef"), ("Sex", "sex"), ("Age", "age")):
                    if key in info:
                        meta[name] = info[key]
                if patient in official:
                    meta["split"] = official[patient]
                try:
                    meta["spacing_mm"] = _spacing(img)
                except DataError as exc:
                    out.problems.append(Problem("unreadable", str(img), str(exc)))
                    continue
                out.cases.append(Case(id=cid, image=img, masks=(gt,), group=patient, meta=meta))
    return out


def _spacing(path: Path) -> tuple[float, float]:
    if path.suffix.lower() == ".mhd":
        h = _mhd_header(path)
        try:
            sp = [float(v) for v in h.get("ElementSpacing", "1 1").split()]
        except ValueError:
            raise DataError(f"{path}: malformed ElementSpacing", fix="restore the file from the release") from None
        return (sp[1] if len(sp) > 1 else sp[0], sp[0])
    try:
        import nibabel as nib
    except ImportError:
        raise DataError("reading CAMUS NIfTI files needs nibabel", fix="pip install nibabel") from None
    try:
        zooms = nib.load(str(path)).header.get_zooms()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise DataError(f"{path}: cannot read NIfTI header ({exc})", fix="replace it with the original") from None
    return (float(zooms[1]) if len(zooms) > 1 else float(zooms[0]), float(zooms[0]))


@register_dataset(CARD, read_mask=read_mask, read_image=read_image)
def find_cases(root: Path) -> list[Case]:
    return scan(root).cases_or_raise("camus")
