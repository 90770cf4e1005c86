"""Text scorers: token F1, partial match, keywords and length.

These score free-text answers where an exact match is too strict: token F1 and
partial match give credit for overlap, keywords check that required (or forbidden)
words appear, and length either checks bounds or reports the length itself so a
metric can aggregate it.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pytest_expertbench.records import Completion, Example, Score
from pytest_expertbench.scorers import (
    OptionError,
    OptionReader,
    ScoreFunction,
    ScorerContext,
    scorer,
)
from pytest_expertbench.template import render

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, target: str) -> float:
    """SQuAD token F1 between two answers (1.0 when both normalise to nothing)."""
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(target).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(expected)
    return 2 * precision * recall / (precision + recall)


@scorer("f1")
def f1(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    reader = OptionReader(options)
    target = reader.template("target")
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        return Score(token_f1(completion.text, render(target, example.fields)))

    return score


@scorer("partial_match")
def partial_match(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """``tokens``: share of target tokens in the response; ``prefix``/``substring``: 1 or 0."""
    reader = OptionReader(options)
    target = reader.template("target")
    mode = reader.choice("mode", ("tokens", "prefix", "substring"), "tokens")
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        expected = normalize_answer(render(target, example.fields))
        response = normalize_answer(completion.text)
        if mode == "prefix":
            return _verdict(response.startswith(expected), "the response does not start with it")
        if mode == "substring":
            return _verdict(expected in response, "the response does not contain it")
        wanted = expected.split()
        if not wanted:
            return Score(1.0)
        present = set(response.split())
        missing = [token for token in wanted if token not in present]
        value = 1 - len(missing) / len(wanted)
        return Score(value, f"missing: {' '.join(missing[:10])}" if missing else None)

    return score


@scorer("keywords")
def keywords(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    reader = OptionReader(options)
    words = reader.template_list("words", non_empty=True)
    mode = reader.choice("mode", ("all", "any", "none"), "all")
    ignore_case = reader.boolean("ignore_case", True)
    word_boundary = reader.boolean("word_boundary", True)
    reader.finish()
    flags = re.IGNORECASE if ignore_case else 0

    def score(completion: Completion, example: Example) -> Score:
        wanted = [render(word, example.fields) for word in words]
        found = [word for word in wanted if _find_word(word, completion.text, flags, word_boundary)]
        if mode == "all":
            missing = [word for word in wanted if word not in found]
            return _verdict(not missing, f"missing: {', '.join(missing)}")
        if mode == "any":
            return _verdict(bool(found), "none of the keywords found")
        return _verdict(not found, f"forbidden: {', '.join(found)}")

    return score


def _find_word(word: str, text: str, flags: int, word_boundary: bool) -> bool:
    pattern = re.escape(word)
    if word_boundary:
        # \b only means something next to a word character; "C++" must still match.
        pattern = (r"(?<!\w)" if word[:1].isalnum() else "") + pattern
        pattern += r"(?!\w)" if word[-1:].isalnum() else ""
    return re.search(pattern, text, flags) is not None


@scorer("length")
def length(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """Within ``min``/``max``: 1 or 0; without bounds the score is the length itself."""
    reader = OptionReader(options)
    unit = reader.choice("unit", ("chars", "words"), "chars")
    low = reader.number("min", None)
    high = reader.number("max", None)
    reader.finish()
    if low is not None and high is not None and low > high:
        raise OptionError("min", f"min ({low:g}) is above max ({high:g})")

    def score(completion: Completion, example: Example) -> Score:
        size = len(completion.text) if unit == "chars" else len(completion.text.split())
        if low is None and high is None:
            return Score(float(size))
        if low is not None and size < low:
            return Score(0.0, f"{size} {unit}, below the minimum {low:g}")
        if high is not None and size > high:
            return Score(0.0, f"{size} {unit}, above the maximum {high:g}")
        return Score(1.0)

    return score


def _verdict(ok: bool, why_not: str) -> Score:
    return Score(1.0) if ok else Score(0.0, why_not)
