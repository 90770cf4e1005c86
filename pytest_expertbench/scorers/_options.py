"""Structured example fields (JSON text or parsed), shared by the scorer families.

A field that is missing or not JSON is a dataset bug, reported as one, not a score of 0.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_expertbench.records import Example
from pytest_expertbench.scorers import ScoringError


class FieldError(ScoringError, ValueError):
    """An example's structured field is missing or malformed: a dataset bug, not a score."""


def json_field(example: Example, name: str) -> Any:
    """The value of a structured field, given as JSON text or already parsed."""
    if name not in example.fields:
        raise FieldError(f"example {example.id}: no field {name!r}")
    value = example.fields[name]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise FieldError(f"example {example.id}: field {name!r} is not JSON: {exc}") from None
    return value
