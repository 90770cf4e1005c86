"""``{port}`` in a target with a managed server: a free port, substituted everywhere.

A server started for one session needs a port nobody else holds, and the target's
options (its ``base_url``), the server's command, env and health URL must all name
the same one. The controller picks it; xdist workers are passed the controller's.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from typing import Any

from pytest_expertbench.config import ServerSpec, TargetSpec

PLACEHOLDER = "{port}"


def resolve_port(spec: TargetSpec, port: int | None = None) -> tuple[TargetSpec, int | None]:
    """Pick a free port for a target whose server or options say ``{port}``.

    Only a target with a ``server:`` is resolved: without one nothing would listen on
    the port picked, so its ``{port}`` is left for the target to reject. ``port``
    passes a port picked elsewhere (an xdist worker uses the controller's).
    """
    server = spec.server
    if server is None or not _mentions_port(spec, server):
        return spec, None
    port = port or _free_port()
    text = str(port)
    resolved_server = dataclasses.replace(
        server,
        command=_substitute(server.command, text),
        env=_substitute(server.env, text),
        health_url=_substitute(server.health_url, text),
    )
    options = _substitute(spec.options, text)
    resolved = dataclasses.replace(
        spec, options=options, server=resolved_server, written_options=spec.options
    )
    return resolved, port


def _mentions_port(spec: TargetSpec, server: ServerSpec) -> bool:
    texts = [*server.command, *server.env.values(), server.health_url or ""]
    return any(PLACEHOLDER in text for text in texts) or _contains_placeholder(spec.options)


def _contains_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return PLACEHOLDER in value
    if isinstance(value, Mapping):
        return any(_contains_placeholder(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_contains_placeholder(item) for item in value)
    return False


def _substitute(value: Any, port: str) -> Any:
    """``value`` with ``{port}`` replaced in every string, however deeply nested."""
    if isinstance(value, str):
        return value.replace(PLACEHOLDER, port)
    if isinstance(value, Mapping):
        return {key: _substitute(item, port) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_substitute(item, port) for item in value)
    return value


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
