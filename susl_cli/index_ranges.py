"""Lists of indices written as ranges ('0-4', '0,2,7', '1-3,8'): class specs and --components.

One parser for both, so the two lists accept the same syntax and refuse the same mistakes in
the same words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from susl_cli.errors import UsageError

_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class RangeWords:
    """How an error names the list, e.g. noun 'class', where "class spec '0-4'"."""

    noun: str          # one item: "class", "component"
    where: str         # the list in messages: "class spec '0-4'", "--components '0,3'"
    at: str            # the same, after "class 9 in ": "'0-4'", "--components '0,3'"
    expected: str      # the syntax, after "expected "
    owner: str         # "this dataset has classes", "this model has components"
    cap_note: str      # when the count is unknown: "susl allows at most 100000 classes"


def is_range_part(part: str) -> bool:
    """Whether one comma-separated piece is a number or a range of numbers."""
    return _PART.match(part.strip()) is not None


def expand_ranges(text: str, count: int | None, cap: int, words: RangeWords) -> list[int]:
    """The indices `text` lists, in the order given (duplicates kept).

    Each index must be below `count` (below `cap` when the count is not known yet); the check
    comes before a range is expanded, so '0-10**20' is refused without building it."""
    chosen: list[int] = []
    for part in text.split(","):
        match = _PART.match(part.strip())
        if not match:
            raise UsageError(f"malformed {words.where}: expected {words.expected}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise UsageError(f"range {part.strip()!r} in {words.where} is reversed: write "
                             f"{last}-{first}")
        if last >= (cap if count is None else count):
            raise UsageError(f"{words.noun} {last} in {words.at} is out of range: "
                             + (f"{words.owner} 0..{count - 1}" if count is not None
                                else words.cap_note))
        chosen.extend(range(first, last + 1))
    return chosen
