"""Downloading dataset files with urllib, through susl's one atomic writer (checksum, then rename).

The library prints nothing: callers pass a progress callback (the CLI draws a rich bar).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from susl_cli.data.checksums import file_sha256
from susl_cli.errors import DataError
from susl_cli.storage.atomic import atomic_output, interrupt_pending, write_atomic

# (file description, bytes done, bytes total or None when the server does not say)
ProgressCallback = Callable[[str, int, int | None], None]

MIRROR_ENV = "SUSL_MIRROR_URL"
HAR_FOLDER = "UCI HAR Dataset"
_CHUNK = 1 << 16
_TIMEOUT_S = 60


def mirror_url() -> str | None:
    """The base URL from $SUSL_MIRROR_URL (a folder laid out like the offline datasets), if set."""
    url = os.environ.get(MIRROR_ENV, "").strip()
    return url.rstrip("/") if url else None


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch `url` to `dest` through susl's one atomic writer: `dest` appears only once the
    download is complete and (when `sha256` is given) verified, so it is never half-written;
    on a checksum mismatch the download is deleted and a DataError raised."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest, overwrite=True) as out:
        digest = hashlib.sha256()
        done, total = _copy_response(url, out, dest.name, progress, digest)
        if total is not None and done != total:
            raise DataError(
                f"download of {url} stopped after {done} of {total} bytes: run the command again"
            )
        if sha256 is not None and digest.hexdigest() != sha256:
            raise DataError(
                f"downloaded {dest.name} from {url} has sha256 {digest.hexdigest()[:12]}..., "
                f"expected {sha256[:12]}... (corrupt or altered copy; it was deleted): "
                "try again or use another mirror (SUSL_MIRROR_URL)"
            )
    return dest


def _copy_response(
    url: str, out: BinaryIO, name: str, progress: ProgressCallback | None, digest: Any
) -> tuple[int, int | None]:
    """Stream the body of `url` into `out` (and `digest`); network failures become one
    DataError sentence. Ctrl-C stops the download at the next chunk (the writer holds it back
    so that no write stops half-way; a download may take minutes)."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:  # noqa: S310  http(s) only
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if interrupt_pending():
                    raise KeyboardInterrupt
                if progress is not None:
                    progress(name, done, total)
            return done, total
    except urllib.error.HTTPError as err:
        raise DataError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", None) or err
        raise DataError(
            f"could not download {url} ({reason}): check the network, or put the files in a "
            "folder and pass --data-dir"
        ) from None
    except ValueError as err:  # urllib rejects malformed URLs (e.g. a bad SUSL_MIRROR_URL)
        raise DataError(f"cannot download from {url!r}: {err}") from None


def extract_har_zip(zip_path: Path, dest_dir: Path, expected_sha256: Mapping[str, str]) -> Path:
    """Extract the `UCI HAR Dataset/` folder from the UCI download into `dest_dir`.

    The current UCI archive is a zip holding an inner `UCI HAR Dataset.zip` (plus a .names file);
    older mirrors serve the folder directly. Both are handled. The zip's own checksum is not
    published, so after extraction we verify the files whose sha256 we do know (the label files,
    `expected_sha256`: path relative to `dest_dir` -> sha256) before moving anything into place.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".har-extract-", dir=dest_dir))
    try:
        try:
            _extract_outer(zip_path, staging)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise DataError(
                f"{zip_path} is not a valid UCI HAR zip ({err}): delete it and download again"
            ) from None
        if not (staging / HAR_FOLDER).is_dir():
            raise DataError(f"{zip_path} holds no {HAR_FOLDER!r} folder: not the UCI HAR zip")
        for rel, sha in expected_sha256.items():
            _verify_extracted(staging / rel, rel, sha, zip_path)
        _move_tree(staging, dest_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest_dir / HAR_FOLDER


def _extract_outer(zip_path: Path, staging: Path) -> None:
    with zipfile.ZipFile(zip_path) as outer:
        inner = [n for n in outer.namelist()
                 if n.endswith(f"{HAR_FOLDER}.zip") and not n.startswith("__MACOSX")]
        if not inner:
            _extract_folder(outer, staging)
            return
        # Nested zips need a seekable file: copy the inner one out rather than read it in place.
        inner_tmp = staging / ".inner.zip"
        with outer.open(inner[0]) as src, open(inner_tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        with zipfile.ZipFile(inner_tmp) as zf:
            _extract_folder(zf, staging)
        inner_tmp.unlink()


def _extract_folder(zf: zipfile.ZipFile, staging: Path) -> None:
    """Extract only members under `UCI HAR Dataset/`, refusing unsafe paths (zip slip)."""
    for info in zf.infolist():
        name = PurePosixPath(info.filename)
        if info.is_dir() or not name.parts or name.parts[0] != HAR_FOLDER:
            continue  # skips __MACOSX/ metadata and anything else
        if name.is_absolute() or ".." in name.parts:
            raise DataError(f"refusing unsafe path {info.filename!r} inside the HAR zip")
        target = staging.joinpath(*name.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def _verify_extracted(path: Path, rel: str, sha: str, zip_path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{zip_path} lacks {rel!r}: not the official UCI HAR zip")
    got = file_sha256(path)
    if got != sha:
        raise DataError(
            f"{rel!r} extracted from {zip_path} has sha256 {got[:12]}..., expected "
            f"{sha[:12]}...: the zip is not the official UCI HAR release; delete it"
        )


def _move_tree(staging: Path, dest_dir: Path) -> None:
    """Put the verified files from the staging folder in place, each through susl's one
    atomic writer (a copy: the writer's temporary sits beside its target and is fsynced)."""
    for src in sorted((staging / HAR_FOLDER).rglob("*")):
        if src.is_file():
            target = dest_dir / src.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as fh:
                write_atomic(target, lambda out, fh=fh: shutil.copyfileobj(fh, out, _CHUNK),
                             overwrite=True)
