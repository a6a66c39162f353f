"""The reliability suite's fixtures and its figures ledger (issue #7).

Every test adds what it tried to `figures` (kills survived, damaged files fed, fuzz cases run,
...). At the end of the session pytest prints the totals under "susl reliability figures", and
writes them as JSON to $SUSL_RELIABILITY_FIGURES when that is set, so docs/reliability.md
quotes numbers the suite printed rather than numbers typed by hand.

Tests marked `@pytest.mark.found_bug("...")` are regression tests for bugs this suite found
(and that were fixed in the product); the summary lists them with their outcome.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

# (key, label) in the order the summary prints them.
FIGURE_LABELS = (
    ("kills", "SIGKILLs of `susl train` survived (checkpoint loads after each)"),
    ("kills_before_checkpoint", "  of which before the first checkpoint existed"),
    ("kills_mid_write", "  of which inside a checkpoint write (temporary file left behind)"),
    ("resumes", "`--resume` runs after a kill"),
    ("bitwise_equal_runs", "killed-and-resumed runs bitwise equal to an uninterrupted run"),
    ("mask_kills", "SIGKILLs of `susl mask` (never a half-written output)"),
    ("stale_temporaries_removed", "temporaries of killed processes removed by the next write"),
    ("damaged_files", "damaged or hostile files made"),
    ("damaged_invocations", "commands run on them (each: one-line error, input unchanged)"),
    ("identical_despite_damage", "  of which succeeded with output identical to the intact file"),
    ("pickle_payloads", "pickle payloads offered (marker file never created)"),
    ("fuzz_cases", "fuzzed CLI invocations (exit 0 or one clean error line)"),
    ("fuzz_successes", "  of which succeeded"),
    ("resource_cases", "resource-limit cases (disk full, file size limit, huge models/arrays)"),
    ("determinism_checks", "determinism checks (same command and seed, same result)"),
    ("outputs_guarded", "outputs refused: an input (run's mask included), a link, a FIFO, "
                        "'-', a name over 255 bytes, no --overwrite"),
    ("indirect_files", "non-regular files and HDF5 indirections offered to readers (refused, "
                       "no hang)"),
    ("interrupts", "SIGINTs of susl commands (one line, exit 130, nothing partial)"),
    ("concurrent_writers", "second writers of an output in use (refused, naming the first)"),
    ("replaced_masks", "runs whose mask changed after training (refused or reported)"),
)
MAXIMUM_LABELS = (
    ("max_lost_epochs", "worst work lost to one kill, in epochs (promise: at most 1 + the write)"),
)


class Figures:
    """Counts and maxima collected during the session."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.maxima: dict[str, float] = {}
        self.bugs: dict[str, str] = {}  # description -> outcome of its regression test
        self.attack_bugs: dict[str, str] = {}  # the same for bugs an independent attack found

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def record_max(self, key: str, value: float) -> None:
        self.maxima[key] = max(self.maxima.get(key, float("-inf")), value)

    def as_dict(self) -> dict:
        return {"counts": dict(self.counts), "maxima": self.maxima, "found_bugs": self.bugs,
                "attack_bugs": self.attack_bugs}


FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return FIGURES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "found_bug(description): regression test for a bug the reliability suite "
        "found and that was fixed in the product (listed in the figures)")
    config.addinivalue_line(
        "markers", "attack_bug(description): regression test for a bug an independent "
        "adversarial pass found (issue 19), fixed in the product (listed in the figures)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and not report.passed):
        for name, ledger in (("found_bug", FIGURES.bugs), ("attack_bug", FIGURES.attack_bugs)):
            for marker in item.iter_markers(name):
                previous = ledger.get(marker.args[0])
                if previous in (None, "passed"):
                    ledger[marker.args[0]] = report.outcome


def figure_lines() -> list[str]:
    """The summary, one line per figure, as printed and as copied into docs/reliability.md."""
    lines = [f"{FIGURES.counts[key]:>8}  {label}" for key, label in FIGURE_LABELS
             if key in FIGURES.counts]
    lines += [f"{FIGURES.maxima[key]:>8.2f}  {label}" for key, label in MAXIMUM_LABELS
              if key in FIGURES.maxima]
    if FIGURES.bugs:
        fixed = sum(outcome == "passed" for outcome in FIGURES.bugs.values())
        lines.append(f"{fixed:>8}  bugs found by this suite, fixed, with a passing regression "
                     f"test (of {len(FIGURES.bugs)} run):")
        lines += [f"          [{outcome}] {description}"
                  for description, outcome in sorted(FIGURES.bugs.items())]
    if FIGURES.attack_bugs:
        fixed = sum(outcome == "passed" for outcome in FIGURES.attack_bugs.values())
        lines.append(f"{fixed:>8}  bugs found by an independent attack (issue 19), fixed, with a "
                     f"passing regression test (of {len(FIGURES.attack_bugs)} run):")
        lines += [f"          [{outcome}] {description}"
                  for description, outcome in sorted(FIGURES.attack_bugs.items())]
    return lines




def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not FIGURES.counts and not FIGURES.bugs and not FIGURES.attack_bugs:
        return
    terminalreporter.section("susl reliability figures")
    lines = figure_lines()
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("SUSL_RELIABILITY_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES.as_dict(), indent=2, sort_keys=True) + "\n")
    doc = os.environ.get("SUSL_RELIABILITY_DOC")
    if doc and exitstatus == 0:
        block = os.environ.get("SUSL_RELIABILITY_DOC_BLOCK", "figures")
        _refresh_doc(Path(doc), block, lines)
        terminalreporter.write_line(f"figures copied into {doc} (block {block!r})")


def _refresh_doc(doc: Path, block_name: str, lines: list[str]) -> None:
    """Replace the block between `<!-- NAME:start -->` and `<!-- NAME:end -->` of `doc`."""
    start, end = f"<!-- {block_name}:start -->", f"<!-- {block_name}:end -->"
    text = doc.read_text()
    if start not in text or end not in text:
        raise pytest.UsageError(f"{doc} has no {start} ... {end} block")
    settings = ", ".join(f"{name}={os.environ.get(name, default)}" for name, default in (
        ("SUSL_RELIABILITY_SEED", "7"), ("SUSL_RELIABILITY_KILLS", "3"),
        ("SUSL_DAMAGE_FLIPS", "10"), ("SUSL_FUZZ_EXAMPLES", "CI budget")))
    block = "\n".join([start, "", f"Settings: {settings}.", "", "```text", *lines, "```", "",
                       end])
    head, rest = text.split(start, 1)
    doc.write_text(head + block + rest.split(end, 1)[1])


@pytest.fixture
def image_run(tiny_image_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """Private copies of the session's tiny GM-DGM (mask, checkpoint): safe to damage.

    The checkpoint records the absolute path of the session's mask, which stays read-only.
    """
    mask, run = tiny_image_run
    folder = tmp_path / "run-copy"
    folder.mkdir()
    return Path(shutil.copy2(mask, folder / "mask.h5")), Path(shutil.copy2(run, folder / "run.h5"))
