"""The tool-calling scorers against BFCL's rules, on the real BFCL data (shared datasets).

Each case is an answer built from a question's possible answer (the first accepted value
of every argument) and, optionally, one mutation of it. The expected verdict is encoded
per mutation kind (``VERDICT``), never computed by the code under test: a mutation is
only built where its kind alone decides BFCL's verdict (for instance, a float for an
integer parameter only where every accepted value is an integer).
bench/bfcl_agreement.py prints the same cases' agreement figures.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.records import Completion, Example, ToolCall
from pytest_expertbench.scorers import ScorerContext, get_scorer

CATEGORIES = ("simple_python", "multiple", "irrelevance")

# The verdict BFCL gives, per kind of answer.
VERDICT = {
    "accepted": 1.0,  # the first accepted value of every argument
    "optional_left_out": 1.0,  # not required by the schema, and "" is accepted
    "normalised_string": 1.0,  # a string in upper case, padded with spaces and a full stop
    "lone_int_for_float": 1.0,  # 5 for a float parameter whose answer is 5.0
    "wrong_name": 0.0,
    "other_tool": 0.0,  # another of the question's tools, same arguments
    "missing_required": 0.0,
    "required_blank_left_out": 0.0,  # required, though "" is among its accepted values
    "expected_left_out": 0.0,  # not required by the schema, but "" is not accepted
    "extra_argument": 0.0,
    "wrong_value": 0.0,
    "float_for_int": 0.0,  # 5.0 for an integer parameter whose answer is 5
    "int_in_float_list": 0.0,  # [2, 3.5] for an array of floats answered [2.0, 3.5]
    "string_for_number": 0.0,
    "bool_for_int": 0.0,
    "int_for_bool": 0.0,
    "no_call": 0.0,
    "two_calls": 0.0,  # the accepted call, twice
    # irrelevance: no tool fits
    "irrelevance_text": 1.0,  # a plain answer
    "irrelevance_malformed_call": 1.0,  # arguments that are not JSON: BFCL sees no call
    "irrelevance_call": 0.0,
    "irrelevance_two_calls": 0.0,
}


@dataclass(frozen=True)
class Case:
    category: str
    id: str
    kind: str
    completion: Completion
    example: Example

    @property
    def verdict(self) -> float:
        return VERDICT[self.kind]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def first_choice(accepted: Any) -> Any:
    """A concrete value from a possible answer: the first alternative of each argument."""
    if isinstance(accepted, Mapping):
        return {
            name: first_choice(next(v for v in options if v != ""))
            for name, options in accepted.items()
            if any(v != "" for v in options)
        }
    if isinstance(accepted, list):
        return [first_choice(item) for item in accepted]
    return accepted


def call(name: str, arguments: Any, times: int = 1) -> Completion:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Completion(text="", tool_calls=(ToolCall(name, raw),) * times)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _given(options: list[Any]) -> list[Any]:
    return [o for o in options if o != ""]


def _wrong_value(value: Any, options: list[Any]) -> Any:
    """A value of the same type that no accepted value equals, or None."""
    if isinstance(value, bool):
        wrong: Any = not value
    elif _is_int(value):
        wrong = value + 1000
    elif isinstance(value, float):
        wrong = value + 1000.5
    elif isinstance(value, str):
        if any(isinstance(o, str) and "zzzq" in o.lower() for o in options):
            return None
        return "zzzq" + value
    elif isinstance(value, list) and value:
        wrong = [*value, value[0]]
        if any(isinstance(o, list) and len(o) == len(wrong) for o in options):
            return None
        return wrong
    else:
        return None
    return None if wrong in options else wrong


def _mutations(
    name: str,
    accepted: Mapping[str, list[Any]],
    schema: Mapping[str, Any],
    tools: list[Mapping[str, Any]],
) -> Iterator[tuple[str, Completion]]:
    """(kind, completion) for every kind this question allows, one of each."""
    base = first_choice(accepted)
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    types = {p: properties.get(p, {}).get("type") for p in accepted}
    yield "accepted", call(name, base)
    yield "wrong_name", call(name + "_zz", base)
    yield "extra_argument", call(name, {**base, "zz_extra": 1})
    yield "no_call", Completion(text="")
    yield "two_calls", call(name, base, times=2)
    others = [t["name"] for t in tools if t["name"].replace(".", "_") != name.replace(".", "_")]
    if others:
        yield "other_tool", call(others[0], base)

    def first(kind: str, fits: Callable[[str, Any, list[Any]], bool], make: Any) -> None:
        for param, value in base.items():
            if fits(param, value, accepted[param]):
                found.append((kind, call(name, {**base, param: make(value)})))
                return

    def dropped(kind: str, fits: Callable[[str, list[Any]], bool]) -> None:
        for param in base:
            if fits(param, accepted[param]):
                found.append((kind, call(name, {k: v for k, v in base.items() if k != param})))
                return

    found: list[tuple[str, Completion]] = []
    dropped("optional_left_out", lambda p, o: p not in required and "" in o)
    dropped("missing_required", lambda p, o: p in required)
    dropped("required_blank_left_out", lambda p, o: p in required and "" in o)
    dropped("expected_left_out", lambda p, o: p not in required and "" not in o)
    first(
        "normalised_string",
        lambda p, v, o: types[p] == "string" and isinstance(v, str) and v.isascii(),
        lambda v: "  " + v.upper() + ".",
    )
    first(
        "lone_int_for_float",
        lambda p, v, o: types[p] == "float" and isinstance(v, float) and v.is_integer(),
        int,
    )
    first(
        "float_for_int",
        lambda p, v, o: types[p] == "integer" and all(_is_int(x) for x in _given(o)),
        float,
    )
    first(
        "int_in_float_list",
        lambda p, v, o: (
            types[p] == "array"
            and properties[p].get("items", {}).get("type") == "float"
            and "" not in o
            and all(isinstance(x, list) and x and all(isinstance(e, float) for e in x) for x in o)
        ),
        lambda v: [round(v[0]), *v[1:]],
    )
    first(
        "string_for_number",
        lambda p, v, o: types[p] in ("integer", "float") and all(_is_number(x) for x in _given(o)),
        str,
    )
    first(
        "bool_for_int",
        lambda p, v, o: types[p] == "integer" and all(_is_int(x) for x in _given(o)),
        lambda v: True,
    )
    first(
        "int_for_bool",
        lambda p, v, o: types[p] == "boolean" and all(isinstance(x, bool) for x in _given(o)),
        int,
    )
    for param, value in base.items():
        wrong = _wrong_value(value, accepted[param])
        if wrong is not None:
            found.append(("wrong_value", call(name, {**base, param: wrong})))
            break
    yield from found


def bfcl_cases(shared: Path) -> list[Case]:
    """Every case of the three categories, from the shared BFCL files."""
    folder = shared / "bfcl"
    cases = []
    for category in CATEGORIES:
        questions = _lines(folder / f"BFCL_v4_{category}.json")
        answers: dict[str, Any] = {}
        if category != "irrelevance":
            answers = {
                row["id"]: row["ground_truth"]
                for row in _lines(folder / f"possible_answer_BFCL_v4_{category}.json")
            }
        for question in questions:
            tools = question["function"]
            expected = answers.get(question["id"], [])
            row = Example(question["id"], 0, {"expected": expected, "tools": tools}, "bfcl")
            if not expected:
                tool = tools[0]["name"]
                kinds = [
                    ("irrelevance_text", Completion(text="No tool can answer that.")),
                    ("irrelevance_malformed_call", call(tool, "{not json")),
                    ("irrelevance_call", call(tool, {})),
                    ("irrelevance_two_calls", call(tool, {}, times=2)),
                ]
            else:
                ((name, accepted),) = expected[0].items()
                schema = next(t for t in tools if t["name"] == name)["parameters"]
                kinds = list(_mutations(name, accepted, schema, tools))
            cases += [Case(category, question["id"], k, c, row) for k, c in kinds]
    return cases


def scorer(kind: str, options: Mapping[str, Any]) -> Any:
    factory = get_scorer(kind)
    assert factory is not None
    return factory(options, ScorerContext(benchmark_path=Path("bfcl.yaml"), tools=()))


@pytest.fixture
def cases(shared_datasets: Path) -> list[Case]:
    return _cached_cases(shared_datasets)


@functools.cache
def _cached_cases(shared: Path) -> list[Case]:
    return bfcl_cases(shared)


def test_every_kind_of_answer_is_built_from_the_data(cases: list[Case]) -> None:
    counts = Counter((c.category, c.kind) for c in cases)
    assert counts["simple_python", "accepted"] == 400
    assert counts["multiple", "accepted"] == 200
    assert counts["irrelevance", "irrelevance_call"] == 240
    built = {kind for _, kind in counts}
    assert built == set(VERDICT), set(VERDICT) - built


def test_argument_match_gives_bfcl_verdicts(cases: list[Case]) -> None:
    match = scorer("argument_match", {"expected_field": "expected", "tools_field": "tools"})
    wrong = [
        (c.id, c.kind, match(c.completion, c.example).detail)
        for c in cases
        if match(c.completion, c.example).value != c.verdict
    ]
    assert wrong == []


def test_a_wrong_answer_says_why(cases: list[Case]) -> None:
    match = scorer("argument_match", {"expected_field": "expected", "tools_field": "tools"})
    expected_words = {
        "float_for_int": "is not of type 'integer'",
        "int_in_float_list": "is not of type 'array'",
        "bool_for_int": "is not of type 'integer'",
        "required_blank_left_out": "missing required argument",
        "extra_argument": "unexpected argument 'zz_extra'",
        "two_calls": "made 2 tool call(s), expected 1",
    }
    for case in cases:
        if case.kind in expected_words:
            detail = match(case.completion, case.example).detail or ""
            assert expected_words[case.kind] in detail, (case.id, detail)


def test_fallback_follows_bfcls_relevance_rule(cases: list[Case]) -> None:
    fallback = scorer("fallback", {})
    strict = scorer("fallback", {"count_malformed_calls": True})
    for case in cases:
        if case.category == "irrelevance":
            assert fallback(case.completion, case.example).value == case.verdict, case.id
            if case.kind == "irrelevance_malformed_call":
                assert strict(case.completion, case.example).value == 0.0, case.id


def test_tool_selection_agrees_on_the_name_kinds(cases: list[Case]) -> None:
    selection = scorer("tool_selection", {"expected_field": "expected"})
    for case in cases:
        if case.kind in ("accepted", "wrong_name", "other_tool", "no_call", "two_calls"):
            assert selection(case.completion, case.example).value == case.verdict, case.id
