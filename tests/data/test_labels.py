"""Labels in the user's terms: names, numbers, and the marks of an unlabelled row."""

from __future__ import annotations

import numpy as np
import pytest

from susl_cli.data.labels import MAX_CLASSES, encode_labels
from susl_cli.errors import DataError


def _encode(*columns, token=None):
    return encode_labels(list(columns), "f", token)


def test_words_become_classes_in_alphabetical_order_with_every_unlabelled_mark() -> None:
    y = np.array(["cat", "", "dog", None, "unknown", "cat", " dog ", "-1", "nan"], dtype=object)
    (ids,), names = _encode(y, token="unknown")
    assert names == ("cat", "dog")
    assert ids.tolist() == [0, -1, 1, -1, -1, 0, 1, -1, -1]


def test_numbers_are_names_too_so_gaps_make_no_empty_classes() -> None:
    (ids,), names = _encode(np.array([7, 0, 3, -1, 7]))
    assert names == ("0", "3", "7") and ids.tolist() == [2, 0, 1, -1, 2]
    (ids,), names = _encode(np.array([10.0, 2.0, np.nan]))  # numeric order: 2 before 10
    assert names == ("2", "10") and ids.tolist() == [1, 0, -1]
    (ids,), names = _encode(np.array(["10", "2", 3], dtype=object))
    assert names == ("2", "3", "10") and ids.tolist() == [2, 0, 1]


def test_test_labels_share_the_classes_of_the_training_labels() -> None:
    (train, test), names = _encode(np.array(["a", ""], dtype=object), np.array(["b", "a"]))
    assert names == ("a", "b") and train.tolist() == [0, -1] and test.tolist() == [1, 0]
    assert _encode(np.array(["a"]), None)[0][1] is None


def test_booleans_are_two_classes_whatever_the_format() -> None:
    assert _encode(np.array([True, False, True]))[1] == ("False", "True")
    assert _encode(np.array(["True", "False"], dtype=object))[1] == ("False", "True")


@pytest.mark.parametrize("bad, message", [
    (np.array([1.5, 2.0]), "label 1.5 is not a class"),
    (np.array([np.inf]), "not a class"),
    (np.array(["1e300"], dtype=object), "not a class"),
    (np.array([-3, 1]), "label -3 is negative"),
    (np.array([2**64 - 1], dtype=np.uint64), "too large"),
    (np.array([2**63], dtype=np.uint64), "too large"),
    (np.array([99999999999999999999], dtype=object), "too large"),
    (np.zeros((3, 2)), "one label per row"),
    (np.array([1 + 2j]), "type complex"),
])
def test_labels_that_are_no_class_are_refused_in_one_sentence(bad, message: str) -> None:
    with pytest.raises(DataError, match=message):
        _encode(bad)


def test_an_identifier_column_is_not_taken_for_labels() -> None:
    with pytest.raises(DataError, match=f"more than the {MAX_CLASSES} classes"):
        _encode(np.arange(MAX_CLASSES + 1))
