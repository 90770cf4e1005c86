"""json_valid and json_schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.records import Completion, Example, Score
from pytest_expertbench.scorers import OptionError, ScorerContext, get_scorer
from pytest_expertbench.scorers._options import FieldError

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "args": {
            "type": "object",
            "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
        },
    },
    "required": ["city"],
}


def score(kind: str, options: dict[str, Any], response: str, **fields: Any) -> Score:
    factory = get_scorer(kind)
    assert factory is not None
    function = factory(options, ScorerContext(benchmark_path=Path("bench.yaml")))
    return function(Completion(text=response), Example("7", 0, fields, "d"))


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ('{"a": 1}', 1.0),
        ('Here you go:\n```json\n{"a": [1, 2]}\n```\nDone.', 1.0),
        ("```\n[1, 2]\n```", 1.0),
        ("{'a': 1}", 0.0),
        ('Sure! {"a": 1}', 0.0),  # prose around unfenced JSON is not JSON
    ],
)
def test_json_valid(response: str, expected: float) -> None:
    assert score("json_valid", {}, response).value == expected


def test_json_valid_explains_a_parse_error() -> None:
    assert (
        score("json_valid", {}, '{"a": }').detail == "not JSON: Expecting value at line 1 column 7"
    )


def test_json_schema_inline_passes_a_fitting_answer() -> None:
    response = '```json\n{"city": "Oslo", "args": {"unit": "celsius"}}\n```'
    assert score("json_schema", {"schema": SCHEMA}, response) == Score(1.0)


def test_json_schema_detail_is_the_error_path_and_message() -> None:
    result = score(
        "json_schema", {"schema": SCHEMA}, '{"city": "Oslo", "args": {"unit": "kelvin"}}'
    )
    assert result.value == 0.0
    assert result.detail == "$.args.unit: 'kelvin' is not one of ['celsius', 'fahrenheit']"
    missing = score("json_schema", {"schema": SCHEMA}, "{}")
    assert missing.detail == "$: 'city' is a required property"


@pytest.mark.parametrize("as_text", [True, False])
def test_json_schema_from_a_field_given_as_json_text_or_parsed(as_text: bool) -> None:
    schema: Any = json.dumps(SCHEMA) if as_text else SCHEMA
    options = {"schema_field": "schema"}
    assert score("json_schema", options, '{"city": "Oslo"}', schema=schema).value == 1.0
    assert score("json_schema", options, '{"city": 3}', schema=schema).value == 0.0


def test_json_schema_from_a_broken_field_names_the_example_and_field() -> None:
    with pytest.raises(FieldError, match="example 7: field 'schema' is not JSON"):
        score("json_schema", {"schema_field": "schema"}, "{}", schema="{oops")
    with pytest.raises(FieldError, match="example 7: field 'schema': not a valid JSON schema"):
        score("json_schema", {"schema_field": "schema"}, "{}", schema={"type": 5})


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "schema"),
        ({"schema": SCHEMA, "schema_field": "s"}, "schema"),
        ({"schema": {"type": "nonsense"}}, "schema"),
        ({"schema": [1]}, "schema"),
        ({"schema_field": 3}, "schema_field"),
    ],
)
def test_json_schema_bad_options(options: dict[str, Any], key: str) -> None:
    factory = get_scorer("json_schema")
    assert factory is not None
    with pytest.raises(OptionError) as caught:
        factory(options, ScorerContext(benchmark_path=Path("bench.yaml")))
    assert caught.value.key == key


def test_json_valid_takes_no_options() -> None:
    factory = get_scorer("json_valid")
    assert factory is not None
    with pytest.raises(OptionError):
        factory({"strict": True}, ScorerContext(benchmark_path=Path("bench.yaml")))
