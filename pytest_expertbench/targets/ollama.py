"""Ollama's native API (/api/chat, /api/generate), for its own options and token counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.records import Completion, Request, TargetError, ToolCall
from pytest_expertbench.targets import JsonClient, Options, token_count, tool_calls_in

DEFAULT_BASE_URL = "http://localhost:11434"
_OPTIONS = "base_url model endpoint headers options keep_alive"
# OpenAI-style generation names → Ollama option names; every other key passes unchanged.
_RENAMES = {"max_tokens": "num_predict"}


@dataclass(frozen=True)
class OllamaTarget:
    name: str
    base_url: str
    model: str
    endpoint: str = "chat"
    headers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    keep_alive: str | None = None
    live: bool = True

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/{self.endpoint}"

    def identity(self) -> Mapping[str, Any]:
        return {
            "kind": "ollama",
            "base_url": self.base_url,
            "model": self.model,
            "endpoint": self.endpoint,
            "options": dict(self.options),
            "headers": sorted(self.headers),
        }

    def payload(self, request: Request) -> dict[str, Any]:
        options = {_RENAMES.get(k, k): v for k, v in request.generation.items()}
        options.update(self.options)
        payload: dict[str, Any] = {"model": self.model, "stream": False, "options": options}
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

    async def complete(self, request: Request, client: JsonClient) -> Completion:
        data = await client.request_json(self.url, self.payload(request), headers=self.headers)
        return self.parse(data)

    def parse(self, data: Any) -> Completion:
        if not isinstance(data, Mapping):
            raise TargetError(f"expected a JSON object from {self.url}")
        tool_calls: tuple[ToolCall, ...] = ()
        if self.endpoint == "chat":
            message = data.get("message")
            if not isinstance(message, Mapping):
                raise TargetError(f"no message in the answer from {self.url}")
            text = message.get("content")
            tool_calls = tool_calls_in(message.get("tool_calls"), self.url)
        else:
            text = data.get("response")
            if text is None:
                raise TargetError(f"no response in the answer from {self.url}")
        return Completion(
            text=text if isinstance(text, str) else "",
            tool_calls=tool_calls,
            prompt_tokens=token_count(data.get("prompt_eval_count")),
            completion_tokens=token_count(data.get("eval_count")),
        )


def build(spec: TargetSpec) -> OllamaTarget:
    options = Options(spec)
    options.reject_unknown(_OPTIONS)
    return OllamaTarget(
        name=spec.name,
        base_url=(options.text("base_url") or DEFAULT_BASE_URL).rstrip("/"),
        model=options.required("model"),
        endpoint=options.choice("endpoint", ("chat", "generate")),
        headers=options.headers(),
        options=options.mapping("options"),
        keep_alive=options.text("keep_alive"),
    )
