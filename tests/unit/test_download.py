"""Downloads (checksums, cache, offline mode) against local files, and archive extraction safety."""
from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from segarena import DataError, SegarenaError
from segarena.data import dataset_root
from segarena.data.download import download_dataset, fetch, safe_extract


def _kvasir_zip(path: Path) -> Path:
    from PIL import Image

    with zipfile.ZipFile(path, "w") as zf:
        for i in range(3):
            for sub in ("images", "masks"):
                buf = io.BytesIO()
                Image.new("RGB", (8, 8), (255, 255, 255) if sub == "masks" else (i, i, i)).save(buf, "JPEG")
                zf.writestr(f"Kvasir-SEG/{sub}/c{i}.jpg", buf.getvalue())
        zf.writestr("Kvasir-SEG/kavsir_bboxes.json", "{}")
    return path


def test_fetch_verifies_checksum_and_caches(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGARENA_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "file.bin"
    assert fetch(src.as_uri(), dest, digest).read_bytes() == src.read_bytes()
    src.unlink()  # now served from the cache
    assert fetch(src.as_uri(), dest, digest) == dest
    with pytest.raises(DataError, match="checksum mismatch"):
        other = tmp_path / "o.bin"
        other.write_bytes(b"x")
        fetch(other.as_uri(), tmp_path / "cache" / "o.bin", "0" * 64)
    assert not (tmp_path / "cache" / "o.bin").exists() and not (tmp_path / "cache" / "o.bin.part").exists()


def test_fetch_records_hash_on_first_use(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGARENA_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    dest = tmp_path / "c" / "a.bin"
    fetch(src.as_uri(), dest, None)
    assert (tmp_path / "c" / "a.bin.sha256").read_text().strip() == hashlib.sha256(b"abc").hexdigest()
    dest.write_bytes(b"tampered")  # a corrupted cached copy is fetched again
    assert fetch(src.as_uri(), dest, None).read_bytes() == b"abc"


def test_offline_says_where_to_put_the_file(tmp_path):
    with pytest.raises(DataError, match="downloads are off.*put it at"):
        fetch("https://example.invalid/x.zip", tmp_path / "x.zip")


def test_missing_dataset_offline_names_the_folder(tmp_path):
    with pytest.raises(DataError, match=r"dataset 'kvasir-seg' not found: no folder kvasir-seg/.*SEGARENA_DATA_ROOT"):
        dataset_root("kvasir-seg", tmp_path)


def test_download_dataset_end_to_end_from_local_archive(tmp_path, monkeypatch):
    """The real download path (fetch + safe extract + move into place), with the archive served from a file."""
    import dataclasses

    from segarena.data import DATASETS
    from segarena.data.card import Download

    monkeypatch.delenv("SEGARENA_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    archive = _kvasir_zip(tmp_path / "kvasir-seg.zip")
    card = dataclasses.replace(DATASETS.get("kvasir-seg").card, download=Download(
        url=archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest(), filename="kvasir-seg.zip",
        archive_root="Kvasir-SEG"))
    folder = download_dataset(card, tmp_path / "data")
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["c0.jpg", "c1.jpg", "c2.jpg"]
    assert (folder / "kavsir_bboxes.json").is_file()


def test_zip_path_traversal_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(SegarenaError, match="outside"):
        safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_zip_symlink_refused(tmp_path):
    bad = tmp_path / "link.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(SegarenaError, match="symbolic link"):
        safe_extract(bad, tmp_path / "out")


@pytest.mark.parametrize("kind", ["abs", "dotdot", "symlink"])
def test_tar_escapes_refused(tmp_path, kind):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tf:
        if kind == "symlink":
            info = tarfile.TarInfo("data/link")
            info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
            tf.addfile(info)
        else:
            info = tarfile.TarInfo("/tmp/abs.txt" if kind == "abs" else "../up.txt")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SegarenaError, match="outside"):
        safe_extract(bad, tmp_path / "out")


def test_safe_tar_extracts(tmp_path):
    ok = tmp_path / "ok.tar.gz"
    with tarfile.open(ok, "w:gz") as tf:
        info = tarfile.TarInfo("d/file.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    safe_extract(ok, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "file.txt").read_text() == "hi"


def test_datasets_download_command(tmp_path, monkeypatch, capsys):
    """`segarena datasets download` through the real path, the archive served from a local file."""
    import dataclasses

    from segarena.cli import main
    from segarena.data import DATASETS
    from segarena.data.card import Download

    monkeypatch.delenv("SEGARENA_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    archive = _kvasir_zip(tmp_path / "kvasir-seg.zip")
    adapter = DATASETS.get("kvasir-seg")
    card = dataclasses.replace(adapter.card, download=Download(url=archive.as_uri(), sha256=None,
                                                               filename="kvasir-seg.zip", archive_root="Kvasir-SEG"))
    monkeypatch.setitem(DATASETS._entries, "kvasir-seg", dataclasses.replace(adapter, card=card))
    assert main(["datasets", "download", "kvasir-seg", "--data-root", str(tmp_path / "data")]) == 0
    assert (tmp_path / "data" / "kvasir-seg" / "images" / "c0.jpg").is_file()
    # datasets that need registration: where to get them and where to put them
    assert main(["datasets", "download", "camus", "--data-root", str(tmp_path / "data")]) == 1
    out = capsys.readouterr().out
    assert "cannot be downloaded automatically" in out and str(tmp_path / "data") in out
