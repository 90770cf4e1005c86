"""Targets: the model under test, one module per kind.

A target turns a :class:`Request` into a :class:`Completion` and nothing more: the
engine owns timing, retries, concurrency and the cache. A target raises
:class:`TargetError` with a one-line message and says whether trying again could help.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pytest_expertbench.config import ConfigError, TargetSpec
from pytest_expertbench.reader import Reader
from pytest_expertbench.records import Completion, Request, TargetError, ToolCall, one_line

if TYPE_CHECKING:
    from pytest_expertbench.replicas import ReplicaSet

__all__ = ["ModelClient", "Options", "Target", "TargetError", "build_target", "one_line"]

_KIND_MODULES = {
    "openai": "pytest_expertbench.targets.openai",
    "ollama": "pytest_expertbench.targets.ollama",
    "http": "pytest_expertbench.targets.http",
    "python": "pytest_expertbench.targets.python",
    "replay": "pytest_expertbench.targets.replay",
}


class ModelClient(Protocol):
    """What a target may ask of HTTP: the engine lends one to each call of ``complete``.

    Both methods raise a one-line :class:`TargetError` that says whether asking again
    could help (a timeout, a lost connection, 408, 429, 5xx) and carries the status
    and Retry-After; no header value (an API key) is ever quoted. The engine's own
    implementation is :class:`pytest_expertbench.transport.HttpModelClient` (httpx);
    a test may pass anything with these two methods.
    """

    async def request_json(
        self,
        url: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> Any:
        """Send ``payload`` as JSON (no body for GET); the decoded JSON answer."""
        ...

    def stream_lines(
        self, url: str, payload: Any, *, headers: Mapping[str, str] | None = None
    ) -> AsyncGenerator[str, None]:
        """POST ``payload`` as JSON; the answer's non-empty lines as they arrive (SSE, NDJSON).
        The caller closes the generator (``aclose``), which releases the connection."""
        ...


@runtime_checkable
class Target(Protocol):
    """A model the engine can ask.

    ``live`` is False for a target that replays answers recorded earlier: the engine
    then keeps the Completion's own ``latency_ms`` (the recorded one) instead of
    timing the call, and never caches its answers. A target without the attribute
    is treated as live. An optional ``reads_fields`` attribute, True when the answer
    may depend on ``Request.fields`` beyond the prompt (an ``http`` body template, a
    Python function), puts the fields into the cache key. An optional ``sends_tools``
    attribute, False for one that cannot pass a request's ``tools`` on (OpenAI's
    completions endpoint, an ``http`` body without ``{tools}``), makes a benchmark that
    declares tools a load-time error for it (capabilities.py); absent means True.
    """

    @property
    def name(self) -> str: ...

    @property
    def live(self) -> bool: ...

    def identity(self) -> Mapping[str, Any]:
        """What makes this model's answers what they are (kind, URL, model…); no secret."""
        ...

    async def complete(self, request: Request, client: ModelClient) -> Completion: ...


def build_target(spec: TargetSpec) -> Target:
    """The target a targets-file entry describes; a bad option raises ConfigError."""
    module_name = _KIND_MODULES.get(spec.kind)
    if module_name is None:
        known = ", ".join(_KIND_MODULES)
        raise ConfigError(spec.source, f"targets.{spec.name}.kind", f"expected one of {known}")
    module = importlib.import_module(module_name)
    target: Target = module.build(spec)
    return target


class Options(Reader):
    """A target's kind-specific options: the one typed :class:`Reader`, with errors that
    name ``targets.<name>.<key>`` in the targets file, and the getters targets share."""

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(
            spec.options, functools.partial(ConfigError, spec.source), f"targets.{spec.name}"
        )
        self.spec = spec

    def required(self, key: str) -> str:
        """Non-empty text that must be there (a model's name, a URL)."""
        value: str = self.text(key)
        if not value:
            raise self.error(key, "expected non-empty text")
        return value

    def headers(self, key: str = "headers") -> dict[str, str]:
        return {str(name): str(value) for name, value in self.mapping(key, {}).items()}

    def secret(self, key: str = "api_key_env") -> str | None:
        """The value of the environment variable the option names (read once, at build time)."""
        variable = self.text(key, None)
        if variable is None:
            return None
        value = os.environ.get(variable)
        if not value:
            raise self.error(key, f"the environment variable {variable} is not set")
        return value

    def reject_unknown(self, allowed: str, noun: str = "") -> None:
        super().reject_unknown(allowed, noun or f"option for {self.spec.kind} targets")


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path (``choices.0.message.content``); KeyError when absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            try:
                current = current[int(part)]
            except IndexError:
                raise KeyError(path) from None
        else:
            raise KeyError(path)
    return current


def as_arguments(value: Any) -> str:
    """Tool-call arguments as raw JSON text, whether the server sent text or an object."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def token_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def tool_calls_in(raw: Any, url: str) -> tuple[ToolCall, ...]:
    """The ``tool_calls`` of an OpenAI or Ollama message (arguments as text or a mapping)."""
    calls = []
    for call in raw if isinstance(raw, list) else []:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise TargetError(f"a tool call without a function name in the answer from {url}")
        calls.append(ToolCall(function["name"], as_arguments(function.get("arguments", {}))))
    return tuple(calls)


class ServedTarget(Protocol):
    """A target that asks a model server (or its replicas) for JSON or a stream."""

    @property
    def stream(self) -> bool: ...

    @property
    def replicas(self) -> ReplicaSet | None: ...

    def url_at(self, base_url: str) -> str: ...

    def parse(self, data: Any, url: str) -> Completion: ...

    async def read_stream(self, lines: AsyncIterator[str], url: str) -> Completion: ...


async def ask_served(
    target: ServedTarget,
    request: Request,
    client: ModelClient,
    payload: Any,
    headers: Mapping[str, str],
) -> Completion:
    """``payload`` sent to the replica the target's ReplicaSet picks, the answer read
    whole or as a stream: what the openai and ollama targets share."""

    async def send(base_url: str) -> tuple[Any, str]:
        url = target.url_at(base_url)
        return await client.request_json(url, payload, headers=headers), url

    async def read(base_url: str) -> Completion:
        url = target.url_at(base_url)
        # Closed here, whatever stops the reading (a malformed event, the answer's end
        # before the body's): left to the garbage collector, the stream kept its
        # connection, and the next request of its client waited for it until timed out.
        async with contextlib.aclosing(client.stream_lines(url, payload, headers=headers)) as lines:
            return await target.read_stream(lines, url)

    replicas = target.replicas
    assert replicas is not None
    if target.stream:
        return await replicas.call(request.benchmark, read, client)
    data, url = await replicas.call(request.benchmark, send, client)
    return target.parse(data, url)
