"""The Berkeley Function Calling Leaderboard's AST check, rule for rule (Python category).

One call is checked against one expected call (``{"func": {"arg": [accepted values…]}}``)
and the tool's parameter schema in BFCL form (``integer``, ``float``, ``string``,
``boolean``, ``array``/``tuple`` with ``items``, ``dict``, ``any``; OpenAI's ``number`` and
``object`` read as ``float`` and ``dict``). The rules, as BFCL's ``ast_checker.py`` applies
them, are listed in docs/scorers.md; the comments below name the non-obvious ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

_STRIPPED = re.compile(r"[ ,./\-_*^]")
_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
    "any": str,  # BFCL's own mapping: an "any" parameter takes a string
}
_FLOAT_TYPES = ("float", "number")


class Call(Protocol):
    """A parsed call: ``arguments`` is None, with ``error`` set, when they did not parse."""

    @property
    def name(self) -> str: ...
    @property
    def arguments(self) -> Any: ...
    @property
    def error(self) -> str | None: ...


ExpectedCall = tuple[str, Mapping[str, list[Any]]]
NameMatch = Callable[[str, str], bool]
SchemaOf = Callable[[str], Mapping[str, Any] | None]


def standardize(text: str) -> str:
    """BFCL's string normalisation: spaces and ``,./-_*^`` removed, lower case, ' → "."""
    return _STRIPPED.sub("", text).lower().replace("'", '"')


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _std(value: Any) -> Any:
    return standardize(value) if isinstance(value, str) else value


def contains_call(calls: Sequence[Call]) -> bool:
    """BFCL's relevance rule: a response holds a call only when every call decodes to an
    object of arguments; one that does not makes the whole response "no call"."""
    return bool(calls) and all(
        call.error is None and isinstance(call.arguments, Mapping) for call in calls
    )


# --------------------------------------------------------------------------- types


def _first_type(accepted: Sequence[Any]) -> type | None:
    """The type of the first accepted value that is not ``""`` (BFCL's "possible answer type")."""
    return next((type(option) for option in accepted if option != ""), None)


def _type_ok(value: Any, kind: type, item_kind: type | None, accepted: Sequence[Any]) -> bool:
    """BFCL's type check: the exact type (``True`` is no integer), else the type of the
    first accepted value; array elements one level deep, against each accepted list."""
    if type(value) is kind:
        if item_kind is None or not isinstance(value, list):
            return True
        # an accepted alternative that is not a list ("") passes the element check
        return any(
            not isinstance(option, list) or all(_type_ok(v, item_kind, None, option) for v in value)
            for option in accepted
        )
    first = _first_type(accepted)
    return first is not None and type(value) is first


# --------------------------------------------------------------------------- values


def _string_ok(value: str, accepted: Sequence[Any]) -> bool:
    return standardize(value) in [standardize(a) for a in accepted if isinstance(a, str)]


def _list_ok(value: list[Any], accepted: Sequence[Any]) -> bool:
    """Top-level string elements normalised; otherwise Python equality (``1 == 1.0``)."""
    given = [_std(v) for v in value]
    options = [[_std(v) for v in a] for a in accepted if isinstance(a, list | str)]
    return given in options  # "" is an empty list here, as in BFCL


def _dict_ok(value: Mapping[str, Any], accepted: Sequence[Any]) -> bool:
    """One accepted mapping fits: no unknown key, values normalised if strings and among
    that key's alternatives, every key without ``""`` among them present."""
    for option in accepted:
        if not isinstance(option, Mapping):
            continue
        alternatives = {k: v if isinstance(v, list) else [v] for k, v in option.items()}
        if all(
            key in alternatives and _std(v) in [_std(a) for a in alternatives[key]]
            for key, v in value.items()
        ) and all(key in value or "" in alts for key, alts in alternatives.items()):
            return True
    return False


def _list_of_dicts_ok(value: list[Any], accepted: Sequence[Any]) -> bool:
    return any(
        isinstance(option, list | str)
        and len(option) == len(value)
        and all(
            isinstance(v, Mapping) and _dict_ok(v, [o]) for v, o in zip(value, option, strict=True)
        )
        for option in accepted
    )


_INFERRED = {bool: "boolean", int: "float", float: "float", str: "string", list: "array"}


def _declared(
    schema: Mapping[str, Any] | None, accepted: Sequence[Any]
) -> tuple[type | None, type | None, bool]:
    """A parameter's Python type, its elements' type, and whether it is a float. Without a
    schema, the type of the first accepted value (a number of either kind reads as float)."""
    if schema is None:
        first = _first_type(accepted)
        inferred = "dict" if first is not None and issubclass(first, Mapping) else None
        schema = {"type": inferred or _INFERRED.get(first)} if first else {}
    if not isinstance(schema.get("type"), str):
        return None, None, False
    kind = _TYPES.get(schema["type"])
    items = schema.get("items")
    item_kind = None
    if kind is list and isinstance(items, Mapping) and isinstance(items.get("type"), str):
        item_kind = _TYPES.get(items["type"])
    return kind, item_kind, schema["type"] in _FLOAT_TYPES


def argument_error(
    name: str, value: Any, accepted: Sequence[Any], schema: Mapping[str, Any] | None
) -> str | None:
    """Why one given argument fails BFCL's type and value checks, or None."""
    kind, item_kind, is_float = _declared(schema, accepted)
    shown = f"argument {name!r} = {_shown(value)}"
    if is_float and type(value) is int:
        value = float(value)  # a lone integer for a float is accepted
    if kind is None:  # no type known: compared as the type it has
        kind = type(value)
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            item_kind = dict
    elif not _type_ok(value, kind, item_kind, accepted):
        declared = (schema or {}).get("type", kind.__name__)
        return f"{shown} is not of type {declared!r}"
    first = _first_type(accepted)
    as_variable = first is not None and first is not kind  # BFCL's "variable" case
    if as_variable:
        ok = value in accepted
    elif kind is dict:
        ok = isinstance(value, Mapping) and _dict_ok(value, accepted)
    elif kind is list and item_kind is dict:
        ok = isinstance(value, list) and _list_of_dicts_ok(value, accepted)
    elif kind is str:
        ok = isinstance(value, str) and _string_ok(value, accepted)
    elif kind is list:
        ok = isinstance(value, list) and _list_ok(value, accepted)
    else:
        ok = value in accepted  # Python equality, as BFCL: 5.0 == 5
    return None if ok else f"{shown} is not one of {_shown(list(accepted))}"


# --------------------------------------------------------------------------- calls


def call_error(
    call: Call,
    expected: ExpectedCall,
    schema: Mapping[str, Any] | None,
    names_match: NameMatch,
) -> str | None:
    """BFCL's ``simple_function_checker``: name, required, unexpected, types, values, missing."""
    name, accepted = expected
    if not names_match(call.name, name):
        return f"called {call.name!r}, expected {name!r}"
    if call.error:
        return f"{call.name}: {call.error}"
    arguments = call.arguments
    if not isinstance(arguments, Mapping):
        return f"{call.name}: arguments are not an object"
    properties = (schema or {}).get("properties")
    properties = properties if isinstance(properties, Mapping) else None
    required = (schema or {}).get("required")
    for param in required if isinstance(required, list) else []:
        if param not in arguments:  # even where "" is among its accepted values
            return f"{call.name}: missing required argument {param!r}"
    for param, value in arguments.items():
        if param not in accepted or (schema is not None and param not in (properties or {})):
            return f"{call.name}: unexpected argument {param!r}"
        sub = properties.get(param) if properties else None
        error = argument_error(param, value, accepted[param], sub if schema else None)
        if error:
            return f"{call.name}: {error}"
    for param, alternatives in accepted.items():
        if param not in arguments and "" not in alternatives:
            return f"{call.name}: missing argument {param!r}"
    return None


def calls_error(
    calls: Sequence[Call],
    expected: Sequence[ExpectedCall],
    schema_of: SchemaOf,
    names_match: NameMatch,
    count_malformed: bool = False,
) -> str | None:
    """BFCL's verdict on a response: with no call expected, the relevance rule; else as many
    calls as expected, each expected call (in order) taking the first unused call that
    passes, as BFCL's parallel checker does (for one call: the simple/multiple checker)."""
    if not expected:
        made = bool(calls) if count_malformed else contains_call(calls)
        return f"made {len(calls)} tool call(s), expected none" if made else None
    if len(calls) != len(expected):
        return f"made {len(calls)} tool call(s), expected {len(expected)}"
    unused = list(range(len(calls)))
    for wanted in expected:
        schema = schema_of(wanted[0])
        errors = [(i, call_error(calls[i], wanted, schema, names_match)) for i in unused]
        match = next((i for i, error in errors if error is None), None)
        if match is None:
            return next(error for _, error in errors if error)
        unused.remove(match)
    return None
