"""Tool-calling scorers on hand-made cases and on BFCL simple_python possible answers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.records import Completion, Example, Score, ToolCall
from pytest_expertbench.scorers import OptionError, ScorerContext, get_scorer
from pytest_expertbench.scorers.tools import calls_of, to_json_schema

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
CONVERT = {  # BFCL style: bare function, "dict" and "float"
    "name": "convert.currency",
    "parameters": {
        "type": "dict",
        "properties": {"amount": {"type": "float"}, "to": {"type": "string"}},
        "required": ["amount", "to"],
    },
}
EXPECTED_WEATHER = [{"get_weather": {"city": ["Oslo"], "unit": ["celsius", ""]}}]


def scorer(
    kind: str, options: Mapping[str, Any], tools: tuple[Any, ...] = (WEATHER, CONVERT)
) -> Any:
    factory = get_scorer(kind)
    assert factory is not None
    return factory(options, ScorerContext(benchmark_path=Path("bench.yaml"), tools=tools))


def call(name: str, arguments: Any) -> Completion:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Completion(text="", tool_calls=(ToolCall(name, raw),))


def example(expected: Any = EXPECTED_WEATHER, **fields: Any) -> Example:
    return Example("3", 0, {"expected": expected, **fields}, "d")


def test_calls_are_read_from_tool_calls_or_from_json_in_text() -> None:
    native = calls_of(call("get_weather", {"city": "Oslo"}))
    fenced = calls_of(
        Completion(
            text='Calling:\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'
        )
    )
    listed = calls_of(
        Completion(text='[{"name": "a", "arguments": "{}"}, {"name": "b", "parameters": {}}]')
    )
    in_prose = calls_of(Completion(text='I will call {"name": "a", "arguments": {"x": 1}} now.'))
    assert native == fenced
    assert native[0].arguments == {"city": "Oslo"}
    assert [c.name for c in listed] == ["a", "b"]
    assert in_prose[0].arguments == {"x": 1}
    assert calls_of(Completion(text="It is sunny in Oslo.")) == []
    assert calls_of(Completion(text='{"city": "Oslo"}')) == []  # JSON, but not a call


def test_bfcl_types_become_json_schema_types() -> None:
    schema = {
        "type": "dict",
        "properties": {
            "type": {"type": "string"},  # a parameter named "type" stays a parameter
            "xs": {"type": "tuple", "items": {"type": "float"}},
            "any": {"type": "any"},
        },
    }
    assert to_json_schema(schema) == {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "xs": {"type": "array", "items": {"type": "number"}},
            "any": {},
        },
    }


@pytest.mark.parametrize(
    ("completion", "expected", "value"),
    [
        (call("get_weather", {"city": "Oslo"}), EXPECTED_WEATHER, 1.0),
        (call("get_time", {}), EXPECTED_WEATHER, 0.0),
        (Completion(text="Sunny."), EXPECTED_WEATHER, 0.0),
        (Completion(text="No tool fits."), "[]", 1.0),
        (call("get_weather", {"city": "Oslo"}), [], 0.0),
        (call("convert_currency", {}), [{"convert.currency": {}}], 1.0),  # OpenAI forbids dots
    ],
)
def test_tool_selection(completion: Completion, expected: Any, value: float) -> None:
    assert (
        scorer("tool_selection", {"expected_field": "expected"})(
            completion, example(expected)
        ).value
        == value
    )


def test_tool_selection_detail() -> None:
    result = scorer("tool_selection", {"expected_field": "expected"})(call("x", {}), example([]))
    assert result == Score(0.0, "called ['x'], expected no tool")


@pytest.mark.parametrize(
    ("arguments", "value", "detail"),
    [
        ({"city": "Oslo"}, 1.0, None),
        ({"city": " oslo ", "unit": "Celsius"}, 1.0, None),  # strings: case and spaces ignored
        ({"city": "Oslo", "unit": "kelvin"}, 0.0, "argument 'unit' = \"kelvin\" is not one of"),
        ({"unit": "celsius"}, 0.0, "missing required argument 'city'"),
        ({"city": "Oslo", "days": 3}, 0.0, "unexpected argument 'days'"),
        ("{not json", 0.0, "arguments are not JSON"),
    ],
)
def test_argument_match(arguments: Any, value: float, detail: str | None) -> None:
    result = scorer("argument_match", {"expected_field": "expected"})(
        call("get_weather", arguments), example()
    )
    assert result.value == value
    assert (result.detail is None) if detail is None else (detail in (result.detail or ""))


def test_argument_match_compares_numbers_as_numbers_and_nested_alternatives() -> None:
    expected = [{"convert.currency": {"amount": [100], "to": ["EUR"]}}]
    match = scorer("argument_match", {"expected_field": "expected"})
    assert (
        match(call("convert.currency", {"amount": 100.0, "to": "eur"}), example(expected)).value
        == 1.0
    )
    assert (
        match(call("convert.currency", {"amount": "100", "to": "EUR"}), example(expected)).value
        == 0.0
    )
    assert (
        match(
            call("convert.currency", {"amount": True, "to": "EUR"}),
            example([{"convert.currency": {"amount": [1], "to": ["EUR"]}}]),
        ).value
        == 0.0
    )
    nested = [{"f": {"where": [{"city": ["Oslo", "Bergen"], "zip": [""]}], "ids": [[1, 2]]}}]
    assert (
        match(call("f", {"where": {"city": "Bergen"}, "ids": [1, 2]}), example(nested)).value == 1.0
    )
    assert (
        match(call("f", {"where": {"city": "Bergen"}, "ids": [2, 1]}), example(nested)).value == 0.0
    )


TRIP = {  # BFCL style, one parameter of each kind
    "name": "plan.trip",
    "parameters": {
        "type": "dict",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "budget": {"type": "float"},
            "weights": {"type": "array", "items": {"type": "float"}},
            "pets": {"type": "boolean"},
            "hotel": {"type": "dict", "properties": {"stars": {"type": "integer"}}},
            "note": {"type": "string"},
        },
        "required": ["city", "days"],
    },
}
TRIP_ANSWER = {
    "city": ["New York"],
    "days": [3],
    "budget": [500.0, ""],
    "weights": [[0.5, 2.0], ""],
    "pets": [False, ""],
    "hotel": [{"stars": [4, 5]}, ""],
    "note": ["", "none"],
}


@pytest.mark.parametrize(
    ("arguments", "value", "detail"),
    [
        ({"city": "new-york", "days": 3}, 1.0, None),  # BFCL's normalisation: " ,./-_*^"
        ({"city": "NEW YORK.", "days": 3, "budget": 500}, 1.0, None),  # a lone int for a float
        ({"city": "NewYork!", "days": 3}, 0.0, "'city'"),  # "!" is not removed
        ({"city": "New York", "days": 3.0}, 0.0, "'days' = 3.0 is not of type 'integer'"),
        ({"city": "New York", "days": True}, 0.0, "'days' = true is not of type 'integer'"),
        ({"city": "New York", "days": "3"}, 0.0, "is not of type 'integer'"),
        ({"city": "New York", "days": 3, "pets": 0}, 0.0, "'pets' = 0 is not of type 'boolean'"),
        ({"city": "New York", "days": 3, "weights": [0.5, 2.0]}, 1.0, None),
        # BFCL skips the element check when "" is among the accepted values; 2 == 2.0
        ({"city": "New York", "days": 3, "weights": [0.5, 2]}, 1.0, None),
        ({"city": "New York", "days": 3, "hotel": {"stars": 5}}, 1.0, None),
        ({"city": "New York", "days": 3, "hotel": {"stars": 3}}, 0.0, "'hotel'"),
        ({"city": "New York", "days": 3, "hotel": {"beds": 2}}, 0.0, "'hotel'"),
        ({"city": "New York", "days": 3, "note": "None"}, 1.0, None),
        ({"city": "New York"}, 0.0, "missing required argument 'days'"),
    ],
)
def test_argument_match_applies_bfcl_rules(
    arguments: dict[str, Any], value: float, detail: str | None
) -> None:
    match = scorer("argument_match", {"expected_field": "expected"}, tools=(TRIP,))
    result = match(call("plan_trip", arguments), example([{"plan.trip": TRIP_ANSWER}]))
    assert result.value == value, result.detail
    assert (result.detail is None) if detail is None else (detail in (result.detail or ""))


def test_an_int_element_in_a_float_array_is_a_type_error() -> None:
    answer = {**TRIP_ANSWER, "weights": [[0.5, 2.0]]}
    match = scorer("argument_match", {"expected_field": "expected"}, tools=(TRIP,))
    arguments = {"city": "New York", "days": 3, "weights": [0.5, 2]}
    result = match(call("plan.trip", arguments), example([{"plan.trip": answer}]))
    assert result == Score(0.0, "plan.trip: argument 'weights' = [0.5, 2] is not of type 'array'")
    arguments["weights"] = [0.5, 2.0]
    assert match(call("plan.trip", arguments), example([{"plan.trip": answer}])) == Score(1.0)


def test_argument_match_without_tools_checks_values_only() -> None:
    match = scorer("argument_match", {"expected_field": "expected"}, tools=())
    row = example([{"plan.trip": TRIP_ANSWER}])
    assert match(call("plan.trip", {"city": "new york", "days": 3.0}), row).value == 1.0
    assert match(call("plan.trip", {"city": "new york"}), row).value == 0.0  # [3]: no ""
    # the type is the first accepted value's, a number of either kind reading as float
    assert match(call("plan.trip", {"city": "NY", "days": 3}), row).value == 0.0
    assert match(call("plan.trip", {"city": "new york", "days": True}), row).detail == (
        "plan.trip: argument 'days' = true is not of type 'float'"
    )
    assert match(call("plan.trip", {"city": 5, "days": 3}), row).value == 0.0
    lists = example([{"f": {"xs": [[1, 2]], "opts": [{"a": ["x"]}]}}])
    assert match(call("f", {"xs": [1.0, 2.0], "opts": {"a": "X"}}), lists).value == 1.0
    assert match(call("f", {"xs": ["1", 2], "opts": {"a": "X"}}), lists).value == 0.0


def test_a_required_argument_may_not_be_left_out_even_if_blank_is_accepted() -> None:
    answer = {**TRIP_ANSWER, "days": [3, ""]}
    match = scorer("argument_match", {"expected_field": "expected"}, tools=(TRIP,))
    result = match(call("plan.trip", {"city": "New York"}), example([{"plan.trip": answer}]))
    assert result == Score(0.0, "plan.trip: missing required argument 'days'")


def test_openai_number_and_object_types_read_as_bfcl_float_and_dict() -> None:
    openai = {
        "type": "function",
        "function": {
            "name": "pay",
            "parameters": {
                "type": "object",
                "properties": {"amount": {"type": "number"}, "meta": {"type": "object"}},
                "required": ["amount"],
            },
        },
    }
    match = scorer("argument_match", {"expected_field": "expected"}, tools=(openai,))
    row = example([{"pay": {"amount": [10.0], "meta": [{"ref": ["A-1"]}, ""]}}])
    assert match(call("pay", {"amount": 10, "meta": {"ref": "a1"}}), row).value == 1.0
    assert match(call("pay", {"amount": "10"}), row).value == 0.0


def test_unparsable_arguments_are_no_call_for_a_question_no_tool_fits() -> None:
    malformed = call("get_weather", "{not json")
    match = scorer("argument_match", {"expected_field": "expected"})
    assert match(malformed, example([])) == Score(1.0)  # BFCL's relevance rule
    assert scorer("fallback", {})(malformed, example([])) == Score(1.0)
    strict = {"expected_field": "expected", "count_malformed_calls": True}
    assert scorer("argument_match", strict)(malformed, example([])).value == 0.0
    assert scorer("fallback", {"count_malformed_calls": True})(malformed, example([])) == Score(
        0.0, "called get_weather"
    )
    assert match(call("get_weather", {}), example([])) == Score(
        0.0, "made 1 tool call(s), expected none"
    )


def test_argument_match_pairs_parallel_calls_in_any_order() -> None:
    expected = [{"get_weather": {"city": ["Oslo"]}}, {"get_weather": {"city": ["Rome"]}}]
    both = Completion(
        text="",
        tool_calls=(
            ToolCall("get_weather", '{"city": "Rome"}'),
            ToolCall("get_weather", '{"city": "Oslo"}'),
        ),
    )
    match = scorer("argument_match", {"expected_field": "expected"})
    assert match(both, example(expected)).value == 1.0
    assert match(call("get_weather", {"city": "Oslo"}), example(expected)).detail == (
        "made 1 tool call(s), expected 2"
    )
    assert match(Completion(text="none fits"), example([])).value == 1.0


@pytest.mark.parametrize(
    ("name", "arguments", "value", "detail"),
    [
        ("get_weather", {"city": "Oslo", "unit": "celsius"}, 1.0, None),
        (
            "get_weather",
            {"city": "Oslo", "unit": "kelvin"},
            0.0,
            "get_weather: $.unit: 'kelvin' is not one of",
        ),
        ("get_weather", {}, 0.0, "get_weather: $: 'city' is a required property"),
        ("convert.currency", {"amount": 5, "to": "EUR"}, 1.0, None),  # an integer is a number
        (
            "convert_currency",
            {"amount": "5", "to": "EUR"},
            0.0,
            "$.amount: '5' is not of type 'number'",
        ),
        ("get_time", {}, 0.0, "get_time: no such tool"),
        ("get_weather", "[1]", 0.0, "arguments are not an object"),
    ],
)
def test_argument_validity(name: str, arguments: Any, value: float, detail: str | None) -> None:
    result = scorer("argument_validity", {})(call(name, arguments), example())
    assert result.value == value
    assert (result.detail is None) if detail is None else (detail in (result.detail or ""))


def test_argument_validity_without_a_call_scores_0() -> None:
    assert scorer("argument_validity", {})(Completion(text="hi"), example()) == Score(
        0.0, "no tool call"
    )


def test_schema_compliance_checks_names_required_and_types_but_not_enums() -> None:
    comply = scorer("schema_compliance", {})
    assert comply(call("get_weather", {"city": "Oslo", "unit": "kelvin"}), example()).value == 1.0
    assert comply(call("get_weather", {"city": "Oslo", "days": 2}), example()).detail == (
        "get_weather: unknown argument 'days'"
    )
    assert comply(call("get_weather", {"unit": "celsius"}), example()).detail == (
        "get_weather: missing required argument 'city'"
    )
    assert comply(call("get_weather", {"city": 3}), example()).detail == (
        "get_weather: $.city: 3 is not of type 'string'"
    )


def test_per_example_tools_come_from_tools_field() -> None:
    validity = scorer("argument_validity", {"tools_field": "tools"}, tools=())
    row = example(tools=json.dumps([CONVERT]))
    assert validity(call("convert.currency", {"amount": 1.5, "to": "EUR"}), row).value == 1.0
    assert (
        validity(call("get_weather", {"city": "Oslo"}), row).detail == "get_weather: no such tool"
    )


def test_fallback_scores_the_absence_of_a_call() -> None:
    fallback = scorer("fallback", {})
    assert fallback(Completion(text="No tool can do that."), example([])) == Score(1.0)
    assert fallback(call("get_weather", {"city": "Oslo"}), example([])) == Score(
        0.0, "called get_weather"
    )


@pytest.mark.parametrize(
    ("kind", "options", "tools", "key"),
    [
        ("tool_selection", {}, (WEATHER,), "expected_field"),
        ("argument_match", {"expected_field": 1}, (WEATHER,), "expected_field"),
        ("argument_validity", {}, (), "tools_field"),
        ("schema_compliance", {}, ({"description": "nameless"},), "tools_field"),
        ("fallback", {"expected_field": "e"}, (), "expected_field"),
        ("fallback", {"count_malformed_calls": "yes"}, (), "count_malformed_calls"),
        ("argument_match", {"expected_field": "e", "tools_field": 3}, (), "tools_field"),
    ],
)
def test_bad_options(kind: str, options: dict[str, Any], tools: tuple[Any, ...], key: str) -> None:
    with pytest.raises(OptionError) as caught:
        scorer(kind, options, tools)
    assert caught.value.key == key


# --------------------------------------------------------------------------- BFCL

# Accepted answers in BFCL's own data that contradict that question's schema: the
# AST checker accepts them, a JSON Schema validator rightly does not.
BFCL_SCHEMA_CONFLICTS = {
    "simple_python_17": "'formatted' is required but may be left out",
    "simple_python_149": "company_names accepts [['Apple'], ['Microsoft']] for an array of strings",
    "simple_python_200": "'fuel_efficiency' is required but may be left out",
    "simple_python_307": "venue accepts true for a string",
    "simple_python_358": "diet accepts 'GF' and 'gluten free' outside its enum",
}


def _first_choice(accepted: Any) -> Any:
    """A concrete value from a possible answer: the first alternative of each argument."""
    if isinstance(accepted, Mapping):
        return {
            name: _first_choice(next(v for v in options if v != ""))
            for name, options in accepted.items()
            if any(v != "" for v in options)
        }
    if isinstance(accepted, list):
        return [_first_choice(item) for item in accepted]
    return accepted


def _bfcl_calls(shared_datasets: Path) -> list[tuple[Example, str, list[dict[str, Any]]]]:
    """Per question: the example, the tool name, and every call its possible answer accepts."""
    folder = shared_datasets / "bfcl"
    lines = (folder / "BFCL_v4_simple_python.json").read_text().splitlines()
    questions = {row["id"]: row for row in map(json.loads, lines)}
    answers = (folder / "possible_answer_BFCL_v4_simple_python.json").read_text().splitlines()
    cases = []
    for answer in map(json.loads, answers):
        ((name, accepted),) = answer["ground_truth"][0].items()
        base = _first_choice(accepted)
        variants = []
        for argument, options in accepted.items():
            for option in options:
                variant = {k: v for k, v in base.items() if k != argument}
                if option != "":
                    variant[argument] = _first_choice(option)
                variants.append(variant)
        fields = {"expected": answer["ground_truth"], "tools": questions[answer["id"]]["function"]}
        cases.append((Example(answer["id"], 0, fields, "d"), name, variants))
    return cases


def _wrong(value: Any) -> Any:
    if isinstance(value, bool):
        return "wrong"  # both true and false may be accepted
    if isinstance(value, int | float):
        return value + 1000
    if isinstance(value, str):
        return value + " (wrong)"
    if isinstance(value, list):
        return [*value, "extra"]
    return {"unexpected": 1}


def test_bfcl_possible_answers_score_1_and_a_wrong_argument_scores_0(shared_datasets: Path) -> None:
    match = scorer("argument_match", {"expected_field": "expected", "tools_field": "tools"})
    selection = scorer("tool_selection", {"expected_field": "expected"})
    validity = scorer("argument_validity", {"tools_field": "tools"})
    cases = _bfcl_calls(shared_datasets)
    assert len(cases) == 400
    invalid = set()
    for row, name, variants in cases:
        (tool,) = row.fields["tools"]
        for arguments in variants:
            completion = call(name, arguments)
            # BFCL: a required argument may not be left out, even where "" is accepted
            given = all(p in arguments for p in tool["parameters"]["required"])
            assert match(completion, row).value == (1.0 if given else 0.0), (row.id, arguments)
            assert selection(completion, row) == Score(1.0), row.id
            if validity(completion, row).value != 1.0:
                invalid.add(row.id)
        first, *_ = variants
        argument = next(iter(first))
        wrong = call(name, {**first, argument: _wrong(first[argument])})
        assert match(wrong, row).value == 0.0, (row.id, argument)
    assert invalid == set(BFCL_SCHEMA_CONFLICTS)
