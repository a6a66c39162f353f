"""Downloads over real HTTP from a local server (SUSL_MIRROR_URL), checksums, the HAR zip."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from susl_cli.cli import app
from susl_cli.data.checksums import file_sha256
from susl_cli.data.download import download_file, extract_har_zip
from susl_cli.data.sources import HAR_ZIP_NAME, IDX_FILES, load_dataset
from susl_cli.errors import DataError
from tests.data_helpers import assert_one_line_error, serve_folder, write_har_folder

HAR = "UCI HAR Dataset"
LABEL_FILES = (f"{HAR}/train/y_train.txt", f"{HAR}/test/y_test.txt")


@pytest.fixture
def mirror(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out like the shared datasets, holding copies of the MNIST files; the
    environment points at it and at an empty cache only (no SUSL_DATA_DIR)."""
    root = tmp_path / "mirror"
    shutil.copytree(data_dir / "mnist", root / "mnist")
    monkeypatch.delenv("SUSL_DATA_DIR", raising=False)
    monkeypatch.setenv("SUSL_CACHE_DIR", str(tmp_path / "cache"))
    return root


def test_download_mnist_into_cache(mirror: Path, tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[str, int, int | None]] = []
    with serve_folder(mirror) as url:
        monkeypatch.setenv("SUSL_MIRROR_URL", url + "/")
        data = load_dataset("mnist", download=True, progress=lambda *a: seen.append(a))
    assert data.x_train.shape == (60000, 28, 28)
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(IDX_FILES)  # no temporaries left
    assert {name for name, _, _ in seen} == set(IDX_FILES)
    assert all(total is not None and done <= total for _, done, total in seen)
    # Found in the cache from now on, with no server and no --download.
    monkeypatch.delenv("SUSL_MIRROR_URL")
    assert load_dataset("mnist").source_checksum == data.source_checksum


def test_checksum_mismatch_deletes_the_download(mirror: Path, tmp_path: Path, runner,
                                                monkeypatch) -> None:
    bad = mirror / "mnist" / "train-labels-idx1-ubyte.gz"
    content = bytearray(bad.read_bytes())
    content[100] ^= 0xFF
    bad.chmod(0o644)
    bad.write_bytes(bytes(content))
    out = tmp_path / "out.h5"
    with serve_folder(mirror) as url:
        monkeypatch.setenv("SUSL_MIRROR_URL", url)
        result = runner.invoke(app, ["mask", "-d", "mnist", "-l", "0-4", "--download",
                                     "-o", str(out)])
    assert_one_line_error(result, absent=out, contains="train-labels-idx1-ubyte.gz")
    assert "sha256" in result.stderr and "deleted" in result.stderr
    cache = tmp_path / "cache" / "mnist"
    assert not (cache / "train-labels-idx1-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary left


def test_missing_file_on_server(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "empty").mkdir()
    with serve_folder(tmp_path / "empty") as url:
        with pytest.raises(DataError, match="HTTP 404"):
            download_file(f"{url}/nothing.gz", tmp_path / "dl" / "nothing.gz")
    assert list((tmp_path / "dl").iterdir()) == []


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="could not download"):
        download_file("http://127.0.0.1:9/x.gz", tmp_path / "x.gz")  # port 9: discard, closed


def test_har_npz_from_mirror(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    monkeypatch.delenv("SUSL_DATA_DIR", raising=False)
    with serve_folder(data_dir) as url:
        monkeypatch.setenv("SUSL_MIRROR_URL", url)
        data = load_dataset("har", data_dir=tmp_path / "dl", download=True)
    assert data.x_train.shape == (7352, 9, 128)
    assert (tmp_path / "dl" / "uci-har" / "uci-har-inertial.npz").is_file()


# --- the official HAR zip --------------------------------------------------------------------


def _zip_folder(folder_root: Path, zip_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted((folder_root / HAR).rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder_root).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return zip_path


def _nested_zip(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Like the current UCI download: an outer zip holding `UCI HAR Dataset.zip`."""
    src = write_har_folder(tmp_path / "src", n_train=12, n_test=6, features=True) / "uci-har"
    inner = _zip_folder(src, tmp_path / f"{HAR}.zip", {f"__MACOSX/{HAR}/._x": b"junk"})
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, f"{HAR}.zip")
        zf.writestr(f"{HAR}.names", "names")
    return outer, {rel: file_sha256(src / rel) for rel in LABEL_FILES}


def test_extract_nested_har_zip_then_load(tmp_path: Path) -> None:
    outer, expected = _nested_zip(tmp_path)
    dest = tmp_path / "data" / "uci-har"
    extract_har_zip(outer, dest, expected)
    assert not (dest / "__MACOSX").exists()
    assert sorted(p.name for p in dest.iterdir()) == [HAR]  # staging folder removed
    assert load_dataset("har", data_dir=tmp_path / "data").x_train.shape == (12, 9, 128)
    assert load_dataset("har-features", data_dir=tmp_path / "data").x_test.shape == (6, 561)


def test_extract_flat_har_zip(tmp_path: Path) -> None:
    src = write_har_folder(tmp_path / "src", n_train=6, n_test=6) / "uci-har"
    flat = _zip_folder(src, tmp_path / "flat.zip")
    extract_har_zip(flat, tmp_path / "out", {})
    assert (tmp_path / "out" / HAR / "train" / "y_train.txt").is_file()


def test_har_zip_with_wrong_labels_is_rejected_and_nothing_kept(tmp_path: Path) -> None:
    outer, expected = _nested_zip(tmp_path)
    wrong = {rel: "0" * 64 for rel in expected}
    with pytest.raises(DataError, match="not the official UCI HAR release"):
        extract_har_zip(outer, tmp_path / "dest", wrong)
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize(("content", "message"),
                         [(None, "unsafe path"), (b"not a zip", "not a valid UCI HAR zip")])
def test_har_zip_unsafe_or_corrupt(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "evil.zip"
    if content is None:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{HAR}/../../evil.txt", "x")
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        extract_har_zip(path, tmp_path / "dest", {})
    assert not (tmp_path / "evil.txt").exists()


def test_har_features_download_verifies_labels(tmp_path: Path, monkeypatch) -> None:
    """A zip from the mirror whose label files are not the official ones: error, zip deleted."""
    outer, _ = _nested_zip(tmp_path)
    served = tmp_path / "served" / "uci-har"
    served.mkdir(parents=True)
    shutil.copy(outer, served / HAR_ZIP_NAME)
    monkeypatch.delenv("SUSL_DATA_DIR", raising=False)
    with serve_folder(tmp_path / "served") as url:
        monkeypatch.setenv("SUSL_MIRROR_URL", url)
        with pytest.raises(DataError, match="not the official UCI HAR release"):
            load_dataset("har-features", data_dir=tmp_path / "dl", download=True)
    assert list((tmp_path / "dl" / "uci-har").iterdir()) == []
    assert np.all([not p.name.endswith(".zip") for p in (tmp_path / "dl").rglob("*")])
