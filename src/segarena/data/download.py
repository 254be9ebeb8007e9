"""Downloads with checksums, resume and a cache; archive extraction that cannot escape its target folder.

Written on the standard library (urllib, zipfile, tarfile) on purpose: dataset archives need nothing more, and
the safety checks on archive members must be ours anyway.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from .._errors import DataError
from .._paths import is_offline
from .._io import write_text
from .card import DatasetCard


def cache_dir() -> Path:
    """``$SEGARENA_CACHE`` or ``~/.cache/segarena``."""
    return Path(os.environ.get("SEGARENA_CACHE") or Path.home() / ".cache" / "segarena").expanduser()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, sha256: str | None = None, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resuming a ``.part`` file over HTTP) and verify its SHA-256.

    Without a published checksum the first verified download's hash is stored beside the file
    (``dest.sha256``) and later copies are checked against it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recorded = dest.with_name(dest.name + ".sha256")
    expected = sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
    if dest.is_file():
        if expected is None or sha256_file(dest) == expected:
            return dest
        dest.unlink()
    if is_offline():
        raise DataError(f"{dest.name} is not in the cache and downloads are off (SEGARENA_OFFLINE/HF_HUB_OFFLINE)",
                        fix=f"download {url} yourself and put it at {dest}")
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "segarena"})
    if start and url.startswith("http"):
        req.add_header("Range", f"bytes={start}-")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resumed = getattr(resp, "status", 200) == 206
            with open(part, "ab" if resumed else "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"download of {url} failed ({reason})",
                        fix=f"check the network, or download it yourself and put it at {dest}") from None
    digest = sha256_file(part)
    if expected and digest != expected:
        part.unlink()
        raise DataError(f"{url}: checksum mismatch (got {digest[:12]}…, expected {expected[:12]}…)",
                        fix="the download was corrupted or the file changed upstream; try again")
    os.replace(part, dest)
    if not sha256:
        write_text(recorded, digest + "\n")
    return dest


def _inside(target: Path, member: str) -> bool:
    resolved = (target / member).resolve()  # resolves "..", absolute names and existing symlinks
    return resolved == target or target in resolved.parents


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive into ``target``, refusing members (or links) that point outside it."""
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not _inside(target, info.filename):
                    raise DataError(f"{archive}: member {info.filename!r} would be written outside {target}",
                                    fix="the archive is unsafe; get it from the official source")
                # symlinks in zips have the S_IFLNK bit in the high external attributes
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DataError(f"{archive}: member {info.filename!r} is a symbolic link",
                                    fix="the archive is unsafe; get it from the official source")
            zf.extractall(target)
        return
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError:
        raise DataError(f"{archive}: not a zip or tar archive", fix="re-download it") from None
    with tf:
        for m in tf.getmembers():
            if not _inside(target, m.name):
                raise DataError(f"{archive}: member {m.name!r} would be written outside {target}",
                                fix="the archive is unsafe; get it from the official source")
            if m.issym() or m.islnk():
                base = (target / m.name).parent if m.issym() else target
                dest = (base / m.linkname).resolve()
                if not (dest == target or target in dest.parents):
                    raise DataError(f"{archive}: link {m.name!r} -> {m.linkname!r} points outside {target}",
                                    fix="the archive is unsafe; get it from the official source")
            if m.isdev():
                raise DataError(f"{archive}: member {m.name!r} is a device file", fix="the archive is unsafe")
        try:
            tf.extractall(target, filter="data")  # also catches link chains the member check above cannot see
        except tarfile.FilterError as exc:
            raise DataError(f"{archive}: {exc}", fix="the archive is unsafe; get it from the official source") from None
        except (tarfile.TarError, EOFError) as exc:
            raise DataError(f"{archive}: damaged archive ({exc})", fix="delete it and download again") from None


def download_dataset(card: DatasetCard, data_root: Path) -> Path:
    """Fetch and unpack a public dataset into ``data_root/<card.folder>``; return that folder."""
    if card.download is None:
        raise DataError(f"dataset {card.name!r} is not at {data_root / card.folder} and cannot be downloaded "
                        f"automatically", fix=card.how_to_get or f"get it from {card.url} and unpack it there")
    dl = card.download
    archive = fetch(dl.url, cache_dir() / "downloads" / dl.filename, dl.sha256)
    final = data_root / card.folder
    staging = data_root / f".{card.folder}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(archive, staging)
    except BaseException:  # a refused or damaged archive leaves no half-extracted staging folder behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    src = staging / dl.archive_root if dl.archive_root else staging
    if not src.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{archive}: expected folder {dl.archive_root!r} inside the archive",
                        fix="delete the cached archive and download again")
    if final.exists():
        shutil.rmtree(final)
    os.replace(src, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final
