"""Datasets: the built-ins (MNIST, Fashion-MNIST, UCI HAR) and user files (.npz, .csv, .h5).

Library layer: no CLI imports, prints nothing. `load_dataset` is the one entry point; it finds
(or, when asked, downloads) the files, verifies their checksums and returns a `Dataset`.

Where files are looked for: `data_dir` when given; otherwise $SUSL_DATA_DIR (when set), then the
user cache ($SUSL_CACHE_DIR, else ~/.cache/susl). Each dataset has its own subfolder (mnist/,
fashion-mnist/, uci-har/), as in the offline datasets folder. Downloads go to `data_dir` when
given, else to the cache; $SUSL_MIRROR_URL replaces the public URLs by a mirror laid out like
that folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from susl_cli.data import formats
from susl_cli.data.checksums import KNOWN_SHA256, combined_sha256, file_sha256
from susl_cli.data.download import (
    HAR_FOLDER,
    ProgressCallback,
    download_file,
    extract_har_zip,
    mirror_url,
)
from susl_cli.data.user_files import read_user_arrays
from susl_cli.errors import DataError, UsageError

DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
HAR_NAMES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IDX_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
}
HAR_SUBDIR = "uci-har"
HAR_NPZ = "uci-har-inertial.npz"
HAR_ZIP_NAME = "human+activity+recognition+using+smartphones.zip"
HAR_ZIP_URL = f"https://archive.ics.uci.edu/static/public/240/{HAR_ZIP_NAME}"
BUILTIN_DATASETS = ("mnist", "fashion-mnist", "har", "har-features")
USER_SUFFIXES = (".npz", ".csv", ".h5", ".hdf5")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset as arrays. y uses -1 for points that have no label."""

    name: str
    x_train: np.ndarray            # (N, ...) float32: (N, 28, 28) in [0, 1], (N, 9, 128), (N, D)
    y_train: np.ndarray            # (N,) int64
    x_test: np.ndarray | None      # (M, ...) float32, None when a user file has no test set
    y_test: np.ndarray | None      # (M,) int64
    class_names: tuple[str, ...]   # index = class id
    input_kind: str                # "image": values in [0, 1] (Bernoulli); "real": Gaussian
    source_checksum: str           # sha256 identifying the source files

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def load_dataset(
    name_or_path: str,
    *,
    data_dir: Path | None = None,
    download: bool = False,
    label_column: str = "label",
    progress: ProgressCallback | None = None,
    unlabelled_token: str | None = None,
) -> Dataset:
    """Load a built-in dataset by name, or a user's .npz/.csv/.h5 file by path."""
    key = name_or_path.strip().lower()
    if key in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(key, data_dir, download, progress)
    if key == "har":
        return _load_har(data_dir, download, progress)
    if key == "har-features":
        return _load_har_features(data_dir, download, progress)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() in USER_SUFFIXES or path.exists():
        return load_user_file(path, label_column=label_column,
                              unlabelled_token=unlabelled_token)
    raise UsageError(
        f"unknown dataset {name_or_path!r}: choose one of {', '.join(BUILTIN_DATASETS)}, "
        "or give the path of a .npz, .csv or .h5 file"
    )


# --- where files live ------------------------------------------------------------------------

def cache_dir() -> Path:
    """The user cache folder: $SUSL_CACHE_DIR, else ~/.cache/susl."""
    env = os.environ.get("SUSL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "susl"


def search_dirs(data_dir: Path | None) -> list[Path]:
    """Folders searched, in order. An explicit data_dir is the only one searched."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get("SUSL_DATA_DIR")
    return ([Path(env).expanduser()] if env else []) + [cache_dir()]


def download_dir(data_dir: Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else cache_dir()


def _find(subdir: str, files: tuple[str, ...], data_dir: Path | None) -> Path | None:
    """The first searched folder whose `subdir` holds every one of `files`."""
    for root in search_dirs(data_dir):
        if all((root / subdir / f).is_file() for f in files):
            return root / subdir
    return None


def _missing(what: str, subdir: str, files: tuple[str, ...], data_dir: Path | None) -> DataError:
    where = ", ".join(str(r / subdir) for r in search_dirs(data_dir))
    shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
    return DataError(
        f"{what} files not found ({shown}; looked in {where}): pass --data-dir DIR (a folder "
        f"holding {subdir}/), set SUSL_DATA_DIR, or add --download to fetch them"
    )


def _verified_sha256(path: Path, expected: str) -> str:
    got = file_sha256(path)
    if got != expected:
        raise DataError(
            f"{path} ({path.stat().st_size} bytes) has sha256 {got[:12]}..., expected "
            f"{expected[:12]}...: the file is truncated or corrupt; delete it and rerun "
            "with --download"
        )
    return got


# --- MNIST and Fashion-MNIST -----------------------------------------------------------------

def _load_idx_dataset(
    name: str, data_dir: Path | None, download: bool, progress: ProgressCallback | None
) -> Dataset:
    known = KNOWN_SHA256[name]
    folder = _find(name, IDX_FILES, data_dir)
    if folder is None:
        if not download:
            raise _missing(name, name, IDX_FILES, data_dir)
        folder = download_dir(data_dir) / name
        base = f"{mirror_url()}/{name}" if mirror_url() else IDX_URLS[name]
        for file in IDX_FILES:
            target = folder / file
            if not (target.is_file() and file_sha256(target) == known[file]):
                download_file(f"{base}/{file}", target, sha256=known[file], progress=progress)
    hashes = [_verified_sha256(folder / f, known[f]) for f in IDX_FILES]
    x_train, y_train = formats.read_idx_pair(folder / IDX_FILES[0], folder / IDX_FILES[1], 10)
    x_test, y_test = formats.read_idx_pair(folder / IDX_FILES[2], folder / IDX_FILES[3], 10)
    return Dataset(
        name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        class_names=DIGIT_NAMES if name == "mnist" else FASHION_NAMES,
        input_kind="image", source_checksum=combined_sha256(hashes),
    )


# --- UCI HAR ---------------------------------------------------------------------------------

def _har_files(kind: str) -> tuple[str, ...]:
    """Paths (relative to uci-har/) of the official-layout files a HAR variant needs."""
    files = []
    for split in ("train", "test"):
        if kind == "inertial":
            files += [f"{HAR_FOLDER}/{split}/Inertial Signals/{c}_{split}.txt"
                      for c in formats.HAR_CHANNELS]
        else:
            files.append(f"{HAR_FOLDER}/{split}/X_{split}.txt")
        files.append(f"{HAR_FOLDER}/{split}/y_{split}.txt")
    return tuple(files)


def _load_har(data_dir: Path | None, download: bool, progress: ProgressCallback | None
              ) -> Dataset:
    """Raw inertial windows (N, 9, 128): the offline npz if present, else the official folder."""
    npz_folder = _find(HAR_SUBDIR, (HAR_NPZ,), data_dir)
    folder_files = _har_files("inertial")
    text_folder = None if npz_folder else _find(HAR_SUBDIR, folder_files, data_dir)
    if npz_folder is None and text_folder is None:
        if not download:
            raise _missing("UCI HAR", HAR_SUBDIR, (HAR_NPZ, *folder_files), data_dir)
        target = download_dir(data_dir) / HAR_SUBDIR
        if mirror_url():  # a mirror laid out like the offline folder serves the npz
            download_file(f"{mirror_url()}/{HAR_SUBDIR}/{HAR_NPZ}", target / HAR_NPZ,
                          sha256=KNOWN_SHA256[HAR_SUBDIR][HAR_NPZ], progress=progress)
            npz_folder = target
        else:
            text_folder = _download_har_zip(target, progress)
    if npz_folder is not None:
        path = npz_folder / HAR_NPZ
        checksum = _verified_sha256(path, KNOWN_SHA256[HAR_SUBDIR][HAR_NPZ])
        x_train, y_train, x_test, y_test = formats.read_har_npz(path)
    else:
        root = cast(Path, text_folder)  # found or downloaded above
        x_train, y_train = formats.read_har_folder(root / HAR_FOLDER, "train")
        x_test, y_test = formats.read_har_folder(root / HAR_FOLDER, "test")
        checksum = combined_sha256(file_sha256(root / f) for f in folder_files)
    return Dataset(
        name="har", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        class_names=HAR_NAMES, input_kind="real", source_checksum=checksum,
    )


def _load_har_features(
    data_dir: Path | None, download: bool, progress: ProgressCallback | None
) -> Dataset:
    """The 561 engineered features; only in the official download, not in the offline copy."""
    files = _har_files("features")
    folder = _find(HAR_SUBDIR, files, data_dir)
    if folder is None:
        if not download:
            where = ", ".join(str(r / HAR_SUBDIR) for r in search_dirs(data_dir))
            raise DataError(
                f"the 561 UCI HAR features ({HAR_FOLDER}/train/X_train.txt and test/X_test.txt) "
                f"are not in the offline copy (looked in {where}): add --download to fetch the "
                "official UCI zip, or use --dataset har (raw inertial windows)"
            )
        folder = _download_har_zip(download_dir(data_dir) / HAR_SUBDIR, progress)
    x_train, y_train = formats.read_har_features(folder / HAR_FOLDER, "train")
    x_test, y_test = formats.read_har_features(folder / HAR_FOLDER, "test")
    return Dataset(
        name="har-features", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        class_names=HAR_NAMES, input_kind="real",
        source_checksum=combined_sha256(file_sha256(folder / f) for f in files),
    )


def _download_har_zip(target: Path, progress: ProgressCallback | None) -> Path:
    """Fetch the official UCI HAR zip, extract its folder into `target`, delete the zip."""
    url = f"{mirror_url()}/{HAR_SUBDIR}/{HAR_ZIP_NAME}" if mirror_url() else HAR_ZIP_URL
    zip_path = download_file(url, target / HAR_ZIP_NAME, sha256=None, progress=progress)
    try:
        # The zip's checksum is not published; the label files inside it are verified instead.
        labels = {k: v for k, v in KNOWN_SHA256[HAR_SUBDIR].items() if k.startswith(HAR_FOLDER)}
        extract_har_zip(zip_path, target, labels)
    finally:
        zip_path.unlink(missing_ok=True)
    return target


# --- user files ------------------------------------------------------------------------------

def load_user_file(path: Path, label_column: str = "label",
                   unlabelled_token: str | None = None) -> Dataset:
    """A user's .npz (x, y[, x_test, y_test]), .csv (features + label column) or .h5 file.

    Labels are class names (words or whole numbers); an empty cell, NaN, -1 or
    `unlabelled_token` marks an unlabelled row. Every distinct label is one class.
    """
    path = Path(path)
    x_train, y_train, x_test, y_test, class_names = read_user_arrays(
        path, label_column, unlabelled_token)
    xs = [x for x in (x_train, x_test) if x is not None]
    in_unit = all(float(x.min()) >= 0.0 and float(x.max()) <= 1.0 for x in xs)
    return Dataset(
        name=path.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        class_names=class_names,
        # Values in [0, 1] suit a Bernoulli likelihood like the image datasets; others Gaussian.
        input_kind="image" if in_unit else "real",
        source_checksum=file_sha256(path),
    )
