"""Feed every file-reading command damaged and hostile files; each must fail cleanly.

For every variant and every command that reads it: one `error: ...` line on stderr and a
non-zero exit (never a traceback, never the "internal error" exit), the input file's bytes
unchanged, no output file left behind, and no code run (the pickle payloads would create a
marker file if anything unpickled them).

susl's own files (masks, checkpoints) are sealed with a SHA-256 of their content, so any
truncation or bit flip must be refused. A user's data files carry no such seal: a flip inside
an .npz is caught by the zip CRC or leaves the arrays untouched (then the mask made from it
must equal the intact file's); a flip in raw CSV text or HDF5 data can change a value without
any way to notice, so there only the clean-outcome contract is checked.

$SUSL_DAMAGE_FLIPS (default 10) sets how many bit flips each file gets.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from susl_cli.storage.h5 import reseal_file
from susl_cli.storage.masked import read_masked_dataset

from .reliability_helpers import (
    PNG_BYTES,
    bit_flips,
    check_clean_outcome,
    commands,
    invoke,
    object_array_npz,
    pickle_payload,
    sha256,
    torch_checkpoint,
    truncations,
)

FLIPS = int(os.environ.get("SUSL_DAMAGE_FLIPS", "10"))
COMMANDS = commands()
CPU = ["--device", "cpu"]


@dataclass
class Bench:
    """Where a damaged file is tried: intact companions, an output folder, the marker."""

    mask: Path  # intact mask (read-only for the tests)
    run: Path  # intact checkpoint trained on it
    folder: Path  # damaged files and outputs go here
    marker: Path  # must never exist


def test_pickle_payload_is_live(tmp_path: Path):
    """Control: the payload used below really does run code when unpickled."""
    marker = tmp_path / "control-marker"
    pickle.loads(pickle_payload(marker)).close()  # the payload returns the file it opened
    assert marker.exists()


@pytest.fixture
def bench(image_run: tuple[Path, Path], tmp_path: Path) -> Bench:
    mask, run = image_run
    folder = tmp_path / "damaged"
    folder.mkdir()
    return Bench(mask, run, folder, tmp_path / "MARKER-code-ran")


# --- the commands that read each kind of file ----------------------------------------------------

def mask_readers(f: Path, b: Bench) -> list[list]:
    out = b.folder / "out"
    cmds = [["info", f], ["info", f, "--json"],
            ["train", f, "--out", out / "run.h5", "--epochs", 1, "--hidden-units", 8,
             "--extra-components", 2, "--quiet", *CPU],
            ["evaluate", b.run, "--data", f, *CPU]]
    if "sample" in COMMANDS:
        cmds.append(["sample", b.run, "--data", f, "--out", out / "s.csv", *CPU])
    if "predict" in COMMANDS:
        cmds.append(["predict", b.run, f, "--out", out / "p.csv", *CPU])
    return cmds


def checkpoint_readers(f: Path, b: Bench) -> list[list]:
    out = b.folder / "out"
    cmds = [["info", f], ["evaluate", f, *CPU], ["evaluate", f, "--json", *CPU],
            ["train", b.mask, "--out", f, "--resume", "--epochs", 4, "--quiet", *CPU]]
    if "sample" in COMMANDS:
        cmds.append(["sample", f, "--out", out / "s.csv", *CPU])
    if "predict" in COMMANDS:
        cmds.append(["predict", f, b.mask, "--out", out / "p.csv", *CPU])
    return cmds


def data_readers(f: Path, b: Bench) -> list[list]:
    out = b.folder / "out"
    cmds = [["mask", "-d", f, "-l", "0-1", "--out", out / "m.h5", "--quiet"]]
    if "predict" in COMMANDS:
        cmds.append(["predict", b.run, f, "--out", out / "p.csv", *CPU])
    return cmds


# --- trying variants -----------------------------------------------------------------------------

Variant = bytes | Callable[[Path], None]  # the bytes, or a function that writes the file


def try_variants(variants: dict[str, Variant], suffix: str, readers, b: Bench, figures,
                 strict: Callable[[str, list], bool], same_as_intact=None) -> None:
    """Run every reader on every variant; collect all contract breaches, then fail once.

    `strict(name, args)`: must this command refuse this variant (else success is allowed)?
    """
    failures = []
    (b.folder / "out").mkdir(exist_ok=True)
    for name, variant in variants.items():
        path = b.folder / f"{name}{suffix}"
        if isinstance(variant, bytes):
            path.write_bytes(variant)
        else:
            variant(path)
        figures.add("damaged_files")
        figures.add("pickle_payloads", int("pickle" in name or "torch" in name))
        digest = sha256(path)
        for args in readers(path, b):
            figures.add("damaged_invocations")
            result = invoke(args)
            try:
                outcome = check_clean_outcome(result, allow_success=not strict(name, args))
                assert not b.marker.exists(), "the pickle payload ran"
                assert sha256(path) == digest, "the input file changed"
                if outcome == "ok" and same_as_intact is not None:
                    same_as_intact(args)
                    figures.add("identical_despite_damage")
                elif outcome == "error":
                    assert not any((b.folder / "out").iterdir()), "output left behind"
            except AssertionError as err:
                failures.append(f"{name} | susl {' '.join(map(str, args))}: {err}")
            finally:
                shutil.rmtree(b.folder / "out")
                (b.folder / "out").mkdir()
    assert not failures, f"{len(failures)} breaches:\n" + "\n\n".join(failures)


def common_garbage(b: Bench) -> dict[str, Variant]:
    return {
        "png-renamed": PNG_BYTES,
        "text": b"this is not a data file\n",
        "zeros": bytes(4096),
        "pickle": pickle_payload(b.marker),
        "torch-checkpoint": lambda p: torch_checkpoint(p, b.marker),
        "npz-with-pickled-objects": lambda p: shutil.move(
            object_array_npz(p.with_suffix(".tmp.npz"), b.marker), p),
    }


def hdf5_of_another_program(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_group("instrument").attrs["vendor"] = "ACME"
        f["instrument/readings"] = np.arange(12.0).reshape(3, 4)


def edited(source: Path, edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    """A copy of a susl file edited with h5py and re-sealed: hostile but checksum-valid."""
    def make(path: Path) -> None:
        shutil.copy2(source, path)
        with h5py.File(path, "a") as f:
            edit(f)
        reseal_file(path)
    return make


def replace(f: h5py.File, name: str, data) -> None:
    del f[name]
    f[name] = data


def opaque_pickle(marker: Path) -> np.void:
    return np.void(pickle_payload(marker))


# --- susl's own files ----------------------------------------------------------------------------

# Checksum-valid files whose values (not layout) are wrong: `susl info` describes a file from
# its metadata without reading the arrays, so it may succeed on these; every command that
# uses the data must refuse them. `info` also describes a susl file of the other kind, and
# only `--resume` reads the optimizer state.
INFO_ONLY = {"info"}
MAY_SUCCEED = {
    **dict.fromkeys(["nan-inputs", "inf-test-inputs", "labels-out-of-range",
                     "checkpoint-not-mask", "mask-not-checkpoint", "nan-weights",
                     "wrong-shape-weights", "missing-weights", "pickle-as-weights",
                     "meta-unknown-model", "meta-model-of-10^14-weights",
                     "meta-hidden-units-beyond-int64", "transform-missing"], INFO_ONLY),
    "optimizer-state-garbled": {"info", "evaluate", "sample", "predict"},
    # `predict` reads only a data file's inputs (x), never its labels or test split.
    # (a label such as 2**40 or "cat" is a class name, not damage: tests/data/test_labels.py)
    **dict.fromkeys(["fewer-labels-than-rows", "labels-2d", "fractional-labels",
                     "wrong-length-labels", "x-test-other-shape"], {"predict"}),
}


def refused_unless_described(name: str, args: list) -> bool:
    return args[0] not in MAY_SUCCEED.get(name, set())

@pytest.mark.found_bug("one flipped bit in a mask file could crash `susl info` with SIGSEGV "
                       "inside HDF5, silently change its metadata, or end in 'internal error'")
def test_damaged_and_hostile_mask_files(bench: Bench, figures):
    b, intact = bench, bench.mask.read_bytes()
    variants: dict[str, Variant] = {**truncations(intact), **bit_flips(intact, FLIPS, seed=1),
                                    **common_garbage(b)}
    variants.update({
        "hdf5-of-another-program": hdf5_of_another_program,
        "checkpoint-not-mask": b.run.read_bytes(),
        "nan-inputs": edited(b.mask, lambda f: replace(
            f, "train/x", np.full(f["train/x"].shape, np.nan, np.float32))),
        "inf-test-inputs": edited(b.mask, lambda f: replace(
            f, "test/x", np.full(f["test/x"].shape, np.inf, np.float32))),
        "wrong-shape-test-inputs": edited(b.mask, lambda f: replace(
            f, "test/x", np.zeros((5, 7), np.float32))),
        "wrong-shape-inputs-1d": edited(b.mask, lambda f: replace(
            f, "train/x", np.zeros(len(f["train/x"]), np.float32))),
        "labels-out-of-range": edited(b.mask, lambda f: replace(
            f, "train/y_observed", np.full(len(f["train/x"]), 9, np.int64))),
        "pickle-in-metadata-attribute": edited(
            b.mask, lambda f: f.attrs.__setitem__("metadata", opaque_pickle(b.marker))),
        "pickle-as-inputs": edited(b.mask, lambda f: replace(
            f, "train/x", np.frombuffer(pickle_payload(b.marker), np.uint8))),
        "metadata-not-json": edited(b.mask, lambda f: f.attrs.__setitem__("metadata", "{oops")),
        "metadata-wrong-types": edited(b.mask, lambda f: f.attrs.__setitem__(
            "metadata", json.dumps({"labelled_classes": "all", "seed": []}))),
        "future-format-version": edited(
            b.mask, lambda f: f.attrs.__setitem__("susl_format_version", 99)),
        "declares-terabytes": edited(b.mask, lambda f: (
            f.__delitem__("train/x"),
            f["train"].create_dataset("x", shape=(10**8, 10**4), dtype="f4", chunks=(1, 10**4),
                                      compression="gzip"))),
    })
    try_variants(variants, ".h5", mask_readers, b, figures, strict=refused_unless_described)


@pytest.mark.found_bug("a checkpoint with NaN weights was scored silently: `susl evaluate` "
                       "printed metrics computed from NaN probabilities")
@pytest.mark.found_bug("a checkpoint with a non-numeric epoch ended in 'internal error', and "
                       "a garbled optimizer state was resumed without complaint")
def test_damaged_and_hostile_checkpoints(bench: Bench, figures):
    b, intact = bench, bench.run.read_bytes()

    def set_meta(change: Callable[[dict], None]) -> Callable[[h5py.File], None]:
        def edit(f: h5py.File) -> None:
            meta = json.loads(f.attrs["meta"])
            change(meta)
            f.attrs["meta"] = json.dumps(meta)
        return edit

    first_weight = sorted(h5py.File(b.run, "r")["weights"].keys())[0]
    variants: dict[str, Variant] = {**truncations(intact), **bit_flips(intact, FLIPS, seed=2),
                                    **common_garbage(b)}
    variants.update({
        "hdf5-of-another-program": hdf5_of_another_program,
        "mask-not-checkpoint": b.mask.read_bytes(),
        "nan-weights": edited(b.run, lambda f: replace(
            f, f"weights/{first_weight}", np.full(f[f"weights/{first_weight}"].shape, np.nan,
                                                  np.float32))),
        "wrong-shape-weights": edited(b.run, lambda f: replace(
            f, f"weights/{first_weight}", np.zeros((3, 3), np.float32))),
        "missing-weights": edited(b.run, lambda f: f.__delitem__(f"weights/{first_weight}")),
        "pickle-as-weights": edited(b.run, lambda f: replace(
            f, f"weights/{first_weight}", opaque_pickle(b.marker))),
        "pickle-in-meta-attribute": edited(
            b.run, lambda f: f.attrs.__setitem__("meta", opaque_pickle(b.marker))),
        "meta-is-a-list": edited(b.run, lambda f: f.attrs.__setitem__("meta", "[1, 2]")),
        "meta-without-model-config": edited(b.run, set_meta(lambda m: m.pop("model_config"))),
        "meta-epoch-not-a-number": edited(b.run, set_meta(lambda m: m.update(epoch="three"))),
        "meta-unknown-model": edited(b.run, set_meta(
            lambda m: m["model_config"].update(model="../../etc/passwd"))),
        "meta-model-of-10^14-weights": edited(b.run, set_meta(
            lambda m: m["model_config"].update(hidden_units=10**7))),
        "meta-hidden-units-beyond-int64": edited(b.run, set_meta(
            lambda m: m["model_config"].update(hidden_units=10**30))),
        "optimizer-state-garbled": edited(b.run, lambda f: [
            replace(f, f"optimizer/{k}", np.zeros(1, np.float32))
            for k in list(f["optimizer"].keys())]),
        "transform-missing": edited(b.run, lambda f: f.__delitem__("transform")),
    })
    try_variants(variants, ".h5", checkpoint_readers, b, figures,
                 strict=refused_unless_described)


# --- a user's data files -------------------------------------------------------------------------

def refused_unless(lenient: tuple[str, ...]) -> Callable[[str, list], bool]:
    """Variants named with a `lenient` prefix may succeed: a user file has no checksum, and a
    flip in its data (or a cut at a row boundary) can leave a valid file."""
    return lambda name, args: not name.startswith(lenient) and refused_unless_described(
        name, args)


def image_data(n_per_class: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """6x6 'images' in [0, 1] like the tiny run's, so `predict` accepts the intact files."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n_per_class)
    x = np.clip(rng.uniform(0.1, 0.9, (4, 36))[y] + rng.normal(0, 0.05, (len(y), 36)), 0, 1)
    x = x.reshape(len(y), 6, 6).astype(np.float32)
    return {"x": x, "y": y, "x_test": x[::5], "y_test": y[::5]}


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_declaring(shape: tuple[int, ...]) -> bytes:
    """A valid zip whose x.npy header claims `shape` but holds almost no data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(64))
        archive.writestr("y.npy", npz_member(np.arange(4)))
    return buffer.getvalue()


def npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def mask_arrays_equal(reference: Path) -> Callable[[list], None]:
    """For a damaged input that still succeeded: its mask must equal the intact file's."""
    def check(args: list) -> None:
        if args[0] != "mask":
            return
        out = Path(args[args.index("--out") + 1])
        a, b = read_masked_dataset(reference, with_true_labels=True), read_masked_dataset(
            out, with_true_labels=True)
        for name in ("x_train", "y_observed", "x_test", "y_test", "y_train_true"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), f"{name} differs"
    return check


def test_damaged_and_hostile_npz(bench: Bench, tmp_path: Path, figures):
    b, data = bench, image_data()
    intact = npz_bytes(**data)
    (tmp_path / "intact.npz").write_bytes(intact)
    reference = tmp_path / "intact-mask.h5"
    assert invoke(["mask", "-d", tmp_path / "intact.npz", "-l", "0-1", "--out", reference,
                   "--quiet"]).exit_code == 0
    x, y = data["x"], data["y"]
    variants: dict[str, Variant] = {**truncations(intact), **bit_flips(intact, FLIPS, seed=3),
                                    **common_garbage(b)}
    variants.update({
        "nan-inputs": npz_bytes(x=np.where(x > 0.5, np.nan, x), y=y),
        "inf-inputs": npz_bytes(x=np.where(x > 0.5, np.inf, x), y=y),
        "fewer-labels-than-rows": npz_bytes(x=x, y=y[:-3]),
        "labels-2d": npz_bytes(x=x, y=np.stack([y, y], 1)),
        "no-rows": npz_bytes(x=x[:0], y=y[:0]),
        "text-inputs": npz_bytes(x=np.array(["a", "b"]), y=np.arange(2)),
        "complex-inputs": npz_bytes(x=x.astype(np.complex64), y=y),
        "fractional-labels": npz_bytes(x=x, y=y + 0.5),
        "x-test-other-shape": npz_bytes(x=x, y=y, x_test=x[:4, :3], y_test=y[:4]),
        "declares-10^12-floats": npz_declaring((10**12,)),
        "declares-more-than-it-holds": npz_declaring((1000, 36)),
        "zip-without-arrays": npz_bytes(notes=np.arange(3)),
        "hdf5-renamed-npz": lambda p: shutil.copy2(b.mask, p),
    })
    try_variants(variants, ".npz", data_readers, b, figures,
                 strict=refused_unless(lenient=("bitflip",)),
                 same_as_intact=mask_arrays_equal(reference))


@pytest.mark.found_bug("a CSV cut short just after a comma silently lost its last label "
                       "(the empty cell read as 'unlabelled')")
def test_damaged_and_hostile_csv(bench: Bench, figures):
    b, data = bench, image_data()
    flat = data["x"].reshape(len(data["x"]), -1)
    header = ",".join([*(f"p{i}" for i in range(flat.shape[1])), "label"])
    rows = [",".join([*(f"{v:.4f}" for v in row), str(label)])
            for row, label in zip(flat, data["y"], strict=True)]
    intact = ("\n".join([header, *rows]) + "\n").encode()
    cut_in_last_row = intact[: intact.rindex(b",") + 1]  # "..., 0.1234," : the label is gone
    variants: dict[str, Variant] = {**truncations(intact), **bit_flips(intact, FLIPS, seed=4),
                                    **common_garbage(b)}
    variants.update({
        "cut-after-the-last-comma": cut_in_last_row,
        "cut-inside-a-row": intact[: len(intact) // 2 + 7],
        "nan-cell": intact.replace(b"0.", b"nan", 1),
        "no-label-column": intact.replace(b"label", b"target", 1),
        "only-a-header": (header + "\n").encode(),
        "binary-bytes": bytes(range(256)) * 8,
    })
    try_variants(variants, ".csv", data_readers, b, figures,
                 strict=refused_unless(lenient=("bitflip", "truncated")))


@pytest.mark.found_bug("a flipped bit in a user .h5 could hang `susl mask` (a label of 2^40 "
                       "meant 10^12 class names) or end in 'internal error' (h5py errors uncaught)")
def test_damaged_and_hostile_user_hdf5(bench: Bench, figures):
    b, data = bench, image_data()

    def user_h5(**arrays) -> Callable[[Path], None]:
        def make(path: Path) -> None:
            with h5py.File(path, "w") as f:
                for name, value in arrays.items():
                    f[name] = value
        return make

    intact_path = b.folder / "intact-source.h5"
    user_h5(**data)(intact_path)
    intact = intact_path.read_bytes()
    intact_path.unlink()
    x, y = data["x"], data["y"]

    def x_is_a_group(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.create_group("x")
            f["y"] = y

    def sparse_giant(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.create_dataset("x", shape=(10**7, 10**5), dtype="f4", chunks=(1, 10**5))
            f["y"] = y

    def with_attribute_pickle(path: Path) -> None:
        user_h5(x=x, y=y)(path)
        with h5py.File(path, "a") as f:
            f.attrs["susl_kind"] = opaque_pickle(b.marker)
            f["x"].attrs["payload"] = opaque_pickle(b.marker)

    variants: dict[str, Variant] = {**truncations(intact), **bit_flips(intact, FLIPS, seed=5),
                                    **common_garbage(b)}
    variants.update({
        "hdf5-of-another-program": hdf5_of_another_program,
        "x-is-a-group": x_is_a_group,
        "nan-inputs": user_h5(x=np.full_like(x, np.nan), y=y),
        "wrong-length-labels": user_h5(x=x, y=y[:5]),
        "pickle-as-inputs": user_h5(x=opaque_pickle(b.marker), y=y),
        "pickle-in-attributes": with_attribute_pickle,
        "vlen-strings": user_h5(x=np.array(["a", "b"], dtype=h5py.string_dtype()), y=y[:2]),
        "declares-4-TB": sparse_giant,
        "susl-checkpoint-as-data": b.run.read_bytes(),
    })
    try_variants(variants, ".h5", data_readers, b, figures,
                 strict=refused_unless(lenient=("bitflip", "truncated")))
