"""Structured-output scorers: does the answer parse as JSON, does it fit a schema.

Models often wrap JSON in a Markdown fence, so the first ```json (or bare ```)
fenced block is taken when there is one; otherwise the whole response must parse.
Schemas are checked with jsonschema's Draft 2020-12 validator, and a failure is
explained by the most relevant error's JSON path and message.
"""

from __future__ import annotations

import json
import re
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
from pytest_expertbench.scorers._options import FieldError, json_field

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)


def json_text(response: str) -> str:
    """The first fenced JSON block of a response, else the whole response."""
    fenced = _FENCE.search(response)
    return (fenced.group(1) if fenced else response).strip()


def parse_json(response: str) -> tuple[Any, str | None]:
    """(value, None) when the response's JSON parses, else (None, why it does not)."""
    try:
        return json.loads(json_text(response)), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def schema_error(value: Any, schema: Mapping[str, Any]) -> str | None:
    """The most relevant validation error as "<json path>: <message>", or None."""
    from jsonschema import Draft202012Validator  # 45 ms: only benchmarks with schemas pay
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(value))
    return None if error is None else f"{error.json_path}: {error.message}"


def check_schema(schema: Any) -> str | None:
    """Why a schema is not a valid Draft 2020-12 schema, or None."""
    if not isinstance(schema, Mapping):
        return f"expected a JSON schema (a mapping), got {schema!r}"
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON schema: {exc.json_path}: {exc.message}"
    return None


@scorer("json_valid")
def json_valid(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    OptionReader(options).finish()

    def score(completion: Completion, example: Example) -> Score:
        _, error = parse_json(completion.text)
        return Score(0.0, error) if error else Score(1.0)

    return score


@scorer("json_schema")
def json_schema(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """The response's JSON fits ``schema`` (inline) or the schema in ``schema_field``."""
    reader = OptionReader(options)
    inline = reader.value("schema", None)
    schema_field = reader.text("schema_field", None)
    reader.finish()
    if (inline is None) == (schema_field is None):
        raise OptionError("schema", "expected exactly one of 'schema' and 'schema_field'")
    if inline is not None and (problem := check_schema(inline)):
        raise OptionError("schema", problem)

    def schema_of(example: Example) -> Mapping[str, Any]:
        if inline is not None:
            return dict(inline)
        schema = json_field(example, schema_field)
        if problem := check_schema(schema):
            raise FieldError(f"example {example.id}: field {schema_field!r}: {problem}")
        return dict(schema)

    def score(completion: Completion, example: Example) -> Score:
        schema = schema_of(example)
        value, error = parse_json(completion.text)
        if error is None:
            error = schema_error(value, schema)
        return Score(0.0, error) if error else Score(1.0)

    return score
