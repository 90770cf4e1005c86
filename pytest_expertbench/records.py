"""The plain records that cross module boundaries.

Every module hands these frozen dataclasses to the next one and never reaches back
into the module that called it, so each step (dataset, engine, scorers, metrics,
baseline, report) can be used and tested without pytest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_expertbench.errors import ExpertBenchError

Direction = Literal["higher", "lower"]
# How the gate decides a regression (gate.py): beyond the threshold, significant, or both.
GateMode = Literal["threshold", "significant", "both"]
GATE_MODES: tuple[GateMode, ...] = ("threshold", "significant", "both")


@dataclass(frozen=True)
class Example:
    """One dataset row chosen for a run.

    ``digest`` is the sha256 of the row's canonical JSON: the run's dataset
    fingerprint is built from the digests, so a changed row is noticed even
    when its id stays the same.
    """

    id: str
    index: int
    fields: Mapping[str, Any]
    digest: str


@dataclass(frozen=True)
class Request:
    """What a target is asked for one example."""

    benchmark: str
    example_id: str
    prompt: str
    system: str | None = None
    generation: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Mapping[str, Any], ...] = ()
    # The example's fields, for Python targets and `http` body templates.
    fields: Mapping[str, Any] = field(default_factory=dict)
    # Which of the benchmark's ``repeats`` this is (0 for the first, and for every
    # request of a benchmark asked once).
    repeat: int = 0

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.benchmark, self.example_id, self.repeat)


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the model made it; ``arguments`` is the raw JSON text."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """A target's answer to one request."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    latency_ms: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached: bool = False
    attempts: int = 1
    # What the server says it is (OpenAI's ``system_fingerprint``): a stored answer whose
    # fingerprint differs from the one the server reports now is not served from the cache.
    server_fingerprint: str | None = None
    # A streamed answer's timing (streaming.py): milliseconds from sending the request to
    # the first output token, mean per output token after it, and each gap between chunks.
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: tuple[float, ...] = ()


def one_line(text: str, limit: int = 200) -> str:
    """Whitespace collapsed and cut, so a message fits on one terminal line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class TargetError(ExpertBenchError):
    """A request that failed; ``retryable`` tells the engine whether to try again.

    ``connection_failed`` marks a request that never reached the server (refused,
    reset, no such host, httpcore's connect timeout): the engine stops asking a target
    whose requests keep failing that way (see :mod:`pytest_expertbench.breaker`).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        connection_failed: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.connection_failed = connection_failed


@dataclass(frozen=True)
class Score:
    """A scorer's verdict on one example; ``detail`` explains a low score (optional)."""

    value: float
    detail: str | None = None


@dataclass(frozen=True)
class Threshold:
    """How far a metric may move against its direction before it is a regression.

    Exactly one of ``rel`` (a fraction of the old value) and ``abs`` (in the
    metric's unit) is set.
    """

    rel: float | None = None
    abs: float | None = None

    def to_json(self) -> dict[str, float]:
        return {"rel": self.rel} if self.rel is not None else {"abs": float(self.abs or 0.0)}


@dataclass(frozen=True)
class MetricResult:
    """One aggregated metric; the same shape in results.jsonl, baselines and reports."""

    metric_id: str  # "<benchmark>.<metric name>"
    value: float
    ci: tuple[float, float] | None
    samples_used: int
    direction: Direction
    unit: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.metric_id.split(".", 1)[-1]


@dataclass(frozen=True)
class ExampleResult:
    """What happened to one example: its scores, or the error that stopped it."""

    benchmark: str
    id: str
    index: int
    digest: str
    target: str
    scores: Mapping[str, float]
    response: str
    error: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict)
    # A benchmark with ``repeats`` > 1: ``scores`` are the means over the repeats,
    # ``repeat_scores`` each score of every repeat (in repeat order) and
    # ``repeat_answers`` every repeat's answer ({response, tool_calls, latency_ms}, for
    # --expert-bench-record); ``response``/``tool_calls`` are the first repeat's.
    # Both are empty for a benchmark asked once.
    repeat_scores: Mapping[str, Sequence[float]] = field(default_factory=dict)
    repeat_answers: tuple[Mapping[str, Any], ...] = ()


_REPEAT_AGG = re.compile(r"(pass@|pass\^)([1-9][0-9]*)|flaky")


def repeat_aggregation(agg: str) -> tuple[str, int] | None:
    """``("pass@", k)``, ``("pass^", k)`` or ``("flaky", 0)`` for the aggregations made of
    each example's repeats; None for the others (``mean``, ``p95`` …)."""
    found = _REPEAT_AGG.fullmatch(agg)
    if found is None:
        return None
    if agg == "flaky":
        return ("flaky", 0)
    return (found.group(1), int(found.group(2)))
