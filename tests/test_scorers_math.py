"""math_equiv: answer extraction, MATH normalisation, numeric and symbolic equivalence, timeout."""

from __future__ import annotations

import operator
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.records import Completion, Example, Score
from pytest_expertbench.scorers import OptionError, ScorerContext, get_scorer
from pytest_expertbench.scorers.math import SympyWorker, final_answer, last_boxed, normalize


def score(response: str, target: str, **options: Any) -> Score:
    factory = get_scorer("math_equiv")
    assert factory is not None
    function = factory({"target": "{solution}", **options}, ScorerContext(Path("b.yaml")))
    return function(Completion(text=response), Example("0", 0, {"solution": target}, "d"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{1} then \\boxed{\\frac{a}{b^{2}}}.", "\\frac{a}{b^{2}}"),
        ("\\fbox{12}", "12"),
        ("The answer is $\\boxed 5$.", "5"),
        ("\\boxed{\\frac{1}{2}", None),  # unbalanced braces
        ("no box here", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_final_answer_falls_back_to_the_last_number() -> None:
    assert final_answer("She has 1,234.5 apples, then 7 more.") == "7"
    assert final_answer("First 3, then 1,234.5") == "1234.5"
    assert final_answer("nothing numeric") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("\\left( 3, 4 \\right)", "(3,4)"),
        ("10\\%", "10"),
        ("5\\text{ inches}", "5"),
        ("12 \\mbox{ cm}^2", "12"),
        ("18 dollars", "18"),
        ("90^\\circ", "90"),
        ("\\$18.90", "18.90"),
        ("x = 5", "5"),
        ("\\sqrt2", "\\sqrt{2}"),
        ("1,000", "1000"),
        ("3/4", "\\frac{3}{4}"),
        ("5.", "5"),
        ("\\text{Monday}", "Monday"),
        ("-\\!7", "-7"),
    ],
)
def test_math_normalisation(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("response", "target"),
    [
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{0.5}", "\\frac12"),
        ("\\boxed{1/2}", "\\dfrac{1}{2}"),
        ("\\boxed{10\\%}", "10"),
        ("\\boxed{5\\text{ inches}}", "5"),
        ("\\boxed{x = 5}", "5"),
        ("The answer is 42.", "42"),
        ("\\boxed{-\\frac{3}{4}}", "-0.75"),
        ("\\boxed{(1, 2]}", "\\left(1,2\\right]"),
        ("\\boxed{\\sqrt{2}/2}", "\\boxed{\\frac{\\sqrt2}{2}}"),
        ("\\boxed{2\\pi}", "\\pi \\cdot 2"),
        ("\\boxed{(x+1)^2}", "x^2+2x+1"),
    ],
)
def test_equivalent_answers_score_1(response: str, target: str) -> None:
    result = score(response, target)
    assert result == Score(1.0)


@pytest.mark.parametrize(
    ("response", "target"),
    [
        ("\\boxed{\\frac{1}{3}}", "0.33"),
        ("\\boxed{(1, 2]}", "[1,2]"),  # intervals stay strings: the brackets matter
        ("\\boxed{\\sqrt{3}/2}", "\\frac{\\sqrt2}{2}"),
        ("\\boxed{x^2}", "2x"),
        ("\\boxed{__import__('os')}", "0"),  # never handed to sympy's eval
    ],
)
def test_different_answers_score_0_with_a_reason(response: str, target: str) -> None:
    result = score(response, target)
    assert result.value == 0.0
    assert result.detail


def test_a_response_without_an_answer_says_so() -> None:
    assert score("I am not sure.", "4").detail == "no boxed answer and no number in the response"


def test_a_pathological_expression_times_out_and_the_next_check_still_works() -> None:
    slow = "(x+1)^{300}(x-1)^{300}(x+2)^{300}"
    started = time.perf_counter()
    result = score(f"\\boxed{{{slow}}}", "(x^2-1)^{300}(x+2)^{300}+1", timeout_s=0.5)
    assert result == Score(0.0, "timed out")
    assert time.perf_counter() - started < 30  # bounded by the limit, not by sympy
    assert score("\\boxed{(x+1)^2}", "x^2+2x+1") == Score(1.0)


def test_worker_kills_an_overrunning_call_and_restarts() -> None:
    worker = SympyWorker()
    try:
        with pytest.raises(TimeoutError):
            worker.call(time.sleep, (60,), timeout_s=0.2)
        assert worker.call(operator.add, (2, 3), timeout_s=30) == 5
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            worker.call(operator.truediv, (1, 0), timeout_s=30)
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "target"),
        ({"target": "x", "timeout_s": 0}, "timeout_s"),
        ({"target": "x", "t": 1}, "t"),
    ],
)
def test_bad_options(options: dict[str, Any], key: str) -> None:
    factory = get_scorer("math_equiv")
    assert factory is not None
    with pytest.raises(OptionError) as caught:
        factory(options, ScorerContext(Path("b.yaml")))
    assert caught.value.key == key


def test_the_time_limit_works_outside_the_main_thread() -> None:
    results: list[Score] = []
    thread = threading.Thread(
        target=lambda: results.append(score("\\boxed{9^{9^{9}}}", "1", timeout_s=0.3))
    )
    thread.start()
    thread.join(timeout=60)
    assert results == [Score(0.0, "timed out")]
