"""Tool-calling scorers: the right tool, valid arguments, the expected arguments, or none.

A call is read from the completion's OpenAI ``tool_calls`` or, when there are none,
from JSON in the text (a ``{"name": …, "arguments": …}`` object or a list of them,
fenced or not), so prompted models and native tool callers are scored alike.
Expected calls use the Berkeley Function Calling Leaderboard ``possible_answer``
format, ``[{"func": {"arg": [accepted values…]}}]`` with ``""`` meaning "may be left
out"; an empty list means no tool fits. Tool schemas come in OpenAI format or as
BFCL functions, whose ``dict``/``float``/``tuple`` types are mapped to JSON Schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
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
from pytest_expertbench.scorers._options import FieldError, json_field
from pytest_expertbench.scorers.bfcl import calls_error, contains_call
from pytest_expertbench.scorers.structured import json_text, schema_error

_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array"}
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAX_SCANNED_BRACES = 200


@dataclass(frozen=True)
class ParsedCall:
    """One call the model made; ``arguments`` is None when they did not parse."""

    name: str
    arguments: Any
    error: str | None = None


ExpectedCall = tuple[str, Mapping[str, list[Any]]]
Schemas = Mapping[str, Mapping[str, Any]]


# --------------------------------------------------------------------------- reading calls


def calls_of(completion: Completion) -> list[ParsedCall]:
    """The completion's tool calls, else the calls written as JSON in its text."""
    if completion.tool_calls:
        return [_parse_arguments(call.name, call.arguments) for call in completion.tool_calls]
    return _calls_in_text(completion.text)


def _parse_arguments(name: str, raw: Any) -> ParsedCall:
    if not isinstance(raw, str):
        return ParsedCall(name, raw)
    if not raw.strip():
        return ParsedCall(name, {})  # some servers send "" for a call without arguments
    try:
        return ParsedCall(name, json.loads(raw))
    except json.JSONDecodeError as exc:
        return ParsedCall(name, None, f"arguments are not JSON: {exc.msg}")


def _calls_in_text(text: str) -> list[ParsedCall]:
    for candidate in (json_text(text), text.strip()):
        try:
            calls = _as_calls(json.loads(candidate))
        except json.JSONDecodeError:
            continue
        if calls is not None:
            return calls
    return _scan_for_calls(text)


def _scan_for_calls(text: str) -> list[ParsedCall]:
    """The first call-shaped JSON value embedded in prose."""
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "{["][:_MAX_SCANNED_BRACES]
    for start in starts:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        calls = _as_calls(value)
        if calls is not None:
            return calls
    return []


def _as_calls(value: Any) -> list[ParsedCall] | None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(_is_call(item) for item in items):
        return None
    return [
        _parse_arguments(item["name"], item.get("arguments", item.get("parameters", {})))
        for item in items
    ]


def _is_call(item: Any) -> bool:
    return (
        isinstance(item, Mapping)
        and isinstance(item.get("name"), str)
        and ("arguments" in item or "parameters" in item)
    )


def same_name(called: str, expected: str) -> bool:
    """Equal names; OpenAI forbids dots in names, so ``math_factorial`` is ``math.factorial``."""
    return called == expected or _canonical(called) == _canonical(expected)


def _canonical(name: str) -> str:
    return name.replace(".", "_")


# --------------------------------------------------------------------------- tool schemas


def to_json_schema(schema: Any) -> Any:
    """A BFCL parameter schema as JSON Schema: ``dict``/``float``/``tuple``/``any`` mapped."""
    if not isinstance(schema, Mapping):
        return schema
    converted = dict(schema)
    kind = converted.get("type")
    if kind == "any":
        del converted["type"]
    elif isinstance(kind, str):
        converted["type"] = _BFCL_TYPES.get(kind, kind)
    elif isinstance(kind, list):
        converted["type"] = [_BFCL_TYPES.get(k, k) for k in kind if k != "any"]
    if isinstance(converted.get("properties"), Mapping):
        converted["properties"] = {
            name: to_json_schema(sub) for name, sub in converted["properties"].items()
        }
    items = converted.get("items")
    if isinstance(items, list):  # the old tuple form; Draft 2020-12 calls it prefixItems
        converted["prefixItems"] = [to_json_schema(sub) for sub in items]
        del converted["items"]
    elif isinstance(items, Mapping):
        converted["items"] = to_json_schema(items)
    if isinstance(converted.get("additionalProperties"), Mapping):
        converted["additionalProperties"] = to_json_schema(converted["additionalProperties"])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(converted.get(key), list):
            converted[key] = [to_json_schema(sub) for sub in converted[key]]
    return converted


def tool_parameters(tools: Any) -> dict[str, Mapping[str, Any]]:
    """Tool name (canonical) → its parameters as written (BFCL or OpenAI types)."""
    entries = tools if isinstance(tools, list | tuple) else [tools]
    parameters: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        function = entry.get("function", entry) if isinstance(entry, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ValueError(f"not a tool (expected a name and parameters): {entry!r}")
        given = function.get("parameters") or {"type": "object", "properties": {}}
        parameters[_canonical(function["name"])] = given
    return parameters


def tool_schemas(tools: Any) -> dict[str, Mapping[str, Any]]:
    """Tool name (canonical) → its parameters as JSON Schema, from OpenAI or BFCL tools."""
    return {name: to_json_schema(p) for name, p in tool_parameters(tools).items()}


def _types_only(schema: Any) -> Any:
    """A schema reduced to its types, for checking types without enums or ranges."""
    if not isinstance(schema, Mapping):
        return schema
    kept: dict[str, Any] = {}
    if "type" in schema:
        kept["type"] = schema["type"]
    if isinstance(schema.get("items"), Mapping):
        kept["items"] = _types_only(schema["items"])
    if isinstance(schema.get("properties"), Mapping):
        kept["properties"] = {k: _types_only(v) for k, v in schema["properties"].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            kept[key] = [_types_only(sub) for sub in schema[key]]
    return kept


def _compliance_error(arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> str | None:
    properties = schema.get("properties") or {}
    unknown = [name for name in arguments if name not in properties]
    if unknown:
        return f"unknown argument {unknown[0]!r}"
    missing = [name for name in schema.get("required") or [] if name not in arguments]
    if missing:
        return f"missing required argument {missing[0]!r}"
    for name, value in arguments.items():
        error = schema_error(value, _types_only(properties[name]))
        if error:
            return error.replace("$", f"$.{name}", 1)
    return None


# --------------------------------------------------------------------------- expected calls


def expected_calls(example: Example, field: str) -> list[ExpectedCall]:
    """The expected calls in BFCL possible_answer format; [] means no tool fits."""
    value = json_field(example, field)
    if isinstance(value, Mapping):
        value = [value]
    problem = f"example {example.id}: field {field!r}: expected [{{tool: {{arg: [values]}}}}]"
    if not isinstance(value, list):
        raise FieldError(problem)
    calls: list[ExpectedCall] = []
    for entry in value:
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise FieldError(problem)
        ((name, arguments),) = entry.items()
        if not isinstance(arguments, Mapping) or not all(
            isinstance(v, list) for v in arguments.values()
        ):
            raise FieldError(problem)
        calls.append((str(name), arguments))
    return calls


# --------------------------------------------------------------------------- scorers


SchemasOf = Callable[[Example], Mapping[str, Mapping[str, Any]]]


def _schemas_source(
    reader: OptionReader,
    context: ScorerContext,
    read: Callable[[Any], Schemas] = tool_schemas,
    required: bool = True,
) -> SchemasOf | None:
    """Per-example tools from ``tools_field`` (by default the field the benchmark's
    ``tools: {field: …}`` names), else the benchmark's ``tools:``, else None."""
    tools_field = reader.text("tools_field", context.tools_field)
    if tools_field is not None:

        def per_example(example: Example) -> Schemas:
            try:
                return read(json_field(example, tools_field))
            except ValueError as exc:
                raise FieldError(f"example {example.id}: field {tools_field!r}: {exc}") from None

        return per_example
    if not context.tools:
        if not required:
            return None
        raise OptionError("tools_field", "no tools: set tools_field or the benchmark's 'tools:'")
    try:
        schemas = read(list(context.tools))
    except ValueError as exc:
        raise OptionError("tools_field", f"the benchmark's tools: {exc}") from None
    return lambda example: schemas


def _no_call(calls: Sequence[ParsedCall]) -> Score:
    return Score(0.0, "no tool call") if not calls else Score(1.0)


@scorer("tool_selection")
def tool_selection(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """The called tool names equal the expected ones (in any order; none when [])."""
    reader = OptionReader(options)
    field = reader.text("expected_field")
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        called = sorted(_canonical(call.name) for call in calls_of(completion))
        wanted = sorted(_canonical(name) for name, _ in expected_calls(example, field))
        if called == wanted:
            return Score(1.0)
        return Score(0.0, f"called {called or 'no tool'}, expected {wanted or 'no tool'}")

    return score


@scorer("argument_validity")
def argument_validity(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """Every call's arguments parse and satisfy its tool's full parameter schema."""
    return _every_call(options, context, schema_error)


@scorer("schema_compliance")
def schema_compliance(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """No unknown arguments, every required one present, each of the right type."""
    return _every_call(options, context, _compliance_error)


def _every_call(
    options: Mapping[str, Any],
    context: ScorerContext,
    check: Callable[[Any, Mapping[str, Any]], str | None],
) -> ScoreFunction:
    """1 when every call names a known tool and its arguments pass ``check``."""
    reader = OptionReader(options)
    schemas_of = _schemas_source(reader, context)
    assert schemas_of is not None
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        calls = calls_of(completion)
        schemas = schemas_of(example)
        for call in calls:
            error = _call_shape_error(call, schemas) or check(
                call.arguments, schemas[_canonical(call.name)]
            )
            if error:
                return Score(0.0, f"{call.name}: {error}")
        return _no_call(calls)

    return score


def _call_shape_error(call: ParsedCall, schemas: Mapping[str, Mapping[str, Any]]) -> str | None:
    if _canonical(call.name) not in schemas:
        return "no such tool"
    if call.error:
        return call.error
    if not isinstance(call.arguments, Mapping):
        return "arguments are not an object"
    return None


@scorer("argument_match")
def argument_match(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """The calls match the expected ones under BFCL's AST check (scorers/bfcl.py)."""
    reader = OptionReader(options)
    field = reader.text("expected_field")
    schemas_of = _schemas_source(reader, context, tool_parameters, required=False)
    count_malformed = reader.boolean("count_malformed_calls", False)
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        schemas = schemas_of(example) if schemas_of else {}
        error = calls_error(
            calls_of(completion),
            expected_calls(example, field),
            lambda name: schemas.get(_canonical(name)),
            same_name,
            count_malformed,
        )
        return Score(0.0, error) if error else Score(1.0)

    return score


@scorer("fallback")
def fallback(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    """1 when the model made no tool call (BFCL's relevance rule): for questions no tool fits."""
    reader = OptionReader(options)
    count_malformed = reader.boolean("count_malformed_calls", False)
    reader.finish()

    def score(completion: Completion, example: Example) -> Score:
        calls = calls_of(completion)
        if calls and (count_malformed or contains_call(calls)):
            return Score(0.0, f"called {', '.join(call.name for call in calls)}")
        return Score(1.0)

    return score
