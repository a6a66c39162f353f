"""SHA-256 helpers and the published checksums of the built-in datasets' files.

The values are those recorded in the offline datasets README (md5 there equals the torchvision
list, so these are the byte-identical upstream files).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20

# dataset subfolder -> file name (relative to that folder) -> sha256
KNOWN_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
    "uci-har": {
        "uci-har-inertial.npz": (
            "a3efbfdb3be136e1c062453e208ab25a4456b52b4b0df6ad7bbe8b9180009e27"
        ),
        # The official zip's own checksum is not known to us; these label files inside it are,
        # so they are what we verify after extracting a downloaded zip.
        "UCI HAR Dataset/train/y_train.txt": (
            "415b3357e2e2d5e70a45c781947c6bdd80e0410a579d862eedcd6bbce3c694ef"
        ),
        "UCI HAR Dataset/test/y_test.txt": (
            "2a94cb53ca46b956c1b2aebd4a09a72badd8a8e9ea9cdfe9f31b3306a08666bb"
        ),
    },
}


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in chunks (datasets and checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def combined_sha256(hashes: Iterable[str]) -> str:
    """One sha256 identifying a set of files: the hash of their hex hashes, in the given order."""
    return hashlib.sha256("\n".join(hashes).encode("ascii")).hexdigest()
