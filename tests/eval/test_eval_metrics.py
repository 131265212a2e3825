"""Each metric against values computed by hand (several cases each, edge cases included)."""

from __future__ import annotations

import pytest

from moesaic.eval.metrics import (
    anls,
    attribute_accuracy,
    exact_match,
    levenshtein,
    normalize_answer,
    normalized_match,
    parse_attributes,
    squad_normalize,
    token_f1,
)


@pytest.mark.parametrize(
    ("pred", "refs", "expected"),
    [
        ("Paris", "Paris", 1.0),
        ("  Paris\n", "Paris ", 1.0),  # surrounding whitespace only
        ("paris", "Paris", 0.0),  # case-sensitive
        ("Paris.", "Paris", 0.0),
        ("", "", 1.0),
        ("", "Paris", 0.0),
        ("Lyon", ["Paris", "Lyon"], 1.0),  # any reference
        ("Nice", ["Paris", "Lyon"], 0.0),
        ("x", [], 0.0),  # no reference: nothing to match
    ],
)
def test_exact_match(pred: str, refs: str | list[str], expected: float) -> None:
    assert exact_match(pred, refs) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat!", "cat"),
        ("Two dogs", "2 dogs"),
        ("twenty-one", "21"),
        ("twenty one apples", "21 apples"),
        ("a hundred", "100"),
        ("An   apple, a pear", "apple pear"),
        ("thirty", "30"),
        ("none", "0"),
        ("", ""),
        ("theatre", "theatre"),  # articles only as whole words
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("pred", "refs", "expected"),
    [
        ("Two.", "2", 1.0),
        ("the red car", "Red car", 1.0),
        ("red car", "blue car", 0.0),
        ("", "", 1.0),
        ("", "a", 1.0),  # "a" is an article: both normalise to ""
        ("", "cat", 0.0),
        ("three", ["2", "3"], 1.0),
        ("four", ["2", "3"], 0.0),
    ],
)
def test_normalized_match(pred: str, refs: str | list[str], expected: float) -> None:
    assert normalized_match(pred, refs) == expected


def test_levenshtein_by_hand() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("same", "same") == 0


@pytest.mark.parametrize(
    ("pred", "refs", "expected"),
    [
        ("hello", "hello", 1.0),
        ("HELLO ", "hello", 1.0),  # lowercased and trimmed
        ("helo", "hello", 1 - 1 / 5),  # NL = 1/5 = 0.2 < 0.5 → 0.8
        ("kitten", "sitting", 1 - 3 / 7),  # NL = 3/7 ≈ 0.43 < 0.5 → 4/7
        ("abc", "abd", 1 - 1 / 3),  # NL = 1/3 → 2/3
        ("ab", "cd", 0.0),  # NL = 1 ≥ 0.5 → 0
        ("abcd", "abxy", 0.0),  # NL = 0.5, not below the threshold → 0
        ("", "", 1.0),
        ("", "text", 0.0),
        ("stop", ["go", "stops"], 0.8),  # best reference: NL("stop","stops") = 1/5
        ("new  york", "new york", 1.0),  # whitespace collapsed
    ],
)
def test_anls(pred: str, refs: str | list[str], expected: float) -> None:
    assert anls(pred, refs) == pytest.approx(expected)


def test_anls_threshold_is_a_parameter() -> None:
    # NL("abcd", "abxy") = 0.5: scored only when the threshold is above it.
    assert anls("abcd", "abxy", threshold=0.6) == pytest.approx(0.5)
    assert anls("abc", "abd", threshold=0.3) == 0.0


def test_squad_normalize() -> None:
    assert squad_normalize("The U.S.A.!") == "usa"
    assert squad_normalize("  An  apple ") == "apple"


@pytest.mark.parametrize(
    ("pred", "refs", "expected"),
    [
        ("the cat sat", "cat sat", 1.0),
        # pred tokens [cat, sat, on, mat] vs gold [cat, sat]: P = 2/4, R = 2/2 → F1 = 2·0.5·1/1.5 = 2/3
        ("cat sat on mat", "the cat sat", 2 / 3),
        # pred [red] vs gold [red, car]: P = 1, R = 1/2 → 2/3
        ("red", "red car", 2 / 3),
        # repeated tokens count once per gold occurrence: pred [a?] → "dog dog" vs "dog": P=1/2, R=1 → 2/3
        ("dog dog", "dog", 2 / 3),
        ("blue", "red", 0.0),
        ("", "", 1.0),  # both empty
        ("", "cat", 0.0),
        ("the", "", 1.0),  # article only: both normalise to no tokens
        ("red car", ["blue", "red car"], 1.0),  # best reference
        ("red", ["blue", "green"], 0.0),
    ],
)
def test_token_f1(pred: str, refs: str | list[str], expected: float) -> None:
    assert token_f1(pred, refs) == pytest.approx(expected)


def test_attribute_accuracy_per_field() -> None:
    ref = {"color": "Red", "material": "cotton", "size": "two"}
    pred = {"Color": "red.", "material": "wool", "size": 2}
    assert attribute_accuracy(pred, ref) == {"color": 1.0, "material": 0.0, "size": 1.0}


def test_attribute_accuracy_missing_and_lists() -> None:
    ref = {"colors": ["red", "blue"], "brand": "Acme"}
    assert attribute_accuracy({"colors": "red, blue"}, ref) == {"colors": 1.0, "brand": 0.0}
    assert attribute_accuracy({}, ref) == {"colors": 0.0, "brand": 0.0}
    assert attribute_accuracy({"brand": None}, {"brand": ""}) == {"brand": 1.0}


def test_parse_attributes() -> None:
    assert parse_attributes('Sure! {"color": "red", "size": "M"} done') == {"color": "red", "size": "M"}
    assert parse_attributes("color: red\n- size = M\nnonsense") == {"color": "red", "size": "M"}
    assert parse_attributes("{broken json") == {}
    assert parse_attributes("") == {}
