"""The ``judge`` scorer: another model grades the answer with a rubric.

Some answers have no reference to match (an explanation, a tutoring turn, a
summary); a second model with a rubric is then the practical grader. The judge is
any target of the targets file and is asked through the run's engine and response
cache, so a judgement is deterministic (temperature 0 by default) and paid once.
Its request is keyed ``judge:<target>`` / ``<benchmark file stem>:<example id>``,
apart from the answers of the model under test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_expertbench.records import Completion, Example, Request, Score, TargetError
from pytest_expertbench.scorers import (
    Asker,
    OptionError,
    OptionReader,
    ScoreFunction,
    ScorerContext,
    ScoringError,
    scorer,
)
from pytest_expertbench.template import render

# The field the rubric reads the model's answer from; it is not a dataset column.
RESPONSE_FIELD = "response"
DEFAULT_GENERATION: Mapping[str, Any] = {"temperature": 0, "max_tokens": 256}
PARSE_MODES = ("score", "verdict")
# A number, with the "/ 10" or "out of 10" that may follow it consumed, so that
# "Score: 8/10" reads 8 and not 10.
_NUMBER = re.compile(
    r"(?<![\w.])(-?\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*\d+(?:\.\d+)?)?", re.IGNORECASE
)
_SHOWN_CHARS = 80


class JudgeError(ScoringError):
    """The judge could not be asked: the item errors with this one-line reason."""


@dataclass(frozen=True)
class _Verdict:
    """How a ``verdict`` judge's words are read: PASS and not FAIL is a pass."""

    pass_word: re.Pattern[str]
    fail_word: re.Pattern[str]


@dataclass(frozen=True)
class _Judge:
    target: str
    benchmark_stem: str
    rubric: str
    system: str | None
    generation: Mapping[str, Any]
    scale: float
    verdict: _Verdict | None
    asker: Asker | None

    def __call__(self, completion: Completion, example: Example) -> Score:
        answer = self.ask(self.request(completion, example)).text
        return self.read(answer)

    def request(self, completion: Completion, example: Example) -> Request:
        fields = {**example.fields, RESPONSE_FIELD: completion.text}
        return Request(
            benchmark=f"judge:{self.target}",
            example_id=f"{self.benchmark_stem}:{example.id}",
            prompt=render(self.rubric, fields),
            system=render(self.system, fields) if self.system is not None else None,
            generation=self.generation,
            fields=fields,
        )

    def ask(self, request: Request) -> Completion:
        if self.asker is None:
            raise JudgeError(
                f"judge {self.target!r}: no targets to ask "
                "(the benchmark was loaded without a run's targets file)"
            )
        try:
            return self.asker.ask(self.target, request)
        except TargetError as exc:
            raise JudgeError(f"judge {self.target!r} failed: {exc.message}") from None

    def read(self, answer: str) -> Score:
        if self.verdict is not None:
            return read_verdict(answer, self.verdict.pass_word, self.verdict.fail_word)
        return read_score(answer, self.scale)


def read_score(answer: str, scale: float) -> Score:
    """The last number of the answer over ``scale``, within [0, 1]."""
    numbers = _NUMBER.findall(answer)
    if not numbers:
        return Score(0.0, f"judge answer had no score: {_shown(answer)}")
    value = min(1.0, max(0.0, float(numbers[-1]) / scale))
    return Score(value, None if value >= 1.0 else f"judge said: {_shown(answer)}")


def read_verdict(answer: str, pass_word: re.Pattern[str], fail_word: re.Pattern[str]) -> Score:
    """1 when the pass word is there and the fail word is not (whole words, any case)."""
    passed, failed = bool(pass_word.search(answer)), bool(fail_word.search(answer))
    if passed and not failed:
        return Score(1.0)
    if not passed and not failed:
        return Score(0.0, f"judge answer had no verdict: {_shown(answer)}")
    return Score(0.0, f"judge said: {_shown(answer)}")


def word_pattern(word: str) -> re.Pattern[str]:
    """``word`` as a whole word, any case; an edge that is not a letter or digit is free."""
    before = r"(?<!\w)" if word[:1].isalnum() or word[:1] == "_" else ""
    after = r"(?!\w)" if word[-1:].isalnum() or word[-1:] == "_" else ""
    return re.compile(before + re.escape(word) + after, re.IGNORECASE)


def _shown(answer: str) -> str:
    flat = " ".join(answer.split())
    return "'" + (flat if len(flat) <= _SHOWN_CHARS else flat[:_SHOWN_CHARS] + "…") + "'"


@scorer("judge", fills=(RESPONSE_FIELD,))
def judge(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """Ask the ``target`` judge with the ``rubric``; read its score or verdict."""
    reader = OptionReader(options)
    target = _target(reader, context.asker)
    rubric: str = reader.template("rubric")
    system: str | None = reader.template("system", None)
    parse = reader.choice("parse", PARSE_MODES, "score")
    generation = _generation(reader)
    scale, verdict = 10.0, None
    if parse == "score":
        _only_with(reader, "verdict", ("pass", "fail"))
        scale = reader.number("scale", 10.0, positive=True)
    else:
        _only_with(reader, "score", ("scale",))
        verdict = _verdict(reader)
    reader.finish()
    return _Judge(
        target=target,
        benchmark_stem=context.benchmark_path.stem,
        rubric=rubric,
        system=system,
        generation=generation,
        scale=scale,
        verdict=verdict,
        asker=context.asker,
    )


def _target(reader: OptionReader, asker: Asker | None) -> str:
    target: str = reader.text("target")
    if not target:
        raise OptionError("target", "expected the name of a target of the targets file")
    if asker is not None:
        if target not in asker.names():
            known = ", ".join(sorted(asker.names())) or "none"
            raise OptionError("target", f"unknown target {target!r} (known: {known})")
        asker.reserve(target)
    return target


def _generation(
    reader: OptionReader, default: Mapping[str, Any] = DEFAULT_GENERATION
) -> Mapping[str, Any]:
    value = reader.value("generation", default)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise OptionError("generation", f"expected a mapping of settings, got {value!r}")
    return dict(value)


def _only_with(reader: OptionReader, mode: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if reader.has(key):
            raise OptionError(key, f"only used with parse: {mode}")


def _verdict(reader: OptionReader) -> _Verdict:
    words = {key: str(reader.text(key, key.upper())).strip() for key in ("pass", "fail")}
    for key, word in words.items():
        if not word:
            raise OptionError(key, "expected a non-empty word")
    if words["pass"].casefold() == words["fail"].casefold():
        raise OptionError("fail", "must differ from the pass word")
    return _Verdict(word_pattern(words["pass"]), word_pattern(words["fail"]))
