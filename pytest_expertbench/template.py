"""Prompt and option templates: ``"{question}"`` filled from an example's fields."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from pytest_expertbench.errors import ExpertBenchError

_FORMATTER = string.Formatter()


class TemplateError(ExpertBenchError, ValueError):
    """A template names a field the example does not have, or is malformed."""


def fields_of(template: str) -> set[str]:
    """The top-level field names a template uses, for checking against dataset columns."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise TemplateError(f"malformed template {template!r}: {exc}") from None
    names = set()
    for _, field_name, _, _ in parsed:
        if field_name == "" or (field_name and field_name[0].isdigit()):
            raise TemplateError(
                f"{template!r} has a positional field {{{field_name}}}: name a field, "
                "or write {{ and }} for literal braces"
            )
        if field_name:
            names.add(field_name.split(".", 1)[0].split("[", 1)[0])
    return names


def render(template: str, fields: Mapping[str, Any]) -> str:
    """Fill a template; literal braces are written ``{{`` and ``}}`` as in str.format."""
    try:
        return template.format_map(fields)
    except KeyError as exc:
        raise TemplateError(f"the template uses {{{exc.args[0]}}}, which is not a field") from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise TemplateError(f"malformed template {template!r}: {exc}") from None
