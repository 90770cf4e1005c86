"""One benchmark run, without pytest: the plan, the scoring of one example, the verdict.

``plugin.py`` turns pytest's options into :class:`Settings`, asks :func:`make_plan`
for what to run, calls :func:`score_example` in each item and, on the controller,
:func:`conclude` once every result is in. Keeping this here means the whole run is
testable as plain functions and the hooks stay one-liners.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pytest_expertbench import baseline as baselines
from pytest_expertbench import gate as gates
from pytest_expertbench import saving
from pytest_expertbench.baseline import Snapshot
from pytest_expertbench.benchmark_file import load_benchmarks
from pytest_expertbench.config import (
    Benchmark,
    ConfigError,
    Price,
    TargetsFile,
    TargetSpec,
    with_repeats,
)
from pytest_expertbench.datasets import (
    ExampleDataError,
    ExampleSet,
    field_problem,
    load_examples,
)
from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.metrics import per_example
from pytest_expertbench.records import (
    Completion,
    Example,
    ExampleResult,
    GateMode,
    Request,
    Threshold,
    repeat_aggregation,
)
from pytest_expertbench.report import BenchmarkResult
from pytest_expertbench.saving import SaveMode
from pytest_expertbench.scorers import Asker, ScoringError
from pytest_expertbench.snapshots import current_git_sha, environment_info, make_snapshot
from pytest_expertbench.streaming import stream_scores

CacheMode = Literal["resume", "reuse", "refresh", "off"]


@dataclass(frozen=True)
class Settings:
    """Every option of a run, already resolved to values and absolute paths."""

    suites: tuple[str, ...]
    bench_dir: Path
    targets_path: Path
    target: str | None = None
    baseline_dir: Path = Path("baselines")
    baseline_label: str | None = None
    baseline_dir_given: bool = False  # named by the user: a missing folder is then an error
    save_baseline: SaveMode = "off"
    threshold: Threshold = field(default_factory=lambda: Threshold(rel=0.05))
    gate: GateMode = "both"
    alpha: float = 0.05
    coverage: float = 0.9  # a metric over fewer than this share of the examples run fails
    report_dir: Path = Path("reports/expertbench")
    concurrency: int = 16  # the most in flight per process (with adaptive: the ceiling)
    adaptive: bool = False  # --expert-bench-concurrency=auto (adaptive.py)
    limit: int | None = None
    seed: int = 0
    cache: CacheMode = "resume"
    cache_dir: Path = Path(".expertbench/cache")
    run_id: str = ""  # one id for all processes of a run; "" lets the cache pick one
    record: Path | None = None
    progress_s: float = 5.0  # an item waiting this long shows a progress line (0: never)
    repeats: int = 1  # times each example is asked, for benchmarks without their own repeats


@dataclass(frozen=True)
class PlannedBenchmark:
    benchmark: Benchmark
    suite: str
    examples: ExampleSet
    baseline_path: Path
    baseline: Snapshot | None = None


@dataclass(frozen=True)
class Plan:
    settings: Settings
    target: TargetSpec
    benchmarks: tuple[PlannedBenchmark, ...]

    @functools.cached_property
    def by_path(self) -> dict[Path, PlannedBenchmark]:
        """Benchmarks by their file, for collection (built once, asked for every file)."""
        return {p.benchmark.path.resolve(): p for p in self.benchmarks}

    @property
    def baseline_label(self) -> str:
        return self.settings.baseline_label or self.target.name

    @property
    def gate_rule(self) -> gates.GateRule:
        settings = self.settings
        return gates.GateRule(
            threshold=settings.threshold,
            mode=settings.gate,
            alpha=settings.alpha,
            coverage=settings.coverage,
            seed=settings.seed,
        )


class ScoreError(ExpertBenchError):
    """A scorer gave something that is not a finite number."""


def make_plan(
    settings: Settings, targets: TargetsFile, *, with_baselines: bool, asker: Asker | None = None
) -> Plan:
    """Load and check everything a run needs; raises ConfigError or BaselineError.

    A benchmark in several chosen suites runs once, in the first suite named.
    """
    target = targets.get(settings.target)
    chosen = []
    for bench in load_benchmarks(settings.bench_dir, asker):
        suite = next((s for s in settings.suites if s in bench.suites), None)
        if suite is not None:
            chosen.append((with_repeats(bench, settings.repeats), suite))
    if not chosen:
        raise ConfigError(
            settings.bench_dir,
            "suites",
            f"no benchmark belongs to the suite(s) {', '.join(settings.suites)}",
        )
    label = settings.baseline_label or target.name
    _check_baseline_source(settings)
    planned = []
    for bench, suite in chosen:
        examples = load_examples(bench, suite, seed=settings.seed, limit=settings.limit)
        path = baselines.baseline_path(settings.baseline_dir, label, suite, bench.name)
        snapshot = baselines.load(path) if with_baselines else None
        planned.append(PlannedBenchmark(bench, suite, examples, path, snapshot))
    return Plan(settings=settings, target=target, benchmarks=tuple(planned))


def _check_baseline_source(settings: Settings) -> None:
    """A baseline folder or label the user named must exist: a typo would otherwise pass
    as "no baseline yet", and the gate would compare nothing."""
    root = settings.baseline_dir
    if settings.baseline_dir_given and not root.is_dir() and settings.save_baseline == "off":
        raise ConfigError(root, "--expert-bench-baseline-dir", "no such folder")
    label = settings.baseline_label
    if label is not None and not (root / baselines.safe_name(label)).is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise ConfigError(
            root,
            "--expert-bench-baseline",
            f"no baselines labelled {label!r} here (labels: {', '.join(known) or 'none'})",
        )


def make_request(benchmark: Benchmark, example: Example, repeat: int = 0) -> Request:
    """The request for one example; with ``repeats`` > 1, repeat ``r`` of it, sent with
    ``seed`` = the generation's seed (or 0) + r. A benchmark asked once sends its
    generation as written, so its requests (and their cache keys) stay the same."""
    from pytest_expertbench.row_tools import request_tools
    from pytest_expertbench.template import render

    problem = field_problem(benchmark, example.id, example.fields)
    if problem is not None:  # never a prompt that says "None"
        raise ExampleDataError(problem)
    generation = benchmark.generation
    if benchmark.times > 1:
        generation = {**generation, "seed": int(generation.get("seed") or 0) + repeat}
    return Request(
        benchmark=benchmark.name,
        example_id=example.id,
        prompt=render(benchmark.prompt, example.fields),
        system=render(benchmark.system, example.fields) if benchmark.system else None,
        generation=generation,
        tools=request_tools(benchmark, example),  # the benchmark's, or the row's converted
        fields=example.fields,
        repeat=repeat,
    )


def make_requests(benchmark: Benchmark, example: Example) -> tuple[Request, ...]:
    """Every request of one example: one per repeat."""
    return tuple(make_request(benchmark, example, r) for r in range(benchmark.times))


def score_example(
    benchmark: Benchmark,
    example: Example,
    completion: Completion | Sequence[Completion],
    target: str,
    price: Price | None = None,
) -> ExampleResult:
    """Every score of one example's answer, or of each of its repeats' answers.

    With several answers, each score is the mean over the repeats (so the example stays
    the unit of intervals and of the gate's paired tests), every repeat's scores are
    kept in ``repeat_scores``, and each pass@k / pass^k / flaky metric's own value for
    the example is added to the scores as ``<score>:<agg>``. Raises ScoreError for a
    score that is not a finite number. ``price``: the target's, for the cost_usd score.
    """
    answers = (completion,) if isinstance(completion, Completion) else tuple(completion)
    scored = [_scores_of(benchmark, example, answer, price) for answer in answers]
    scores, details = scored[0]
    repeats: dict[str, list[float]] = {}
    if len(scored) > 1:
        names = [name for name in scores if all(name in s for s, _ in scored)]
        repeats = {name: [s[name] for s, _ in scored] for name in names}
        scores = {
            name: math.fsum(values) / len(values)
            for name in dict.fromkeys(n for s, _ in scored for n in s)
            if (values := [s[name] for s, _ in scored if name in s])
        }
    for spec in benchmark.metrics:
        if repeat_aggregation(spec.agg) is not None and spec.of in scores:
            scores[spec.key] = per_example(spec.agg, repeats.get(spec.of, [scores[spec.of]]))
    first = answers[0]
    return replace(
        failed_example(benchmark, example, target, None),
        scores=scores,
        response=first.text,
        tool_calls=first.tool_calls,
        details=details,
        repeat_scores=repeats,
        repeat_answers=tuple(_answer_record(a) for a in answers) if len(answers) > 1 else (),
    )


def _answer_record(completion: Completion) -> dict[str, Any]:
    return {
        "response": completion.text,
        "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in completion.tool_calls],
        "latency_ms": completion.latency_ms,
    }


def _scores_of(
    benchmark: Benchmark, example: Example, completion: Completion, price: Price | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    scores: dict[str, float] = {"latency_ms": completion.latency_ms}
    if completion.completion_tokens and completion.latency_ms > 0:
        scores["tokens_per_s"] = completion.completion_tokens / (completion.latency_ms / 1000)
    scores.update(usage_scores(completion, price))
    scores.update(stream_scores(completion))  # a streamed answer's ttft, tpot, itl
    details: dict[str, str] = {}
    for i, spec in enumerate(benchmark.scorers):
        try:
            score = spec.function(completion, example)
        except ScoringError as exc:
            raise ScoreError(f"{benchmark.path.name}: scorers[{i}] ({spec.kind}): {exc}") from None
        value = score.value
        if not isinstance(value, int | float) or not math.isfinite(value):
            why = f" ({score.detail})" if score.detail else ""
            raise ScoreError(
                f"{benchmark.path.name}: scorers[{i}] ({spec.kind}) gave {value!r}{why} for "
                f"example {example.id}: a score must be a finite number"
            )
        scores[spec.name] = float(value)
        if score.detail:
            details[spec.name] = score.detail
    return scores, details


def usage_scores(completion: Completion, price: Price | None) -> dict[str, float]:
    """prompt_tokens and completion_tokens where the target reports them, and cost_usd
    where it reports both and has a price: nothing is made up for a missing count."""
    scores: dict[str, float] = {}
    if completion.prompt_tokens is not None:
        scores["prompt_tokens"] = float(completion.prompt_tokens)
    if completion.completion_tokens is not None:
        scores["completion_tokens"] = float(completion.completion_tokens)
    if price is not None and len(scores) == 2:
        scores["cost_usd"] = price.cost_usd(scores["prompt_tokens"], scores["completion_tokens"])
    return scores


def failed_example(
    benchmark: Benchmark, example: Example, target: str, error: str | None
) -> ExampleResult:
    """The record of an example that has no scores (yet, when ``error`` is None)."""
    return ExampleResult(
        benchmark=benchmark.name,
        id=example.id,
        index=example.index,
        digest=example.digest,
        target=target,
        scores={},
        response="",
        error=error,
    )


def item_verdict(benchmark: Benchmark, result: ExampleResult) -> str | None:
    """Why an item fails its ``item_pass:`` rule, or None when it passes."""
    rule = benchmark.item_pass
    if rule is None:
        return None
    value = result.scores.get(rule.score, 0.0)
    if value >= rule.min:
        return None
    detail = result.details.get(rule.score)
    return f"{rule.score} = {value:g} < {rule.min:g}" + (f": {detail}" if detail else "")


def conclude(
    plan: Plan, results: Iterable[ExampleResult], *, interrupted: bool = False
) -> list[BenchmarkResult]:
    """Aggregate, compare and (when asked) save baselines for every benchmark that ran.

    Every benchmark is compared first and the session's metrics are then decided
    together, so the gate's multiple-testing correction covers the whole session.
    An interrupted run (Ctrl-C, a crash of the session) still reports what it has,
    but never becomes a baseline.
    """
    by_benchmark: dict[str, list[ExampleResult]] = {}
    for example in results:
        by_benchmark.setdefault(example.benchmark, []).append(example)
    environment = environment_info(plan.target)
    git_sha = current_git_sha(plan.settings.bench_dir)
    ran_planned: list[tuple[PlannedBenchmark, tuple[ExampleResult, ...]]] = []
    snapshots: list[Snapshot] = []
    verdicts: list[gates.Verdict] = []
    for planned in plan.benchmarks:
        ran = tuple(sorted(by_benchmark.get(planned.benchmark.name, []), key=lambda r: r.index))
        if not ran:
            continue  # deselected or not run: nothing to compare
        snapshot = make_snapshot(plan, planned, ran, environment, git_sha)
        ran_planned.append((planned, ran))
        snapshots.append(snapshot)
        verdicts.append(gates.compare(planned.baseline, snapshot, plan.gate_rule))
    concluded = []
    for (planned, ran), snapshot, verdict in zip(
        ran_planned, snapshots, gates.decide(verdicts), strict=True
    ):
        note = None
        if plan.settings.save_baseline != "off":
            note = saving.refusal(
                plan.settings.save_baseline,
                len(planned.examples.examples),
                ran,
                verdict,
                interrupted=interrupted,
            ) or save_baseline(plan, planned, snapshot)
        concluded.append(
            BenchmarkResult(
                snapshot=snapshot,
                verdict=verdict,
                examples=ran,
                baseline_path=shown_path(planned.baseline_path),
                baseline_note=note,
            )
        )
    return concluded


def save_baseline(plan: Plan, planned: PlannedBenchmark, snapshot: Snapshot) -> str:
    """Write the run as the target's baseline (under the target's name, whichever label
    was compared against); the file it replaces is kept (see saving.py)."""
    path = baselines.baseline_path(
        plan.settings.baseline_dir, plan.target.name, planned.suite, planned.benchmark.name
    )
    return saving.save(path, snapshot, shown_path(path))


def shown_path(path: Path) -> Path:
    """``path`` relative to the working directory when inside it: reports and PR comments
    then read the same on every machine."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def run_id() -> str:
    """A new run's id (UTC time and pid), unique within a process too."""
    from pytest_expertbench.cache import new_run_id

    return new_run_id()
