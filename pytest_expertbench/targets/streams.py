"""Reading streamed answers: OpenAI's server-sent events and Ollama's NDJSON.

Each reader turns the lines a :class:`ModelClient` yields into JSON objects, and
fails with one line: a stream cut short (no ``[DONE]``, no ``"done": true``) could go
better if asked again; an event that is not JSON, or an error the server sends in the
stream, would not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_expertbench.records import TargetError, ToolCall, one_line

_DONE = "[DONE]"


async def sse_events(
    lines: AsyncIterator[str], url: str
) -> AsyncGenerator[Mapping[str, Any], None]:
    """The JSON ``data:`` of each event, up to ``data: [DONE]``. A stream that ends without
    it after a choice's ``finish_reason`` is whole too: transformers serve (5.24) sends no
    ``[DONE]``, its last chunk holds the finish_reason and the usage."""
    finished = False
    async for line in lines:
        if not line.startswith("data:"):
            continue  # a comment (": ping"), event:, id: or retry: field
        data = line[len("data:") :].strip()
        if data == _DONE:
            return
        event = _event(data, url)
        finished = finished or _finishes(event)
        yield event
    if not finished:
        raise TargetError(f"the stream from {url} ended before [DONE]", retryable=True)


def _finishes(event: Mapping[str, Any]) -> bool:
    choices = event.get("choices")
    return isinstance(choices, list) and any(
        isinstance(choice, Mapping) and choice.get("finish_reason") for choice in choices
    )


async def ndjson_objects(
    lines: AsyncIterator[str], url: str
) -> AsyncGenerator[Mapping[str, Any], None]:
    """Each line's JSON object, up to and with the one that says ``"done": true``."""
    async for line in lines:
        data = _event(line, url)
        yield data
        if data.get("done") is True:
            return
    raise TargetError(f"the stream from {url} ended before its done message", retryable=True)


def _event(text: str, url: str) -> Mapping[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise TargetError(
            f"malformed event in the stream from {url}: {one_line(text, 80)!r}"
        ) from None
    if not isinstance(data, Mapping):
        raise TargetError(f"an event that is not a JSON object in the stream from {url}")
    error = data.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, Mapping) else error
        raise TargetError(f"error in the stream from {url}: {one_line(str(message))}")
    return data


@dataclass
class ToolCallDeltas:
    """OpenAI's streamed tool calls, assembled by ``index``: the name comes once, the
    arguments' text in pieces."""

    names: dict[int, str] = field(default_factory=dict)
    arguments: dict[int, list[str]] = field(default_factory=dict)

    def add(self, deltas: Any, url: str) -> bool:
        """Take a delta's ``tool_calls``; True when it carried any."""
        if not isinstance(deltas, list) or not deltas:
            return False
        for position, delta in enumerate(deltas):
            if not isinstance(delta, Mapping):
                raise TargetError(f"a tool call delta that is not an object from {url}")
            index = delta.get("index", position)
            function = delta.get("function")
            function = function if isinstance(function, Mapping) else {}
            if isinstance(function.get("name"), str) and function["name"]:
                self.names[index] = self.names.get(index, "") + function["name"]
            pieces = self.arguments.setdefault(index, [])
            if isinstance(function.get("arguments"), str):
                pieces.append(function["arguments"])
        return True

    def calls(self, url: str) -> tuple[ToolCall, ...]:
        calls = []
        for index in sorted(self.arguments.keys() | self.names.keys()):
            name = self.names.get(index)
            if name is None:
                raise TargetError(f"a tool call without a function name in the answer from {url}")
            calls.append(ToolCall(name, "".join(self.arguments.get(index, []))))
        return tuple(calls)
