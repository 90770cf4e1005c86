"""Text scorers: SQuAD F1, partial match, keywords, length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.records import Completion, Example, Score
from pytest_expertbench.scorers import OptionError, ScorerContext, get_scorer
from pytest_expertbench.scorers.text import normalize_answer, token_f1


def score(kind: str, options: dict[str, Any], response: str, **fields: Any) -> Score:
    factory = get_scorer(kind)
    assert factory is not None
    function = factory(options, ScorerContext(benchmark_path=Path("bench.yaml")))
    return function(Completion(text=response), Example("0", 0, fields, "d"))


def test_squad_normalisation_drops_case_punctuation_and_articles() -> None:
    assert normalize_answer("The  Eiffel-Tower, in an  hour!") == "eiffeltower in hour"


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("Paris", "paris.", 1.0),
        ("the city of Paris", "Paris", 0.5),  # precision 1/3, recall 1 -> 2*(1/3)/(4/3)
        ("London", "Paris", 0.0),
        ("", "", 1.0),
        ("", "Paris", 0.0),
    ],
)
def test_token_f1(prediction: str, target: str, expected: float) -> None:
    assert token_f1(prediction, target) == pytest.approx(expected)


def test_f1_scorer_renders_its_target_per_example() -> None:
    result = score("f1", {"target": "{answer}"}, "It is Paris", answer="Paris")
    assert result.value == pytest.approx(2 * (1 / 3) / (1 + 1 / 3))


def test_partial_match_tokens_reports_the_missing_ones() -> None:
    result = score("partial_match", {"target": "red green blue"}, "Red and blue.")
    assert result.value == pytest.approx(2 / 3)
    assert result.detail == "missing: green"


@pytest.mark.parametrize(
    ("mode", "response", "expected"),
    [
        ("prefix", "Paris, France", 1.0),
        ("prefix", "In Paris", 0.0),
        ("substring", "In Paris!", 1.0),
    ],
)
def test_partial_match_prefix_and_substring(mode: str, response: str, expected: float) -> None:
    assert score("partial_match", {"target": "Paris", "mode": mode}, response).value == expected


@pytest.mark.parametrize(
    ("options", "response", "expected"),
    [
        ({"words": ["cat", "dog"]}, "A Cat and a DOG.", 1.0),
        ({"words": ["cat", "dog"]}, "A cat alone.", 0.0),
        ({"words": ["cat", "dog"], "mode": "any"}, "Only the dog.", 1.0),
        ({"words": ["cat"], "mode": "none"}, "concatenate", 1.0),  # word boundary
        ({"words": ["cat"], "mode": "none", "word_boundary": False}, "concatenate", 0.0),
        ({"words": ["Cat"], "ignore_case": False}, "a cat", 0.0),
        ({"words": ["C++"]}, "I like C++.", 1.0),
        ({"words": ["{animal}"]}, "the owl", 1.0),
    ],
)
def test_keywords(options: dict[str, Any], response: str, expected: float) -> None:
    assert score("keywords", options, response, animal="owl").value == expected


def test_keywords_detail_names_the_missing_word() -> None:
    assert score("keywords", {"words": ["cat", "dog"]}, "cat").detail == "missing: dog"


def test_length_is_the_length_without_bounds_and_a_verdict_with_them() -> None:
    assert score("length", {"unit": "words"}, "one two three").value == 3.0
    assert score("length", {}, "abcd").value == 4.0
    assert score("length", {"unit": "words", "max": 2}, "one two three").value == 0.0
    assert score("length", {"unit": "words", "min": 1, "max": 3}, "one two three").value == 1.0
    below = score("length", {"min": 5}, "abc")
    assert below.value == 0.0
    assert below.detail == "3 chars, below the minimum 5"


@pytest.mark.parametrize(
    ("kind", "options", "key"),
    [
        ("f1", {}, "target"),
        ("f1", {"target": "{answer"}, "target"),
        ("partial_match", {"target": "x", "mode": "fuzzy"}, "mode"),
        ("keywords", {"words": []}, "words"),
        ("keywords", {"words": "cat"}, "words"),
        ("keywords", {"words": ["cat"], "ignore_case": "yes"}, "ignore_case"),
        ("keywords", {"words": ["cat"], "wordz": 1}, "wordz"),
        ("length", {"min": 5, "max": 2}, "min"),
        ("length", {"max": -1}, "max"),
        ("length", {"unit": "tokens"}, "unit"),
    ],
)
def test_bad_options_name_their_key(kind: str, options: dict[str, Any], key: str) -> None:
    factory = get_scorer(kind)
    assert factory is not None
    with pytest.raises(OptionError) as caught:
        factory(options, ScorerContext(benchmark_path=Path("bench.yaml")))
    assert caught.value.key == key
