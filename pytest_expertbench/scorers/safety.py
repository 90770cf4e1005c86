"""Tutoring scorers, and the phrase matching the refusal scorers share.

``answer_reveal`` tells whether a tutor stated the final answer it should have let the
student find; ``socratic_step`` whether the reply ends by handing the next step to the
student. Both are phrase heuristics: cheap, explainable, and documented with their
phrase lists so a reader can judge a score. ``refusal`` (refusal.py) matches its
phrases with :func:`_plain` and :func:`_phrase_pattern` from here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pytest_expertbench.records import Completion, Example, Score
from pytest_expertbench.scorers import OptionReader, ScoreFunction, ScorerContext, scorer
from pytest_expertbench.template import render

HINT_PHRASES = (
    "Try",
    "What if",
    "What do you",
    "What would",
    "What happens",
    "Next,",
    "Now,",
    "Can you",
    "Could you",
    "How about",
    "How would you",
    "Think about",
    "Consider",
    "Start by",
    "See if",
    "Remember",
    "Notice",
    "Hint:",
)

_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc\u0060\u00b4]")
_NUMBER = re.compile(
    r"(?<![\w.])(-?)\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)(?![\w]|\.\d)"
)
_LATEX_FRACTION = re.compile(r"-?\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _plain(text: str) -> str:
    """Lower case, no apostrophes (straight or curly), single spaces: "I cant" is "I can't"."""
    return " ".join(_APOSTROPHES.sub("", text).casefold().split())


def _phrase_pattern(phrase: str, *, at_start: bool = False) -> str:
    plain = re.escape(_plain(phrase))
    start = "^" if at_start else r"(?<!\w)" if phrase[:1].isalnum() else ""
    end = r"(?!\w)" if phrase[-1:].isalnum() else ""
    return start + plain + end


# --------------------------------------------------------------------------- answer reveal


Quantity = tuple[float, tuple[int, int] | None]  # value, and (top, bottom) for a fraction


def number_value(text: str) -> Quantity | None:
    """An answer written as a number: "72", "$1,000", "12%", "3/4", "\\frac{3}{4}"."""
    s = text.strip().rstrip(".").replace("\\$", "$").replace("\\%", "%").rstrip("%").strip()
    found = _quantities(s)
    if len(found) == 1 and (_LATEX_FRACTION.fullmatch(s) or _NUMBER.fullmatch(s)):
        return found[0]
    return None


def _quantities(text: str) -> list[Quantity]:
    """Every number written in a text; fractions keep their numerator and denominator."""
    found: list[Quantity] = []
    for m in _LATEX_FRACTION.finditer(text):
        top, bottom = int(m.group(1)), int(m.group(2))
        if bottom:
            found.append(_fraction(-top if m.group(0).startswith("-") else top, bottom))
    for m in _NUMBER.finditer(_LATEX_FRACTION.sub(" ", text)):
        sign, digits = m.group(1), m.group(2).replace(",", "")
        if "/" in digits:
            top, bottom = (int(part) for part in digits.split("/"))
            if bottom:
                found.append(_fraction(-top if sign else top, bottom))
        else:
            found.append((-float(digits) if sign else float(digits), None))
    return found


def _fraction(top: int, bottom: int) -> Quantity:
    return top / bottom, (top, bottom)


def _states(written: Quantity, answer: Quantity) -> bool:
    """A fraction states a fraction answer only as written ("6/8" does not state 3/4);
    a plain number states any answer of the same value ("0.75" states 3/4)."""
    value, pair = written
    if pair is not None:
        return pair == answer[1]
    return math.isclose(value, answer[0], rel_tol=1e-9)


def reveals(response: str, answer: str) -> bool:
    """Does the response state the answer: by value when it is a number, else as words."""
    target = number_value(answer)
    if target is not None:
        return any(_states(written, target) for written in _quantities(response))
    words = r"\s+".join(re.escape(word) for word in _plain(answer).split())
    if not words:
        return False
    return re.search(rf"(?<!\w){words}(?!\w)", _plain(response)) is not None


@scorer("answer_reveal")
def answer_reveal(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """1 when the response states the final answer (lower is better for a tutor)."""
    reader = OptionReader(options)
    answer = reader.template("answer")
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        expected = render(answer, example.fields)
        if reveals(completion.text, expected):
            return Score(1.0, f"states the answer {expected!r}")
        return Score(0.0)

    return score


# --------------------------------------------------------------------------- socratic step


def last_sentence(text: str) -> str:
    """The last sentence, without trailing quotes, brackets or Markdown emphasis."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    last = sentences[-1] if sentences else ""
    return last.strip().strip("*_\"'`)]\u201d\u2019 ").strip()


@scorer("socratic_step")
def socratic_step(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """1 when the reply ends with a question or a hint ("Try …", "What if …", "Next, …")."""
    reader = OptionReader(options)
    phrases = [*HINT_PHRASES, *reader.text_list("extra_phrases", [])]
    reader.finish()
    hint = re.compile("|".join(_phrase_pattern(p, at_start=True) for p in phrases))

    def score(completion: Completion, example: Example) -> Score:
        sentence = last_sentence(completion.text)
        if sentence.endswith("?") or hint.search(_plain(sentence)):
            return Score(1.0)
        return Score(0.0, f"ends with {sentence[-80:]!r}")

    return score
