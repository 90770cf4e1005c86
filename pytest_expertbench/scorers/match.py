"""Match scorers: exact, numeric (GSM8K-style), contains and regex.

``exact_match`` and ``numeric_match`` reproduce lm-evaluation-harness verdict for
verdict, so an accuracy measured here can be put next to one the harness reports:
``exact_match`` is its ``exact_match`` metric (Hugging Face evaluate's), and
``numeric_match`` is its gsm8k task, i.e. a regex filter (``strict-match`` or
``flexible-extract``) followed by that metric with the task's ``regexes_to_ignore``.
Their quirks are kept on purpose: "3.50" is not "3.5", and flexible extraction takes
the last number-like run of the response even when that run is "...".
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

# lm-eval tasks/gsm8k/gsm8k.yaml: metric_list[exact_match].regexes_to_ignore and ignore_case.
GSM8K_REGEXES_TO_IGNORE = (",", r"\$", "(?s).*#### ", r"\.$")
# lm-eval tasks/gsm8k/gsm8k.yaml filter_list: "strict-match" takes the first match of
# this pattern, "flexible-extract" the last match of the second (group_select: -1).
STRICT_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval RegexFilter's fallback when the pattern finds nothing.
INVALID = "[invalid]"

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_REGEX_FLAGS = {"ignorecase": re.IGNORECASE, "multiline": re.MULTILINE, "dotall": re.DOTALL}
_SHOWN_CHARS = 60


@dataclass(frozen=True)
class Normalizer:
    """HF evaluate's exact_match normalisation, applied alike to answer and reference.

    The order is the metric's: every regex is removed (in the order given), then
    case is folded, then ``string.punctuation`` is deleted.
    """

    regexes_to_ignore: tuple[re.Pattern[str], ...] = ()
    ignore_case: bool = False
    ignore_punctuation: bool = False

    def __call__(self, text: str) -> str:
        for pattern in self.regexes_to_ignore:
            text = pattern.sub("", text)
        if self.ignore_case:
            text = text.lower()
        if self.ignore_punctuation:
            text = text.translate(_NO_PUNCTUATION)
        return text


def extract_number(text: str, mode: str) -> str:
    """The answer lm-eval's gsm8k filter would take from ``text``, or ``INVALID``.

    Like lm-eval's RegexFilter: ``findall``, pick the match (first for ``strict``,
    last for ``flexible``), take its first non-empty group, strip it.
    """
    pattern, pick = (STRICT_PATTERN, 0) if mode == "strict" else (FLEXIBLE_PATTERN, -1)
    found = pattern.findall(text)
    if not found:
        return INVALID
    chosen = found[pick]
    if isinstance(chosen, tuple):
        chosen = next(group for group in chosen if group)
    return str(chosen).strip()


@scorer("exact_match")
def exact_match(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """1 when the response equals the target after normalisation.

    ``strip`` (on by default) trims both sides before anything else; with
    ``strip: false`` the verdict is lm-eval's exact_match exactly.
    """
    reader = OptionReader(options)
    target = reader.template("target")
    normalize = Normalizer(
        regexes_to_ignore=_compiled_list(reader, "regexes_to_ignore", ()),
        ignore_case=reader.boolean("ignore_case", False),
        ignore_punctuation=reader.boolean("ignore_punctuation", False),
    )
    strip = reader.boolean("strip", True)
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        answer, reference = completion.text, render(target, example.fields)
        if strip:
            answer, reference = answer.strip(), reference.strip()
        answer, reference = normalize(answer), normalize(reference)
        if answer == reference:
            return Score(1.0)
        return Score(0.0, f"{_shown(answer)} ≠ {_shown(reference)}")

    return score


@scorer("numeric_match")
def numeric_match(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """1 when the number extracted from the response matches the target's.

    The defaults are lm-eval's gsm8k task, whose reference is the dataset's whole
    answer text ("... #### 72"): ``(?s).*#### `` reduces it to "72".
    """
    reader = OptionReader(options)
    target = reader.template("target")
    mode = reader.choice("extract", ("strict", "flexible"), "flexible")
    normalize = Normalizer(
        regexes_to_ignore=_compiled_list(reader, "regexes_to_ignore", GSM8K_REGEXES_TO_IGNORE),
        ignore_case=reader.boolean("ignore_case", True),
    )
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        extracted = extract_number(completion.text, mode)
        answer = normalize(extracted)
        reference = normalize(render(target, example.fields))
        if answer == reference:
            return Score(1.0)
        if extracted == INVALID:
            missing = "no '#### <number>' found" if mode == "strict" else "no number found"
            return Score(0.0, f"{missing} (expected {_shown(reference)})")
        return Score(0.0, f"extracted {_shown(answer)} ≠ {_shown(reference)}")

    return score


@scorer("contains")
def contains(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """1 when the target text occurs in the response.

    An example whose target renders empty scores 0: every response "contains" the
    empty text, and counting that as a hit would hide a dataset gap.
    """
    reader = OptionReader(options)
    target = reader.template("target")
    ignore_case = reader.boolean("ignore_case", False)
    reader.finish()
    if not target:
        raise OptionError("target", "expected a non-empty text")

    def score(completion: Completion, example: Example) -> Score:
        needle, haystack = render(target, example.fields), completion.text
        if not needle:
            return Score(0.0, "the target is empty for this example")
        if ignore_case:
            needle, haystack = needle.casefold(), haystack.casefold()
        if needle in haystack:
            return Score(1.0)
        return Score(0.0, f"{_shown(needle)} not in the response")

    return score


@scorer("regex")
def regex(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """1 when ``pattern`` is found; with ``target``, when what it captured equals it.

    What is captured is the first group, or the whole match when the pattern has
    no group; only the first match counts.
    """
    reader = OptionReader(options)
    flags = 0
    for name in reader.text_list("flags", []):
        if name not in _REGEX_FLAGS:
            raise OptionError("flags", f"expected some of {', '.join(_REGEX_FLAGS)}, got {name!r}")
        flags |= _REGEX_FLAGS[name]
    pattern = _compiled(reader.text("pattern"), "pattern", flags)
    target = reader.template("target", None)
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        found = pattern.search(completion.text)
        if found is None:
            return Score(0.0, f"no match for {_shown(pattern.pattern)}")
        if target is None:
            return Score(1.0)
        captured = found.group(1 if pattern.groups else 0) or ""
        expected = render(target, example.fields)
        if captured == expected:
            return Score(1.0)
        return Score(0.0, f"captured {_shown(captured)} ≠ {_shown(expected)}")

    return score


def _compiled_list(
    reader: OptionReader, key: str, default: Sequence[str]
) -> tuple[re.Pattern[str], ...]:
    return tuple(_compiled(text, key) for text in reader.text_list(key, list(default)))


def _compiled(text: str, key: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(text, flags)
    except re.error as exc:
        raise OptionError(key, f"not a valid regular expression {text!r}: {exc}") from None


def _shown(text: str) -> str:
    """``text`` quoted for a detail line, cut short so a long response stays readable."""
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 1] + "…"
    return repr(text)
