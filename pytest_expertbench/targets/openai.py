"""Any OpenAI-compatible server: vLLM, Ollama's /v1, llama.cpp, LM Studio, TGI, hosted APIs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.records import Completion, Request, TargetError
from pytest_expertbench.replicas import ReplicaSet, replica_urls
from pytest_expertbench.streaming import TokenClock
from pytest_expertbench.targets import ModelClient, Options, ask_served, token_count, tool_calls_in
from pytest_expertbench.targets.streams import ToolCallDeltas, sse_events

_OPTIONS = "base_url model endpoint api_key_env headers extra_body stream"


@dataclass(frozen=True)
class OpenAITarget:
    """``base_url`` is the first (or only) replica's: the cache key holds it alone, since
    the replicas serve one model (replicas.py); ``replicas`` holds every URL."""

    name: str
    base_url: str
    model: str
    endpoint: str = "chat"
    headers: Mapping[str, str] = field(default_factory=dict)
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    stream: bool = False  # read server-sent events, timing each chunk (streaming.py)
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
        path = "chat/completions" if self.endpoint == "chat" else "completions"
        return f"{base_url}/{path}"

    def identity(self) -> Mapping[str, Any]:
        # Header values may be credentials: only their names shape the key.
        return {
            "kind": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "endpoint": self.endpoint,
            "extra_body": dict(self.extra_body),
            "headers": sorted(self.headers),
            **({"stream": True} if self.stream else {}),  # streamed answers carry timing
        }

    @property
    def sends_tools(self) -> bool:
        """Only the chat endpoint takes ``tools``; a benchmark with tools is refused at
        load for a target that cannot send them (capabilities.py)."""
        return self.endpoint == "chat"

    def payload(self, request: Request) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model}
        if self.endpoint == "chat":
            messages = [{"role": "system", "content": request.system}] if request.system else []
            messages.append({"role": "user", "content": request.prompt})
            payload["messages"] = messages
        else:
            prompt = f"{request.system}\n\n{request.prompt}" if request.system else request.prompt
            payload["prompt"] = prompt
        if request.tools and self.sends_tools:  # /v1/completions has no tools: HTTP 422
            payload["tools"] = [dict(tool) for tool in request.tools]
        payload.update(request.generation)
        payload.update(self.extra_body)  # the target's own settings win over a benchmark's
        if self.stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def complete(self, request: Request, client: ModelClient) -> Completion:
        headers = dict(self.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return await ask_served(self, request, client, self.payload(request), headers)

    async def read_stream(self, lines: AsyncIterator[str], url: str) -> Completion:
        """The answer assembled from its server-sent events, timed chunk by chunk."""
        clock = TokenClock()  # started before the first line is asked for: the request's send
        text: list[str] = []
        calls = ToolCallDeltas()
        usage: Mapping[str, Any] = {}
        fingerprint = None
        async with contextlib.aclosing(sse_events(lines, url)) as events:
            async for event in events:
                if isinstance(event.get("usage"), Mapping):
                    usage = event["usage"]
                if isinstance(event.get("system_fingerprint"), str) and event["system_fingerprint"]:
                    fingerprint = event["system_fingerprint"]
                choices = event.get("choices")
                if (
                    not isinstance(choices, list)
                    or not choices
                    or not isinstance(choices[0], Mapping)
                ):
                    continue  # the usage event has no choices
                piece, had_calls = self._delta(choices[0], calls, url)
                if piece or had_calls:
                    clock.tick()
                    text.append(piece)
        completion = Completion(
            text="".join(text),
            tool_calls=calls.calls(url),
            prompt_tokens=token_count(usage.get("prompt_tokens")),
            completion_tokens=token_count(usage.get("completion_tokens")),
            server_fingerprint=fingerprint,
        )
        return clock.timed(completion)

    def _delta(
        self, choice: Mapping[str, Any], calls: ToolCallDeltas, url: str
    ) -> tuple[str, bool]:
        """A chunk's text, and whether it carried tool-call deltas."""
        if self.endpoint != "chat":
            piece = choice.get("text")
            return (piece if isinstance(piece, str) else ""), False
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return "", False
        piece = delta.get("content")
        had_calls = calls.add(delta.get("tool_calls"), url)
        return (piece if isinstance(piece, str) else ""), had_calls

    def parse(self, data: Any, url: str | None = None) -> Completion:
        """The completion in ``data``, the answer from ``url`` (default: the first replica's)."""
        url = url or self.url
        choices = data.get("choices") if isinstance(data, Mapping) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise TargetError(f"no choices in the answer from {url}")
        choice = choices[0]
        if self.endpoint == "chat":
            message = choice.get("message")
            if not isinstance(message, Mapping):
                raise TargetError(f"no message in the first choice from {url}")
            text = message.get("content")
            tool_calls = tool_calls_in(message.get("tool_calls"), url)
        else:
            text = choice.get("text")
            tool_calls = ()
        usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
        fingerprint = data.get("system_fingerprint")  # which build of the model answered
        if not isinstance(fingerprint, str) or not fingerprint:
            fingerprint = None
        return Completion(
            text=text if isinstance(text, str) else "",
            tool_calls=tool_calls,
            prompt_tokens=token_count(usage.get("prompt_tokens")),
            completion_tokens=token_count(usage.get("completion_tokens")),
            server_fingerprint=fingerprint,
        )


def build(spec: TargetSpec) -> OpenAITarget:
    options = Options(spec)
    options.reject_unknown(_OPTIONS)
    urls = replica_urls(spec.options.get("base_url"), lambda m: options.error("base_url", m))
    return OpenAITarget(
        name=spec.name,
        base_url=urls[0],
        replicas=ReplicaSet(urls),
        model=options.required("model"),
        endpoint=options.choice("endpoint", ("chat", "completions"), "chat"),
        headers=options.headers(),
        extra_body=dict(options.mapping("extra_body", {})),
        api_key=options.secret("api_key_env"),
        stream=options.boolean("stream", False),
    )
