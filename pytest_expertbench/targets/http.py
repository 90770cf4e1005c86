"""Any JSON endpoint: the request body is a template, the answer is found by a dotted path.

Besides the example's fields, ``{prompt}`` and ``{system}``, the body may place the
request's ``{tools}`` (OpenAI-format list) and ``{generation}`` (the benchmark's
settings): a string that is exactly one of them becomes that JSON value, inside longer
text it is written as JSON text. A body without ``{tools}`` cannot send tools, and a
benchmark that declares some is refused for such a target when the run is planned; one
without ``{generation}`` sends no generation settings, and the run warns of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.records import Completion, Request, TargetError, ToolCall
from pytest_expertbench.replicas import ReplicaSet, replica_urls
from pytest_expertbench.targets import ModelClient, Options, lookup, tool_calls_in
from pytest_expertbench.template import TemplateError, fields_of, render

_OPTIONS = "url method headers body response_path tool_calls_path api_key_env api_key_header"
_METHODS = ("POST", "PUT", "PATCH", "GET")
DEFAULT_BODY: Mapping[str, Any] = {"prompt": "{prompt}"}
REQUEST_VALUES = ("tools", "generation")  # placeholders for the request's JSON values


@dataclass(frozen=True)
class HttpTarget:
    name: str
    url: str
    response_path: str
    method: str = "POST"
    body: Any = field(default_factory=lambda: dict(DEFAULT_BODY))
    headers: Mapping[str, str] = field(default_factory=dict)
    api_key_header: str = "Authorization"
    api_key: str | None = field(default=None, repr=False)
    live: bool = True
    reads_fields: bool = True
    sends_tools: bool = False  # the body places {tools}
    sends_generation: bool = False  # the body places {generation}
    # Where the answer holds OpenAI-style tool calls (``choices.0.message.tool_calls``);
    # absent or null there: no call.
    tool_calls_path: str | None = None
    # Every replica's URL (``url`` is the first, the only one in the cache key: replicas.py);
    # None only until __post_init__ (a set of url alone).
    replicas: ReplicaSet | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.replicas is None:
            object.__setattr__(self, "replicas", ReplicaSet((self.url,)))

    def identity(self) -> Mapping[str, Any]:
        return {
            "kind": "http",
            "url": self.url,
            "method": self.method,
            "body": self.body,
            "response_path": self.response_path,
            "headers": sorted(self.headers),
            **({"tool_calls_path": self.tool_calls_path} if self.tool_calls_path else {}),
        }

    def payload(self, request: Request) -> Any:
        # The rendered prompt and system win over dataset columns of the same name.
        values = {
            **request.fields,
            "prompt": request.prompt,
            "system": request.system or "",
            "tools": [dict(tool) for tool in request.tools],
            "generation": dict(request.generation),
        }
        try:
            return _render(self.body, values)
        except TemplateError as exc:
            raise TargetError(f"cannot build the request body for {self.url}: {exc}") from None

    async def complete(self, request: Request, client: ModelClient) -> Completion:
        headers = dict(self.headers)
        if self.api_key:
            scheme = "Bearer " if self.api_key_header.lower() == "authorization" else ""
            headers[self.api_key_header] = scheme + self.api_key
        payload = self.payload(request)

        async def send(url: str) -> tuple[Any, str]:
            return await client.request_json(url, payload, headers=headers, method=self.method), url

        assert self.replicas is not None
        data, url = await self.replicas.call(request.benchmark, send, client)
        try:
            value = lookup(data, self.response_path)
        except KeyError:
            raise TargetError(f"no {self.response_path!r} in the answer from {url}") from None
        if value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        elif isinstance(value, int | float | bool):
            text = str(value)
        else:
            text = json.dumps(value, ensure_ascii=False)
        return Completion(text=text, tool_calls=self._tool_calls(data, url))

    def _tool_calls(self, data: Any, url: str) -> tuple[ToolCall, ...]:
        if self.tool_calls_path is None:
            return ()
        try:
            raw = lookup(data, self.tool_calls_path)
        except KeyError:
            return ()  # answered in text: no call
        return tool_calls_in(raw, url)


def _render(template: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        for name in REQUEST_VALUES:
            if template == f"{{{name}}}":
                return values[name]  # the JSON value itself
        return render(template, {**values, **{n: _json_text(values[n]) for n in REQUEST_VALUES}})
    if isinstance(template, Mapping):
        return {key: _render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [_render(value, values) for value in template]
    return template


def _json_text(value: Any) -> str:
    """A request value as JSON, for longer text (``str.format`` would write its repr)."""
    return json.dumps(value, ensure_ascii=False)


def _fields_used(body: Any) -> set[str]:
    """The fields a body template names; TemplateError when one of its texts is malformed."""
    if isinstance(body, str):
        return fields_of(body)
    values = body.values() if isinstance(body, Mapping) else body if isinstance(body, list) else []
    used: set[str] = set()
    for value in values:
        used |= _fields_used(value)
    return used


def build(spec: TargetSpec) -> HttpTarget:
    options = Options(spec)
    options.reject_unknown(_OPTIONS)
    body = spec.options.get("body", DEFAULT_BODY)
    if not isinstance(body, Mapping | list | str):
        raise options.error("body", f"expected a mapping, a list or text, got {body!r}")
    try:  # a malformed template fails when the targets file is read, not at the first request
        _fields_used(body)
    except TemplateError as exc:
        raise options.error("body", str(exc)) from None
    urls = replica_urls(spec.options.get("url"), lambda m: options.error("url", m), strip=False)
    method = str(options.text("method", "POST")).upper()
    if method not in _METHODS:
        raise options.error("method", f"expected one of {', '.join(_METHODS)}, got {method!r}")
    return HttpTarget(
        reads_fields=bool(_fields_used(body) - {"prompt", "system", *REQUEST_VALUES}),
        sends_tools="tools" in _fields_used(body),
        sends_generation="generation" in _fields_used(body),
        name=spec.name,
        url=urls[0],
        replicas=ReplicaSet(urls),
        response_path=options.required("response_path"),
        method=method,
        body=body,
        headers=options.headers(),
        api_key_header=options.text("api_key_header", "Authorization"),
        api_key=options.secret("api_key_env"),
        tool_calls_path=options.text("tool_calls_path", None),
    )
