"""Property tests over the command-line options: exit 0, or one clean error line; nothing else.

Hypothesis generates class specs, fractions, counts, seeds, sizes, rates, choice words and
paths (spaces, unicode, missing folders, folders given as files, existing files). Every
invocation must either succeed (and then its output must be readable) or exit non-zero with
exactly one stderr line starting "error:" -- never a traceback, never the "internal error"
exit 70 (a bug caught by the last line of defence).

Budget: a few dozen examples per command in CI; SUSL_FUZZ_EXAMPLES=2000 runs that many per
command (and writes no example database into the checkout).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .reliability_helpers import (
    check_clean_error,
    check_clean_outcome,
    invoke,
    write_tiny_npz,
)

BUDGET = int(os.environ.get("SUSL_FUZZ_EXAMPLES", "0"))
_cases = itertools.count()


def fuzz_settings(ci_examples: int):
    return settings(max_examples=BUDGET or ci_examples, deadline=None, database=None,
                    derandomize=not BUDGET, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny data file, its mask and a one-epoch checkpoint, plus odd paths."""
    root = tmp_path_factory.mktemp("fuzz")
    data = write_tiny_npz(root / "data set é.npz")
    mask = root / "mask.h5"
    assert invoke(["mask", "-d", data, "-l", "0-1", "--out", mask, "--quiet"]).exit_code == 0
    run = root / "run.h5"
    result = invoke(["train", mask, "--out", run, "--epochs", 1, "--hidden-units", 8,
                     "--extra-components", 2, "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (root / "a folder").mkdir()
    (root / "existing.h5").write_bytes(b"not yours to overwrite")
    return {"root": root, "data": data, "mask": mask, "run": run}


def fresh_folder(bench: dict[str, Path]) -> Path:
    folder = bench["root"] / f"case-{next(_cases)}"
    folder.mkdir()
    return folder


def run_case(args: list, figures) -> str:
    result = invoke(args)
    outcome = check_clean_outcome(result)
    figures.add("fuzz_cases")
    figures.add("fuzz_successes", int(outcome == "ok"))
    return outcome


# --- strategies ----------------------------------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
                min_size=1, max_size=12)
# (no subnormals: torch switches on flush-to-zero, which hypothesis detects and refuses)
any_float = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr)
numbers_as_text = st.one_of(
    any_float,
    st.integers(-(10**25), 10**25).map(str),
    st.sampled_from(["", " ", "1e999", "-0", "0x10", "1_000", "½", "٣", "nan", "--"]),
    names,
)
class_specs = st.one_of(
    st.lists(st.one_of(st.integers(0, 6).map(str),
                       st.tuples(st.integers(0, 6), st.integers(0, 6)).map("{0[0]}-{0[1]}".format),
                       st.integers(10**6, 10**30).map(str)),
             min_size=1, max_size=4).map(",".join),
    st.sampled_from(["all", "none", "ALL", " 0 - 1 ", "0,,1", "-1", "1-", "0-1-2", "", ","]),
    names,
)
seeds = st.one_of(st.integers(0, 2**32 - 1), st.integers(-(2**70), 2**70))


@st.composite
def out_paths(draw, folder: Path, suffix: str, existing: Path) -> Path:
    """Fresh names with spaces and unicode, missing folders, a folder, an existing file."""
    kind = draw(st.sampled_from(["name"] * 6 + ["missing-folder", "folder", "existing"]))
    if kind == "folder":
        return folder
    if kind == "existing":
        return existing
    name = draw(names).strip(".") or "x"
    base = folder / "no such folder" if kind == "missing-folder" else folder
    return base / (name + draw(st.sampled_from([suffix, suffix, "", ".txt", " ", ".H5"])))


# --- susl mask -----------------------------------------------------------------------------------

@fuzz_settings(60)
@given(data=st.data())
def test_fuzz_mask(bench, figures, data):
    folder = fresh_folder(bench)
    out = data.draw(out_paths(folder, ".h5", bench["root"] / "existing.h5"), "out")
    args = ["mask", "--dataset", data.draw(st.one_of(
                st.just(str(bench["data"])), st.just(str(bench["mask"])),
                st.sampled_from(["mnist", "har-features", "missing.npz", str(folder)]), names),
                "dataset"),
            "--labelled-classes", data.draw(class_specs, "classes"), "--out", out, "--quiet"]
    amount = data.draw(st.sampled_from(["fraction", "count", "both", "neither"]), "amount")
    if amount in ("fraction", "both"):
        args += ["--label-fraction", data.draw(st.one_of(any_float, numbers_as_text))]
    if amount in ("count", "both"):
        args += ["--labels-per-class", data.draw(st.one_of(st.integers(-3, 40).map(str),
                                                           numbers_as_text))]
    if data.draw(st.booleans(), "seeded"):
        args += ["--seed", data.draw(seeds, "seed")]
    args += ["--data-dir", folder / "empty"]  # built-in names must not find the real data
    if run_case(args, figures) == "ok":
        assert invoke(["info", out, "--json"]).exit_code == 0


# --- susl train ----------------------------------------------------------------------------------

def small_or_absurd(small: tuple[int, int], absurd: tuple[int, int]) -> st.SearchStrategy:
    """Sizes either small enough to train in a blink, or far too large to fit anywhere."""
    return st.one_of(st.integers(*small), st.integers(*absurd)).map(str)


reals = st.one_of(any_float,
                  st.floats(0.0, 2.0, allow_subnormal=False).map(repr), numbers_as_text)
words = st.one_of(st.sampled_from(["", "bogus", "Ünïcode", "enumerate", "gumbel", "analytic",
                                   "sampled", "cosine", "constant", "bernoulli", "gaussian",
                                   "reference", "paper", "m2", "gmdgm", "default"]), names)
TRAIN_OPTIONS = {
    "--epochs": st.one_of(st.integers(-2, 2).map(str), numbers_as_text),
    "--batch-size": small_or_absurd((-2, 64), (2**31, 10**30)),
    "--labelled-batch-size": small_or_absurd((-2, 64), (2**31, 10**30)),
    "--hidden-units": small_or_absurd((-2, 24), (10**7, 10**30)),
    "--latent-dim": small_or_absurd((-2, 6), (10**13, 10**30)),
    "--extra-components": small_or_absurd((-2, 6), (10**12, 10**30)),
    "--learning-rate": reals, "--alpha": reals, "--grad-clip": reals, "--weight-decay": reals,
    "--gumbel-temperature": reals, "--gaussian-sigma": reals, "--labelled-mass": reals,
    "--lr-schedule": words, "--y-estimator": words, "--kl": words, "--likelihood": words,
    "--init": words, "--model": words, "--preset": words,
    "--checkpoint-every": st.one_of(st.integers(-2, 3).map(str), numbers_as_text),
    "--seed": seeds.map(str),
    "--device": st.sampled_from(["cpu", "cpu", "cuda:99", "tpu", "", "cpu:0", "meta"]),
}


@fuzz_settings(30)
@given(data=st.data())
def test_fuzz_train(bench, figures, data):
    folder = fresh_folder(bench)
    out = data.draw(out_paths(folder, ".h5", bench["root"] / "existing.h5"), "out")
    # A few options at a time: with all of them at once nearly every case would stop at the
    # first bad value and the later checks (and the training itself) would never run.
    fuzzed = data.draw(st.lists(st.sampled_from(sorted(TRAIN_OPTIONS)), max_size=3,
                                unique=True), "fuzzed")
    chosen = {flag: data.draw(TRAIN_OPTIONS[flag], flag) for flag in fuzzed}
    chosen.setdefault("--epochs", "1")
    chosen.setdefault("--hidden-units", "8")
    chosen.setdefault("--device", "cpu")
    # A valid tiny run trains one or two epochs; keep it that way.
    try:
        if int(chosen["--epochs"]) > 2:
            chosen["--epochs"] = "2"
    except ValueError:
        pass
    flags = data.draw(st.lists(st.sampled_from(["--resume", "--overwrite", "--json"]),
                               unique=True), "flags")
    mask = data.draw(st.sampled_from([bench["mask"]] * 5 + [bench["run"], bench["data"],
                                                           folder / "missing.h5"]), "mask")
    args = ["train", mask, "--out", out, "--quiet", *flags,
            *itertools.chain.from_iterable(chosen.items())]
    if run_case(args, figures) == "ok":
        assert invoke(["info", out, "--json"]).exit_code == 0


# --- reading commands ----------------------------------------------------------------------------

@fuzz_settings(25)
@given(data=st.data())
def test_fuzz_info_and_evaluate(bench, figures, data):
    folder = fresh_folder(bench)
    target = data.draw(st.one_of(
        st.sampled_from([bench["mask"], bench["run"], bench["data"], folder,
                         folder / "missing.h5"]),
        names.map(lambda n: folder / n)), "file")
    run_case(["info", target, *data.draw(st.sampled_from([[], ["--json"]]), "json")], figures)
    args = ["evaluate", data.draw(st.sampled_from([bench["run"], bench["mask"], target]), "run"),
            "--device", "cpu", "--fit-mapping", data.draw(words | st.sampled_from(
                ["test", "train"]), "fit")]
    if data.draw(st.booleans(), "with data"):
        args += ["--data", data.draw(st.sampled_from([bench["mask"], bench["run"], target]))]
    if data.draw(st.booleans(), "with csv"):
        args += ["--csv", data.draw(out_paths(folder, ".csv", bench["root"] / "existing.h5"))]
    args += data.draw(st.sampled_from([[], ["--json"], ["--raw"], ["--allow-mixed"]]), "flag")
    run_case(args, figures)


@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_sample(bench, figures, data):
    folder = fresh_folder(bench)
    out = data.draw(out_paths(folder, data.draw(st.sampled_from([".csv", ".h5", ".png"])),
                              bench["root"] / "existing.h5"), "out")
    args = ["sample", data.draw(st.sampled_from([bench["run"], bench["mask"],
                                                 folder / "gone.h5"]), "run"),
            "--out", out, "--device", "cpu"]
    if data.draw(st.booleans(), "rows"):
        args += ["--rows", data.draw(st.one_of(st.integers(-2, 6).map(str), numbers_as_text))]
    if data.draw(st.booleans(), "components"):
        args += ["--components", data.draw(class_specs, "components")]
    if data.draw(st.booleans(), "seeded"):
        args += ["--seed", data.draw(seeds, "seed")]
    args += data.draw(st.sampled_from([[], ["--most-confident"], ["--overwrite"], ["--json"]]))
    run_case(args, figures)


@fuzz_settings(20)
@given(data=st.data())
def test_fuzz_predict(bench, figures, data):
    folder = fresh_folder(bench)
    out = data.draw(out_paths(folder, ".csv", bench["root"] / "existing.h5"), "out")
    args = ["predict", data.draw(st.sampled_from([bench["run"], bench["mask"]]), "run"),
            data.draw(st.one_of(st.sampled_from([str(bench["data"]), str(bench["mask"]),
                                                 str(bench["run"]), "mnist", str(folder)]),
                                names), "input"),
            "--out", out, "--device", "cpu", "--data-dir", folder / "empty"]
    if data.draw(st.booleans(), "split"):
        args += ["--split", data.draw(words | st.sampled_from(["auto", "train", "test"]))]
    if data.draw(st.booleans(), "quantile"):
        args += ["--entropy-quantile", data.draw(reals, "quantile")]
    run_case(args, figures)



# --- arguments that broke susl (found while building these fuzzers) ------------------------------

def found(description: str, *args: object, expect: str = "") -> object:
    return pytest.param(list(args), expect, marks=pytest.mark.found_bug(description),
                        id=" ".join(map(str, args[:1] + args[-2:])))


@pytest.mark.parametrize("args, expect", [
    found("`susl mask --seed -1` ended in 'internal error' (numpy refuses negative seeds)",
          "mask", "{data}", "--seed", -1, expect="--seed"),
    found("`susl mask --seed 2**70` did all the work, then ended in 'internal error' (HDF5 "
          "cannot store the seed)", "mask", "{data}", "--seed", 2**70, expect="--seed"),
    found("`susl train --seed 2**70` ended in 'internal error' (torch generator overflow)",
          "train", "{mask}", "--seed", 2**70, expect="--seed"),
    found("`susl train --batch-size 10**20` ended in 'internal error' (torch index overflow)",
          "train", "{mask}", "--batch-size", 10**20, expect="--batch-size"),
    found("`susl train --device meta` ended in 'internal error'",
          "train", "{mask}", "--device", "meta", expect="device"),
    found("`susl train --gaussian-sigma 1e308` ended in 'internal error' (OverflowError in the "
          "likelihood)", "train", "{mask}", "--gaussian-sigma", "1e308", expect="sigma"),
    found("after a NaN loss in the first epoch the message claimed 'the last good checkpoint "
          "(epoch 0) is kept in OUT', where OUT was an older, unrelated file",
          "train", "{mask}", "--overwrite", "--learning-rate", "1e30", "--alpha", "1e308",
          expect="no epoch of this run was saved"),
])
def test_arguments_that_broke_susl(bench, tmp_path: Path, args: list, expect: str, figures):
    out = tmp_path / "out.h5"
    out.write_bytes(b"an older file")  # only --overwrite may replace it
    values = {"{data}": str(bench["data"]), "{mask}": str(bench["mask"])}
    args = [values.get(str(a), a) for a in args]
    command = ([args[0], "-d", args[1], "-l", "0-1"] if args[0] == "mask" else args[:2])
    extra = ["--epochs", 1, "--hidden-units", 8, "--quiet"] if args[0] == "train" else []
    result = invoke([*command, *args[2:], *extra, "--out", out])
    assert expect in check_clean_error(result)
    figures.add("fuzz_cases")


@pytest.mark.found_bug("`susl experiment --set gaussian_sigma=1e-200` skipped the range check "
                       "`susl train` makes, trained, and ended in a NaN loss blamed on the "
                       "learning rate")
def test_experiment_settings_are_checked_like_train_options(bench, tmp_path: Path, figures):
    grid = tmp_path / "grid"
    result = invoke(["experiment", "table2", "--dataset", bench["data"], "--seeds", 1,
                     "--epochs", 1, "--models", "gmdgm", "--regimes", "ss", "--quiet",
                     "--set", "gaussian_sigma=1e-200", "--out", grid])
    assert "gaussian-sigma" in check_clean_error(result)
    assert not grid.exists()  # refused before any mask was made or run trained
    figures.add("fuzz_cases")
