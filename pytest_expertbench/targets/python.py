"""A Python function as the model: ``function: "my_pkg.expert:answer"``.

Sync functions run in a worker thread so that a slow one does not stall the
engine's event loop; async ones are awaited on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.records import Completion, Request, TargetError, ToolCall
from pytest_expertbench.targets import ModelClient, Options, as_arguments, one_line

_OPTIONS = "function"
_KEYWORDS = ("request", "fields", "system", "generation")


@dataclass(frozen=True)
class PythonTarget:
    name: str
    function_name: str
    function: Callable[..., Any] = field(compare=False, repr=False)
    keywords: frozenset[str] = frozenset()
    live: bool = True
    source_digest: str = ""

    @property
    def reads_fields(self) -> bool:
        return bool(self.keywords & {"fields", "request"})

    def identity(self) -> Mapping[str, Any]:
        # The source digest keeps an edited function from being answered by the cache.
        return {"kind": "python", "function": self.function_name, "source": self.source_digest}

    def arguments(self, request: Request) -> dict[str, Any]:
        available = {
            "request": request,
            "fields": request.fields,
            "system": request.system,
            "generation": request.generation,
        }
        return {key: value for key, value in available.items() if key in self.keywords}

    async def complete(self, request: Request, client: ModelClient) -> Completion:
        kwargs = self.arguments(request)
        try:
            if inspect.iscoroutinefunction(self.function):
                answer = await self.function(request.prompt, **kwargs)
            else:
                answer = await asyncio.to_thread(self.function, request.prompt, **kwargs)
                if inspect.isawaitable(answer):
                    answer = await answer
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(one_line(f"{type(exc).__name__}: {exc}")) from None
        return _completion(answer, self.function_name)


def _completion(answer: Any, function_name: str) -> Completion:
    if isinstance(answer, str):
        return Completion(text=answer)
    if isinstance(answer, Mapping) and isinstance(answer.get("text", ""), str):
        calls = []
        for call in answer.get("tool_calls") or ():
            if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
                raise TargetError(f"{function_name} returned a tool call without a name: {call!r}")
            calls.append(ToolCall(call["name"], as_arguments(call.get("arguments", {}))))
        return Completion(text=answer.get("text", ""), tool_calls=tuple(calls))
    raise TargetError(
        one_line(
            f"{function_name} returned {type(answer).__name__}, expected text "
            'or a mapping {"text": ..., "tool_calls": [...]}'
        )
    )


def _import(name: str, options: Options) -> Callable[..., Any]:
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise options.error("function", f"expected 'module:function', got {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise options.error(
            "function", f"cannot import module {module_name!r}: {one_line(str(exc))}"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise options.error("function", f"module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise options.error("function", f"{name!r} is not callable")
    return target  # type: ignore[no-any-return]


def _accepted_keywords(function: Callable[..., Any]) -> frozenset[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return frozenset(_KEYWORDS)
    return frozenset(
        p.name
        for p in parameters
        if p.name in _KEYWORDS
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


def build(spec: TargetSpec) -> PythonTarget:
    options = Options(spec)
    options.reject_unknown(_OPTIONS)
    name = options.required("function")
    function = _import(name, options)
    return PythonTarget(
        name=spec.name,
        function_name=name,
        function=function,
        keywords=_accepted_keywords(function),
        source_digest=_source_digest(function),
    )


def _source_digest(function: Callable[..., Any]) -> str:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
