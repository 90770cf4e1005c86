"""Any OpenAI-compatible server: vLLM, Ollama's /v1, llama.cpp, LM Studio, TGI, hosted APIs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.records import Completion, Request, TargetError
from pytest_expertbench.targets import JsonClient, Options, token_count, tool_calls_in

_OPTIONS = "base_url model endpoint api_key_env headers extra_body"


@dataclass(frozen=True)
class OpenAITarget:
    name: str
    base_url: str
    model: str
    endpoint: str = "chat"
    headers: Mapping[str, str] = field(default_factory=dict)
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    live: bool = True

    @property
    def url(self) -> str:
        path = "chat/completions" if self.endpoint == "chat" else "completions"
        return f"{self.base_url}/{path}"

    def identity(self) -> Mapping[str, Any]:
        # Header values may be credentials: only their names shape the key.
        return {
            "kind": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "endpoint": self.endpoint,
            "extra_body": dict(self.extra_body),
            "headers": sorted(self.headers),
        }

    def payload(self, request: Request) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model}
        if self.endpoint == "chat":
            messages = [{"role": "system", "content": request.system}] if request.system else []
            messages.append({"role": "user", "content": request.prompt})
            payload["messages"] = messages
        else:
            prompt = f"{request.system}\n\n{request.prompt}" if request.system else request.prompt
            payload["prompt"] = prompt
        if request.tools:
            payload["tools"] = [dict(tool) for tool in request.tools]
        payload.update(request.generation)
        payload.update(self.extra_body)  # the target's own settings win over a benchmark's
        return payload

    async def complete(self, request: Request, client: JsonClient) -> Completion:
        headers = dict(self.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = await client.request_json(self.url, self.payload(request), headers=headers)
        return self.parse(data)

    def parse(self, data: Any) -> Completion:
        choices = data.get("choices") if isinstance(data, Mapping) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise TargetError(f"no choices in the answer from {self.url}")
        choice = choices[0]
        if self.endpoint == "chat":
            message = choice.get("message")
            if not isinstance(message, Mapping):
                raise TargetError(f"no message in the first choice from {self.url}")
            text = message.get("content")
            tool_calls = tool_calls_in(message.get("tool_calls"), self.url)
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
    return OpenAITarget(
        name=spec.name,
        base_url=options.required("base_url").rstrip("/"),
        model=options.required("model"),
        endpoint=options.choice("endpoint", ("chat", "completions")),
        headers=options.headers(),
        extra_body=options.mapping("extra_body"),
        api_key=options.secret("api_key_env"),
    )
