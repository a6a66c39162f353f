"""The one range parser behind class specs and --components."""

import pytest

from susl_cli.errors import UsageError
from susl_cli.index_ranges import RangeWords, expand_ranges, is_range_part

WORDS = RangeWords("item", "list '?'", "'?'", "e.g. '0-2'", "this list has items",
                   "at most 10 items")


def test_ranges_expand_in_the_order_given() -> None:
    assert expand_ranges("5,0-2,1", 6, 10, WORDS) == [5, 0, 1, 2, 1]


@pytest.mark.parametrize(("text", "count", "message"), [
    ("0-x", 6, "malformed list '?': expected e.g. '0-2'"),
    ("3-1", 6, "range '3-1' in list '?' is reversed: write 1-3"),
    ("0-6", 6, "item 6 in '?' is out of range: this list has items 0..5"),
    ("0-99999999999999999999", None, "item 99999999999999999999 in '?' is out of range: "
                                     "at most 10 items"),
])
def test_mistakes_are_named(text: str, count: int | None, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        expand_ranges(text, count, 10, WORDS)
    assert str(caught.value) == message


def test_range_parts() -> None:
    assert is_range_part(" 3-4 ") and is_range_part("7")
    assert not is_range_part("cat") and not is_range_part("-1")
