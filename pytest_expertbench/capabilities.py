"""What a target can send, checked against what the benchmarks ask, when the run is planned.

A benchmark that declares tools (``tools:``, a list or ``{field: …}``) run against a
target that cannot pass them on (OpenAI's or Ollama's completion-style endpoint, an
``http`` body without ``{tools}``) would measure a model that never saw its tools, or
be answered HTTP 422; it is refused before any model is asked instead. A target says
so with an optional ``sends_tools`` attribute (absent: it can). Generation settings a
target cannot send (an ``http`` body without ``{generation}``, ``sends_generation``)
are not an error, since an endpoint may fix them itself, but the run warns of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_expertbench.config import Benchmark, ConfigError, TargetSpec


def check_capabilities(benchmarks: Iterable[Benchmark], spec: TargetSpec, target: object) -> None:
    """Raise ConfigError, naming the benchmark file, its key and the target, for the
    first benchmark ``target`` cannot run as written."""
    if getattr(target, "sends_tools", True):
        return
    for bench in benchmarks:
        if bench.tools or bench.tools_from is not None:
            raise ConfigError(
                bench.path,
                "tools",
                f"the benchmark declares tools, but target {spec.name!r} ({_described(spec)}, "
                f"in {spec.source}) cannot send them: {_remedy(spec)}",
            )


def _described(spec: TargetSpec) -> str:
    endpoint = spec.options.get("endpoint")
    return f"kind {spec.kind}" + (f", endpoint {endpoint}" if endpoint else "")


def _remedy(spec: TargetSpec) -> str:
    if spec.kind == "http":
        return "place {tools} in its body, or run the benchmark against another target"
    if spec.kind in ("openai", "ollama"):
        return "use endpoint: chat, or run the benchmark against another target"
    return "run the benchmark against a target that sends tools"


def unsent_generation(
    benchmarks: Iterable[Benchmark], spec: TargetSpec, target: object
) -> list[str]:
    """One line per benchmark whose generation settings ``target`` will not send."""
    if getattr(target, "sends_generation", True):
        return []
    return [
        f"{bench.path}: generation: {dict(bench.generation)} is not sent: target {spec.name!r} "
        f"({_described(spec)}, in {spec.source}) has no {{generation}} in its body"
        for bench in benchmarks
        if bench.generation
    ]
