"""match scorers: exact/numeric parity with lm-evaluation-harness, contains, regex, options."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_expertbench.benchmark_file import load_benchmark
from pytest_expertbench.config import ConfigError
from pytest_expertbench.records import Completion, Example, Score
from pytest_expertbench.scorers import OptionError, ScorerContext, get_scorer

CONTEXT = ScorerContext(benchmark_path=Path("bench.yaml"))
GSM8K_REGEXES = [",", "\\$", "(?s).*#### ", "\\.$"]  # lm-eval tasks/gsm8k/gsm8k.yaml


def run(kind: str, options: Mapping[str, Any], response: str, **fields: Any) -> Score:
    factory = get_scorer(kind)
    assert factory is not None
    example = Example(id="0", index=0, fields=fields, digest="sha256:0")
    return factory(dict(options), CONTEXT)(Completion(text=response), example)


# ----------------------------------------------------------------- lm-eval, transcribed
# An independent transcription of the lm-eval code each verdict comes from, so the
# table below is checked against the harness's logic as well as against the scorer.


def lm_eval_regex_filter(response: str, pattern: str, group_select: int) -> str:
    """lm_eval/filters/extraction.py RegexFilter.apply, fallback "[invalid]"."""
    match: Any = re.compile(pattern).findall(response)
    if not match:
        return "[invalid]"
    match = match[group_select]
    if isinstance(match, tuple):
        match = next(m for m in match if m)
    return str(match).strip()


def lm_eval_exact_match(
    prediction: str,
    reference: str,
    regexes_to_ignore: list[str] | None = None,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
) -> float:
    """lm_eval/api/metrics.py exact_match_hf_evaluate for one pair (numpy, as there)."""
    predictions, references = np.asarray([prediction]), np.asarray([reference])
    for s in regexes_to_ignore or []:
        predictions = np.array([re.sub(s, "", x) for x in predictions])
        references = np.array([re.sub(s, "", x) for x in references])
    if ignore_case:
        predictions, references = np.char.lower(predictions), np.char.lower(references)
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        predictions = np.array([str(x).translate(table) for x in predictions])
        references = np.array([str(x).translate(table) for x in references])
    return float(np.mean(predictions == references))


def lm_eval_gsm8k(response: str, answer: str, extract: str) -> float:
    """tasks/gsm8k/gsm8k.yaml: the named filter, then exact_match with the task's options."""
    if extract == "strict":  # filter "strict-match": regex + take_first
        extracted = lm_eval_regex_filter(response, r"#### (\-?[0-9\.\,]+)", 0)
    else:  # filter "flexible-extract": regex with group_select -1 + take_first
        extracted = lm_eval_regex_filter(response, r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1)
    return lm_eval_exact_match(extracted, answer, GSM8K_REGEXES, ignore_case=True)


GSM8K_ANSWER = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)

# (response, GSM8K answer text, extract, lm-eval's verdict). Every row follows
# tasks/gsm8k/gsm8k.yaml: RegexFilter (filters/extraction.py) with the strict-match or
# flexible-extract pattern, then exact_match_hf_evaluate (api/metrics.py) with
# regexes_to_ignore [",", "\$", "(?s).*#### ", "\.$"] and ignore_case on both sides.
PARITY = [
    # "," and "\$" are removed from the extracted answer.
    ("$1,234", "#### 1234", "flexible", 1.0),
    # the strict pattern allows no "$" after "#### ": no match, "[invalid]".
    ("#### $1,234", "#### 1234", "strict", 0.0),
    # "\.$" drops the sentence's full stop.
    ("72.", "#### 72", "flexible", 1.0),
    # no "####" at all: strict falls back to "[invalid]".
    ("72.", "#### 72", "strict", 0.0),
    ("#### -3.", "#### -3", "strict", 1.0),
    ("#### -3.", "#### -3", "flexible", 1.0),
    # several "####": strict takes the first match (take_first), flexible the last.
    ("#### 5\n#### 72", "#### 72", "strict", 0.0),
    ("#### 5\n#### 72", "#### 72", "flexible", 1.0),
    ("The answer is 18 dollars", GSM8K_ANSWER, "flexible", 0.0),
    ("The answer is 18 dollars", "#### 18", "flexible", 1.0),
    ("no number", GSM8K_ANSWER, "flexible", 0.0),
    ("no number", GSM8K_ANSWER, "strict", 0.0),
    ("1,000,000", "#### 1000000", "flexible", 1.0),
    # "-5" is one char too short for the first group; the second group takes it.
    ("-5", "#### -5", "flexible", 1.0),
    ("#### -5", "#### -5", "strict", 1.0),
    # compared as text: lm-eval says "3.50" is not "3.5".
    ("3.50", "#### 3.5", "flexible", 0.0),
    ("#### 3.50", "#### 3.5", "strict", 0.0),
    # the number only in the middle of the text is still the last match.
    ("Natalia sold 72 clips in total and was happy", GSM8K_ANSWER, "flexible", 1.0),
    ("She sold 48, then stopped for the day", "#### 48", "flexible", 1.0),
    ("So 24 + 48 = 72 clips", GSM8K_ANSWER, "flexible", 1.0),
    # flexible takes the last run of [$0-9.,]{2,}: here "...", which is not 5.
    ("It costs 5 dollars. Done...", "#### 5", "flexible", 0.0),
    ("Step one: 10.\n#### 72", GSM8K_ANSWER, "strict", 1.0),
    ("####72", GSM8K_ANSWER, "strict", 0.0),
    ("#### 72 clips", GSM8K_ANSWER, "strict", 1.0),
    ("THE ANSWER IS 72", GSM8K_ANSWER, "flexible", 1.0),
]


@pytest.mark.parametrize(("response", "answer", "extract", "verdict"), PARITY)
def test_numeric_match_gives_lm_eval_gsm8k_verdict(
    response: str, answer: str, extract: str, verdict: float
) -> None:
    assert lm_eval_gsm8k(response, answer, extract) == verdict  # the table is lm-eval's
    score = run(
        "numeric_match", {"target": "{answer}", "extract": extract}, response, answer=answer
    )
    assert score.value == verdict
    assert (score.detail is None) == (verdict == 1.0)


def test_numeric_match_details_say_what_was_compared() -> None:
    options = {"target": "{answer}"}
    wrong = run("numeric_match", options, "The answer is 18 dollars", answer=GSM8K_ANSWER)
    assert wrong.detail == "extracted '18' ≠ '72'"
    missing = run("numeric_match", options, "no number", answer=GSM8K_ANSWER)
    assert missing.detail is not None and missing.detail.startswith("no number found")
    strict = run("numeric_match", {**options, "extract": "strict"}, "72", answer="#### 72")
    assert strict.detail is not None and "####" in strict.detail


def test_numeric_match_takes_its_own_normalisation() -> None:
    options = {"target": "{answer}", "regexes_to_ignore": [r"\s*dollars?"], "ignore_case": False}
    assert run("numeric_match", options, "It is 18 dollars", answer="18 Dollars").value == 0.0
    assert run("numeric_match", options, "It is 18 dollars", answer="18 dollars").value == 1.0


EXACT_CASES = [
    ("Happy Birthday!", "Happy New Year!", {}),
    ("The Colour of Magic (1983)", "The Colour of Magic (1983)", {}),
    ("Happy Birthday!", "happy birthday", {"ignore_case": True}),
    ("Happy Birthday!", "happy birthday", {"ignore_case": True, "ignore_punctuation": True}),
    # regexes go first, before case folding: "the " does not remove "The ".
    ("The cat", "cat", {"regexes_to_ignore": ["the "], "ignore_case": True}),
    ("the cat", "cat", {"regexes_to_ignore": ["the "], "ignore_case": True}),
    ("$1,234.", "1234", {"regexes_to_ignore": GSM8K_REGEXES}),
    ("Yes.", "yes", {"ignore_punctuation": True}),
    (" 72\n", "72", {}),
]


@pytest.mark.parametrize(("prediction", "reference", "options"), EXACT_CASES)
def test_exact_match_without_strip_is_lm_eval_exact_match(
    prediction: str, reference: str, options: dict[str, Any]
) -> None:
    expected = lm_eval_exact_match(prediction, reference, **options)
    opts = {"target": "{ref}", "strip": False, **options}
    assert run("exact_match", opts, prediction, ref=reference).value == expected


def test_exact_match_strips_by_default_and_explains_a_miss() -> None:
    assert run("exact_match", {"target": "{ref}"}, " 72\n", ref="72").value == 1.0
    miss = run("exact_match", {"target": "Paris"}, "London")
    assert (miss.value, miss.detail) == (0.0, "'London' ≠ 'Paris'")


def test_exact_match_detail_is_short_for_a_long_response() -> None:
    detail = run("exact_match", {"target": "x"}, "word " * 500).detail
    assert detail is not None and len(detail) < 100


def test_contains() -> None:
    options = {"target": "{city}"}
    assert run("contains", options, "It is Paris, France.", city="Paris").value == 1.0
    assert run("contains", options, "It is paris.", city="Paris").value == 0.0
    folded = run("contains", {**options, "ignore_case": True}, "It is PARIS.", city="Paris")
    assert folded.value == 1.0
    empty = run("contains", options, "anything", city="")
    assert empty.value == 0.0 and empty.detail


def test_regex_without_target_scores_a_match() -> None:
    options = {"pattern": r"^answer: \w+$", "flags": ["multiline", "ignorecase"]}
    assert run("regex", options, "Work...\nANSWER: B").value == 1.0
    miss = run("regex", {"pattern": r"^answer"}, "Work...\nanswer: B")
    assert miss.value == 0.0 and miss.detail


def test_regex_with_target_compares_the_first_group_or_the_match() -> None:
    grouped = {"pattern": r"answer: \(?([A-D])\)?", "target": "{label}"}
    assert run("regex", grouped, "answer: (C) and answer: D", label="C").value == 1.0
    wrong = run("regex", grouped, "answer: D", label="C")
    assert (wrong.value, wrong.detail) == (0.0, "captured 'D' ≠ 'C'")
    whole = {"pattern": r"\d+", "target": "{n}"}
    assert run("regex", whole, "x 42 y 7", n="42").value == 1.0
    optional_group = {"pattern": r"a(b)?", "target": ""}
    assert run("regex", optional_group, "a").value == 1.0


BAD_OPTIONS = [
    ("exact_match", {}, "target"),
    ("exact_match", {"target": 3}, "target"),
    ("exact_match", {"target": "{x"}, "target"),
    ("exact_match", {"target": "x", "ignore_case": "yes"}, "ignore_case"),
    ("exact_match", {"target": "x", "regexes_to_ignore": "(?s).*"}, "regexes_to_ignore"),
    ("exact_match", {"target": "x", "regexes_to_ignore": ["("]}, "regexes_to_ignore"),
    ("exact_match", {"target": "x", "strip": 1}, "strip"),
    ("exact_match", {"target": "x", "targte": "y"}, "targte"),
    ("numeric_match", {"target": "x", "extract": "loose"}, "extract"),
    ("numeric_match", {"target": "x", "ignore_punctuation": True}, "ignore_punctuation"),
    ("contains", {"target": ""}, "target"),
    ("contains", {"target": "x", "ignore_case": None}, "ignore_case"),
    ("regex", {}, "pattern"),
    ("regex", {"pattern": "(unclosed"}, "pattern"),
    ("regex", {"pattern": "x", "flags": ["verbose"]}, "flags"),
    ("regex", {"pattern": "x", "flags": "ignorecase"}, "flags"),
    ("regex", {"pattern": "x", "target": 1}, "target"),
]


@pytest.mark.parametrize(("kind", "options", "key"), BAD_OPTIONS)
def test_bad_options_are_refused_at_load_time(kind: str, options: dict[str, Any], key: str) -> None:
    factory = get_scorer(kind)
    assert factory is not None
    with pytest.raises(OptionError) as caught:
        factory(options, CONTEXT)
    assert caught.value.key == key
    assert caught.value.message


def test_a_bad_option_names_file_scorer_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(
        "dataset: {file: data.jsonl}\n"
        "suites: {quick: all}\n"
        "prompt: '{question}'\n"
        "scorers:\n"
        "  - exact_match: {target: '{answer}'}\n"
        "  - numeric_match: {target: '{answer}', extract: sloppy}\n"
        "metrics:\n"
        "  accuracy: {of: numeric_match, direction: higher}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_benchmark(path)
    assert str(caught.value).startswith(f"{path}: scorers[1].numeric_match.extract: ")
    assert "sloppy" in str(caught.value)
