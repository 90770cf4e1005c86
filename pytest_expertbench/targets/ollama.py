"""Ollama's native API (/api/chat, /api/generate), for its own options and token counts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.records import Completion, Request, TargetError, ToolCall
from pytest_expertbench.replicas import ReplicaSet, replica_urls
from pytest_expertbench.streaming import TokenClock
from pytest_expertbench.targets import ModelClient, Options, ask_served, token_count, tool_calls_in
from pytest_expertbench.targets.streams import ndjson_objects

DEFAULT_BASE_URL = "http://localhost:11434"
_OPTIONS = "base_url model endpoint headers options keep_alive stream"
# OpenAI-style generation names → Ollama option names; every other key passes unchanged.
_RENAMES = {"max_tokens": "num_predict"}


@dataclass(frozen=True)
class OllamaTarget:
    """``base_url`` is the first (or only) replica's: the cache key holds it alone, since
    the replicas serve one model (replicas.py); ``replicas`` holds every URL."""

    name: str
    base_url: str
    model: str
    endpoint: str = "chat"
    headers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    keep_alive: str | None = None
    stream: bool = False  # read NDJSON, timing each chunk (streaming.py)
    live: bool = True
    # Every replica's URL; None only until __post_init__ (a set of base_url alone).
    replicas: ReplicaSet | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.replicas is None:  # built in code with one URL: a set of one
            object.__setattr__(self, "replicas", ReplicaSet((self.base_url,)))

    @property
    def url(self) -> str:
        return self.url_at(self.base_url)

    def url_at(self, base_url: str) -> str:
        return f"{base_url}/api/{self.endpoint}"

    def identity(self) -> Mapping[str, Any]:
        return {
            "kind": "ollama",
            "base_url": self.base_url,
            "model": self.model,
            "endpoint": self.endpoint,
            "options": dict(self.options),
            "headers": sorted(self.headers),
            **({"stream": True} if self.stream else {}),  # streamed answers carry timing
        }

    @property
    def sends_tools(self) -> bool:
        """Only /api/chat takes ``tools`` (/api/generate has none; capabilities.py)."""
        return self.endpoint == "chat"

    def payload(self, request: Request) -> dict[str, Any]:
        options = {_RENAMES.get(k, k): v for k, v in request.generation.items()}
        options.update(self.options)
        payload: dict[str, Any] = {"model": self.model, "stream": self.stream, "options": options}
        if self.endpoint == "chat":
            messages = [{"role": "system", "content": request.system}] if request.system else []
            messages.append({"role": "user", "content": request.prompt})
            payload["messages"] = messages
            if request.tools:
                payload["tools"] = [dict(tool) for tool in request.tools]
        else:
            payload["prompt"] = request.prompt
            if request.system:
                payload["system"] = request.system
        if self.keep_alive is not None:
            payload["keep_alive"] = self.keep_alive
        return payload

    async def complete(self, request: Request, client: ModelClient) -> Completion:
        return await ask_served(self, request, client, self.payload(request), self.headers)

    async def read_stream(self, lines: AsyncIterator[str], url: str) -> Completion:
        """The answer assembled from its NDJSON messages, timed chunk by chunk."""
        clock = TokenClock()  # started before the first line is asked for: the request's send
        text: list[str] = []
        calls: list[ToolCall] = []
        last: Mapping[str, Any] = {}
        async with contextlib.aclosing(ndjson_objects(lines, url)) as objects:
            async for last in objects:
                if self.endpoint == "chat":
                    message = last.get("message")
                    message = message if isinstance(message, Mapping) else {}
                    piece = message.get("content")
                    found = tool_calls_in(message.get("tool_calls"), url)  # whole, not in pieces
                else:
                    piece, found = last.get("response"), ()
                piece = piece if isinstance(piece, str) else ""
                if piece or found:
                    clock.tick()
                    text.append(piece)
                    calls.extend(found)
        completion = Completion(
            text="".join(text),
            tool_calls=tuple(calls),
            prompt_tokens=token_count(last.get("prompt_eval_count")),
            completion_tokens=token_count(last.get("eval_count")),
        )
        return clock.timed(completion)

    def parse(self, data: Any, url: str | None = None) -> Completion:
        """The completion in ``data``, the answer from ``url`` (default: the first replica's)."""
        url = url or self.url
        if not isinstance(data, Mapping):
            raise TargetError(f"expected a JSON object from {url}")
        tool_calls: tuple[ToolCall, ...] = ()
        if self.endpoint == "chat":
            message = data.get("message")
            if not isinstance(message, Mapping):
                raise TargetError(f"no message in the answer from {url}")
            text = message.get("content")
            tool_calls = tool_calls_in(message.get("tool_calls"), url)
        else:
            text = data.get("response")
            if text is None:
                raise TargetError(f"no response in the answer from {url}")
        return Completion(
            text=text if isinstance(text, str) else "",
            tool_calls=tool_calls,
            prompt_tokens=token_count(data.get("prompt_eval_count")),
            completion_tokens=token_count(data.get("eval_count")),
        )


def build(spec: TargetSpec) -> OllamaTarget:
    options = Options(spec)
    options.reject_unknown(_OPTIONS)
    urls = replica_urls(
        spec.options.get("base_url"), lambda m: options.error("base_url", m), DEFAULT_BASE_URL
    )
    return OllamaTarget(
        name=spec.name,
        base_url=urls[0],
        replicas=ReplicaSet(urls),
        model=options.required("model"),
        endpoint=options.choice("endpoint", ("chat", "generate"), "chat"),
        headers=options.headers(),
        options=dict(options.mapping("options", {})),
        keep_alive=options.text("keep_alive", None),
        stream=options.boolean("stream", False),
    )
