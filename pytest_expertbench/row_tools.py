"""Per-question tools: a dataset field's tools as the model is sent them, and back.

A benchmark whose ``tools:`` names a dataset field (``tools: {field: function}``) sends
each example its own tools. BFCL writes them as bare functions with its own type names
(``dict``, ``float``, ``tuple``, ``any``…) and dotted names; they are converted the way
BFCL's OpenAI handler does before it calls a model (``func_doc_language_specific_pre_
processing`` for Python, then ``convert_to_tool`` with ``GORILLA_TO_OPENAPI``), so a
model here sees the request the leaderboard would send. OpenAI allows only
``[a-zA-Z0-9_-]`` in a name: a dot (BFCL's rule), or any other character, becomes ``_``,
and the names the model calls are mapped back to the dataset's before scoring, so the
scorers (and BFCL's checker rules in them) see the original names and schemas.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_expertbench.config import Benchmark, ToolsFromField
from pytest_expertbench.datasets import ExampleDataError
from pytest_expertbench.records import Completion, Example, ToolCall

# bfcl_eval/constants/type_mappings.py, GORILLA_TO_OPENAPI (Apache-2.0).
GORILLA_TO_OPENAPI = {
    "integer": "integer",
    "number": "number",
    "float": "number",
    "string": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "dict": "object",
    "object": "object",
    "tuple": "array",
    "any": "string",
    "byte": "integer",
    "short": "integer",
    "long": "integer",
    "double": "number",
    "char": "string",
    "ArrayList": "array",
    "Array": "array",
    "HashMap": "object",
    "Hashtable": "object",
    "Queue": "array",
    "Stack": "array",
    "Any": "string",
    "String": "string",
    "Bigint": "integer",
}
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
FLOAT_HINT = " This is a float type value."
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]")


class ToolsFieldError(ExampleDataError):
    """An example whose tools field is not a list of tools (or names two tools alike)."""


def sent_name(name: str) -> str:
    """A tool name as OpenAI accepts it: BFCL's dots, and any other character outside
    ``[a-zA-Z0-9_-]``, become ``_``."""
    return _NOT_ALLOWED.sub("_", name)


def request_tools(benchmark: Benchmark, example: Example) -> tuple[Mapping[str, Any], ...]:
    """The tools sent with ``example``'s request: the benchmark's own, or its row's,
    converted to the OpenAI format; raises ToolsFieldError for a malformed field."""
    spec = benchmark.tools_from
    if spec is None:
        return benchmark.tools
    entries = _entries(spec, example)
    _sent_names(spec, example, entries)  # two tools named alike once sent: refused
    return tuple(_openai_tool(entry) for entry in entries)


def named_back(completion: Completion, benchmark: Benchmark, example: Example) -> Completion:
    """``completion`` with each tool call's name as the dataset spells it (the name it was
    sent under mapped back); unchanged without per-question tools or unknown names."""
    spec = benchmark.tools_from
    if spec is None or not completion.tool_calls:
        return completion
    try:
        names = _sent_names(spec, example, _entries(spec, example))
    except ToolsFieldError:
        return completion  # the request was refused for it; nothing to map
    calls = tuple(ToolCall(names.get(c.name, c.name), c.arguments) for c in completion.tool_calls)
    return completion if calls == completion.tool_calls else replace(completion, tool_calls=calls)


def _entries(spec: ToolsFromField, example: Example) -> list[Mapping[str, Any]]:
    value = example.fields.get(spec.field)
    if isinstance(value, Mapping):
        value = [value]
    problem = f"example {example.id}: field {spec.field!r} (used by tools.field)"
    if not isinstance(value, list):
        raise ToolsFieldError(f"{problem}: expected a list of tools, got {type(value).__name__}")
    for entry in value:
        if _function_of(entry) is None:
            raise ToolsFieldError(f"{problem}: not a tool (expected a name): {entry!r:.120}")
    return value


def _function_of(entry: Any) -> Mapping[str, Any] | None:
    """The function of an OpenAI tool or a bare (BFCL) function; None when neither."""
    if not isinstance(entry, Mapping):
        return None
    function = entry.get("function") if entry.get("type") == "function" else entry
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        return None
    return function


def _sent_names(
    spec: ToolsFromField, example: Example, entries: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    names: dict[str, str] = {}
    for entry in entries:
        function = _function_of(entry)
        assert function is not None  # _entries checked
        original = function["name"]
        sent = sent_name(original) if _is_bare(entry) else original
        if sent in names and names[sent] != original:
            raise ToolsFieldError(
                f"example {example.id}: field {spec.field!r}: tools {names[sent]!r} and "
                f"{original!r} are both sent as {sent!r}"
            )
        names[sent] = original
    return names


def _is_bare(entry: Mapping[str, Any]) -> bool:
    return entry.get("type") != "function"


def _openai_tool(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """An OpenAI tool as written, or a BFCL function converted as BFCL's OpenAI handler
    does: the Python hint on its description, ``parameters.type`` object, the types of
    its properties mapped (``_cast_to_openai_type``), the name made valid."""
    if not _is_bare(entry):
        return entry
    item = copy.deepcopy(dict(entry))
    item["description"] = str(item.get("description", "")) + PYTHON_HINT
    item["name"] = sent_name(item["name"])
    parameters = dict(item.get("parameters") or {})
    parameters["type"] = "object"
    parameters["properties"] = _cast_properties(dict(parameters.get("properties") or {}))
    item["parameters"] = parameters
    return {"type": "function", "function": item}


def _cast_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """BFCL's ``_cast_to_openai_type``: each property's type mapped (``float`` also gets
    ``format: float`` and a hint), one level of ``items`` (and their items or
    properties), nested ``properties`` recursively; an unknown type becomes string."""
    for value in properties.values():
        if not isinstance(value, dict):
            continue
        kind = value.get("type")
        if kind is None:
            value["type"] = "string"
        else:
            if kind == "float":
                value["format"] = "float"
                value["description"] = str(value.get("description", "")) + FLOAT_HINT
            value["type"] = (
                GORILLA_TO_OPENAPI.get(kind, "string") if isinstance(kind, str) else kind
            )
        if value["type"] not in ("array", "object"):
            continue
        if isinstance(value.get("properties"), dict):
            value["properties"] = _cast_properties(value["properties"])
        elif isinstance(value.get("items"), dict):
            _cast_items(value["items"])
    return properties


def _cast_items(items: dict[str, Any]) -> None:
    items["type"] = _mapped(items.get("type"))
    inner = items.get("items")
    if items["type"] == "array" and isinstance(inner, dict):
        inner["type"] = _mapped(inner.get("type"))
    elif items["type"] == "object" and isinstance(items.get("properties"), dict):
        items["properties"] = _cast_properties(items["properties"])


def _mapped(kind: Any) -> Any:
    """An ``items`` type mapped; BFCL indexes the mapping there (an unknown type stops
    it with a KeyError), so one it does not know is left as written."""
    return GORILLA_TO_OPENAPI.get(kind, kind) if isinstance(kind, str) else kind
