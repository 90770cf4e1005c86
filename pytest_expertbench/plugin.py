"""pytest hooks: options, collection, items and the session gate.

This is the only module that knows pytest. Everything it does is delegated to plain
modules (``run``, ``engine``, ``report``, …); the hooks translate between pytest's
objects and those modules' records. Per-process state lives in ``config.stash``.
Under xdist every process collects and asks the model for its own items; only the
controller aggregates, compares and writes files.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_expertbench import hookspecs
from pytest_expertbench.gate_items import CONCLUDE_KEY, GATES_KEY
from pytest_expertbench.records import (
    Completion,
    Example,
    ExampleResult,
    Request,
    TargetError,
    ToolCall,
)

if TYPE_CHECKING:  # the rest is imported when a benchmark run needs it: a plain test
    # run with this plugin installed pays nothing for numpy, httpx or the datasets library
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from pytest_expertbench import report
    from pytest_expertbench.cache import ResponseCache
    from pytest_expertbench.config import TargetsFile, TargetSpec
    from pytest_expertbench.engine import BenchmarkStats, Engine
    from pytest_expertbench.judging import TargetPool
    from pytest_expertbench.run import Plan, PlannedBenchmark, Settings
    from pytest_expertbench.servers import ManagedServer
    from pytest_expertbench.targets import Target

BUILTIN_MARKERS = {
    "gpu": "needs a GPU (deselect with -m 'not gpu')",
    "heavy": "a large or expensive benchmark",
    "slow": "a benchmark that takes long",
}
FAST_DIST_MODES = ("no", "loadfile", "loadscope")
DIST_KEY = "expertbench_dist"  # the controller's --dist mode, in each worker's workerinput
PORT_KEY = "expertbench_ports"  # the managed servers' ports by target, likewise
RUN_ID_KEY = "expertbench_run_id"  # the run's id (its cache answers' owner), likewise

# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Option:
    name: str  # the part after --expert-bench-; "" for --expert-bench itself
    help: str
    kind: str = "string"  # string | path | int | seconds | bool
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--expert-bench" + (f"-{self.name}" if self.name else "")

    @property
    def ini(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS = (
    _Option(
        "",
        "run the benchmarks of these suites (comma-separated); off when absent",
        metavar="SUITES",
    ),
    _Option("dir", "where benchmark YAML files live [benchmarks_suites]", "path"),
    _Option("targets", "the targets file [<dir>/targets.yaml]", "path"),
    _Option("target", "the model under test, by name [the targets file's default]", metavar="NAME"),
    _Option("baseline-dir", "where baselines live [baselines]", "path"),
    _Option("baseline", "compare against this baseline label [the target's name]", metavar="LABEL"),
    _Option("save-baseline", "write this run as the target's baseline", "bool"),
    _Option("threshold", "relative threshold of metrics without their own [0.05]", metavar="T"),
    _Option(
        "gate",
        "a regression is beyond the threshold, significant, or both [both]",
        metavar="threshold|significant|both",
    ),
    _Option("alpha", "significance level of the gate's paired tests [0.05]", metavar="A"),
    _Option(
        "coverage",
        "a metric scored on fewer than this share of the examples run is incomplete [0.9]",
        metavar="F",
    ),
    _Option(
        "report-dir", "where results.jsonl and summary.md go [reports/expertbench/<run-id>]", "path"
    ),
    _Option("concurrency", "model requests in flight per process [16]", "int", "N"),
    _Option("limit", "at most N examples per benchmark", "int", "N"),
    _Option("seed", "sampling and bootstrap seed [0]", "int", "N"),
    _Option("cache", "response cache: resume, reuse, refresh or off [resume]", metavar="MODE"),
    _Option("cache-dir", "where the response cache lives [.expertbench/cache]", "path"),
    _Option("record", "write this run's answers as a replay file", "path"),
    _Option(
        "progress",
        "after an item waits this long for the model, a progress line; 0: never [5]",
        "seconds",
        "SECONDS",
    ),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("expertbench", "model benchmarks (pytest-expertbench)")
    for option in OPTIONS:
        dest = option.ini
        if option.kind == "bool":
            group.addoption(
                option.flag, action="store_true", default=None, dest=dest, help=option.help
            )
            parser.addini(option.ini, option.help, type="bool", default=False)
        else:
            group.addoption(
                option.flag, default=None, dest=dest, metavar=option.metavar, help=option.help
            )
            parser.addini(option.ini, option.help, default="")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def _value(config: pytest.Config, name: str) -> Any:
    """An option's command-line value, else its ini twin, else None."""
    option = next(o for o in OPTIONS if o.name == name)
    value = config.getoption(option.ini)
    from_cli = value is not None
    if not from_cli:
        value = config.getini(option.ini)
        if value in ("", None, False):
            return None
    if option.kind == "path":
        base = config.invocation_params.dir if from_cli else _ini_dir(config)
        return (base / str(value)).resolve()
    if option.kind == "int":
        try:
            number = int(value)
        except ValueError:
            raise pytest.UsageError(
                f"{option.flag}: expected a whole number, got {value!r}"
            ) from None
        if number < (1 if name in ("concurrency", "limit") else 0):
            raise pytest.UsageError(f"{option.flag}: {number} is too small")
        return number
    if option.kind == "seconds":
        return _seconds(option.flag, value)
    return value


def _seconds(flag: str, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise pytest.UsageError(f"{flag}: expected seconds (0 or more), got {text!r}")
    return seconds


def _ini_dir(config: pytest.Config) -> Path:
    return config.inipath.parent if config.inipath else config.rootpath


def settings_from(config: pytest.Config, suites: str) -> Settings:
    from pytest_expertbench.config import ConfigError, parse_threshold
    from pytest_expertbench.gate import GATE_MODES
    from pytest_expertbench.run import CacheMode, Settings, run_id

    root = _ini_dir(config)
    bench_dir = _value(config, "dir") or root / "benchmarks_suites"
    threshold_text = _value(config, "threshold") or "0.05"
    cache = _value(config, "cache") or "resume"
    cache = {"on": "resume"}.get(cache, cache)  # "on", the mode before there were four
    progress = _value(config, "progress")
    if cache not in ("resume", "reuse", "refresh", "off"):
        raise pytest.UsageError(
            f"--expert-bench-cache: expected resume, reuse, refresh or off, got {cache!r}"
        )
    # Every process of a run shares the controller's id: answers one worker stored are
    # this run's own for the others.
    this_run = getattr(config, "workerinput", {}).get(RUN_ID_KEY) or run_id()
    try:
        threshold = parse_threshold(_number_or_text(threshold_text), "--expert-bench-threshold", "")
    except ConfigError as exc:
        raise pytest.UsageError(f"--expert-bench-threshold: {exc.message}") from None
    gate = _value(config, "gate") or "both"
    if gate not in GATE_MODES:
        raise pytest.UsageError(
            f"--expert-bench-gate: expected threshold, significant or both, got {gate!r}"
        )
    return Settings(
        suites=tuple(s.strip() for s in suites.split(",") if s.strip()),
        bench_dir=bench_dir,
        targets_path=_value(config, "targets") or bench_dir / "targets.yaml",
        target=_value(config, "target"),
        baseline_dir=_value(config, "baseline-dir") or root / "baselines",
        baseline_label=_value(config, "baseline"),
        save_baseline=bool(_value(config, "save-baseline")),
        threshold=threshold,
        gate=gate,
        alpha=_fraction_option(config, "alpha", 0.05, inclusive=False),
        coverage=_fraction_option(config, "coverage", 0.9, inclusive=True),
        report_dir=_value(config, "report-dir") or root / "reports" / "expertbench" / this_run,
        concurrency=_value(config, "concurrency") or 16,
        limit=_value(config, "limit"),
        seed=_value(config, "seed") or 0,
        cache=cast(CacheMode, cache),
        cache_dir=_value(config, "cache-dir") or root / ".expertbench" / "cache",
        run_id=this_run,
        record=_value(config, "record"),
        progress_s=5.0 if progress is None else progress,  # 0 is a value: never
    )


def _fraction_option(config: pytest.Config, name: str, default: float, *, inclusive: bool) -> float:
    """A number in (0, 1) (``alpha``) or [0, 1] (``coverage``), refused with its flag's name."""
    text = _value(config, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    inside = 0 <= value <= 1 if inclusive else 0 < value < 1
    if not inside:
        span = "from 0 to 1" if inclusive else "between 0 and 1 (exclusive)"
        raise pytest.UsageError(f"--expert-bench-{name}: expected a number {span}, got {text!r}")
    return value


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------- state


@dataclass
class ProcessRun:
    """What one process (controller or xdist worker) needs to run items."""

    plan: Plan
    pool: TargetPool  # every target's engine: the model under test's and the judges'
    cache: ResponseCache | None = None  # opened when the first engine is built
    ports: dict[str, int] = field(default_factory=dict)  # picked for targets that say {port}
    servers: list[ManagedServer] = field(default_factory=list)  # started on the controller
    dist: str = "no"  # the session's --dist mode (a worker's own option says "no")
    prefetched: set[int] = field(default_factory=set)  # id() of items and files queued
    ahead: int = 0  # requests queued for items that have not started yet
    progress_to: Any = None  # the terminal reporter, when waiting items print progress

    @property
    def engine(self) -> Engine:
        return self.pool.engine(self.plan.target.name)

    def request_stats(self) -> dict[str, dict[str, float]]:
        """Each benchmark's request counts (the numbers of its engine stats)."""
        stats = {
            name: {k: float(v) for k, v in asdict(s).items() if k != "stopped"}
            for name, s in self._engine_stats().items()
        }
        engine = self.pool.built(self.plan.target.name)
        for name, cached in (engine.cache_stats() if engine is not None else {}).items():
            stats.get(name, {}).update(cached.counts())  # cached_from:<run id>, … (engine.py)
        return stats

    def stopped_reasons(self) -> dict[str, str]:
        """Why the engine stopped asking, for each benchmark it refused requests of."""
        return {name: s.stopped for name, s in self._engine_stats().items() if s.stopped}

    def _engine_stats(self) -> Mapping[str, BenchmarkStats]:
        engine = self.pool.built(self.plan.target.name)
        return engine.stats() if engine is not None else {}

    def open_cache(self) -> ResponseCache | None:
        from pytest_expertbench.cache import ResponseCache

        settings = self.plan.settings
        if self.cache is None and settings.cache != "off":
            self.cache = ResponseCache(
                settings.cache_dir, mode=settings.cache, run_id=settings.run_id
            )
        return self.cache

    def close(self) -> None:
        self.pool.close()
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        while self.servers:
            self.servers.pop().stop()


@dataclass
class Collected:
    """The controller's results, streamed to a partial file as they arrive."""

    partial: Path
    results: dict[str, ExampleResult] = field(default_factory=dict)
    writer: report.JsonlWriter | None = None
    outcomes: list[report.BenchmarkResult] | None = None
    problems: list[str] = field(default_factory=list)
    requests: dict[str, dict[str, float]] = field(default_factory=dict)  # per benchmark
    gates: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # dropped by workers
    stopped: dict[str, str] = field(default_factory=dict)  # why a benchmark's engine stopped

    def add_request_stats(self, stats: dict[str, dict[str, float]]) -> None:
        """Add one process's request counts (xdist workers each send theirs)."""
        for benchmark, counts in stats.items():
            total = self.requests.setdefault(benchmark, dict.fromkeys(counts, 0.0))
            for name, value in counts.items():
                total[name] = (
                    max(total.get(name, 0.0), value)
                    if name == "elapsed_s"
                    else total.get(name, 0.0) + value
                )

    def add_stopped(self, reasons: Mapping[str, str]) -> None:
        """Keep the first reason each benchmark's requests stopped (a worker's or ours)."""
        for benchmark, reason in reasons.items():
            self.stopped.setdefault(benchmark, reason)


STATS_KEY = "expertbench_requests"  # a worker's request counts, in its workeroutput
STOPPED_KEY = "expertbench_stopped"  # why a worker's engine stopped asking, per benchmark
RUN_KEY = pytest.StashKey[ProcessRun]()
COLLECTED_KEY = pytest.StashKey[Collected]()
RECORD_KEY = pytest.StashKey[dict[str, Any]]()
COMPLETION_KEY = pytest.StashKey[Completion]()


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


# --------------------------------------------------------------------------- configure


def pytest_configure(config: pytest.Config) -> None:
    for name, text in BUILTIN_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    suites = _value(config, "")
    if not suites:
        return
    from pytest_expertbench.baseline import BaselineError
    from pytest_expertbench.cache import CacheError
    from pytest_expertbench.config import ConfigError

    _register_third_party_scorers(config)
    settings = settings_from(config, suites)
    try:
        run = _prepare_run(config, settings)
    except (ConfigError, BaselineError) as exc:
        raise pytest.UsageError(str(exc)) from None
    plan = run.plan
    for planned in plan.benchmarks:
        for marker in planned.benchmark.markers:
            if marker not in BUILTIN_MARKERS:
                config.addinivalue_line("markers", f"{marker}: from {planned.benchmark.path.name}")
    try:
        run.open_cache()  # an unusable cache file stops the run now, not at every item
    except CacheError as exc:
        run.close()
        raise pytest.UsageError(str(exc)) from None
    config.stash[RUN_KEY] = run
    config.stash[CONCLUDE_KEY] = conclude_session
    if _is_controller(config):
        _interrupt_on_sigterm(config)
        _start_servers(run)
        partial = settings.report_dir / "results.partial.jsonl"
        config.stash[COLLECTED_KEY] = Collected(partial=partial)
        config.pluginmanager.register(ResultSink(config), "expertbench-results")
    _collect_benchmark_dir(config, settings.bench_dir)


def _prepare_run(config: pytest.Config, settings: Settings) -> ProcessRun:
    """The plan and the targets' pool; the model under test is built now, so that a bad
    target stops the run before any item, and judges when a scorer first asks them."""
    from pytest_expertbench.config import load_targets
    from pytest_expertbench.engine import EngineSettings
    from pytest_expertbench.judging import TargetPool
    from pytest_expertbench.run import make_plan

    targets, ports = _with_ports(config, load_targets(settings.targets_path))
    under_test = targets.get(settings.target)
    target = make_target(config, under_test)

    def build(spec: TargetSpec) -> Target:
        return target if spec is under_test else make_target(config, spec)

    run: ProcessRun
    pool = TargetPool(
        targets, build, EngineSettings(concurrency=settings.concurrency), lambda: run.open_cache()
    )
    try:
        plan = make_plan(settings, targets, with_baselines=_is_controller(config), asker=pool)
    except BaseException:
        pool.close()
        raise
    dist = getattr(config, "workerinput", {}).get(DIST_KEY, "no")
    run = ProcessRun(plan=plan, pool=pool, ports=ports, dist=dist)
    return run


def _with_ports(config: pytest.Config, targets: TargetsFile) -> tuple[TargetsFile, dict[str, int]]:
    """Give every managed server its ``{port}``: picked on the controller, handed to workers.

    Every target with a server gets one, used or not: which judges a run asks is known
    only once its benchmarks are read, and picking a port costs nothing.
    """
    from pytest_expertbench.servers import resolve_port

    given: dict[str, int] = getattr(config, "workerinput", {}).get(PORT_KEY, {})
    specs, ports = {}, {}
    for name, spec in targets.targets.items():
        specs[name], port = resolve_port(spec, given.get(name))
        if port is not None:
            ports[name] = port
    return replace(targets, targets=specs), ports


def _interrupt_on_sigterm(config: pytest.Config) -> None:
    """Make SIGTERM (a CI job's timeout or cancel, ``timeout``, ``kill``) act as Ctrl-C.

    pytest would die at once, leaving the managed server running and nothing written;
    as an interruption the session ends as a Ctrl-C does: the server is stopped and
    what ran is reported (never saved as a baseline). A handler someone else set is
    left alone; the default comes back when the session ends.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    config.add_cleanup(restore)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"terminated ({signal.Signals(signum).name})")


def _start_servers(run: ProcessRun) -> None:
    """Start the servers of the model under test and of the judges its scorers will ask
    (controller only), before any worker starts."""
    from pytest_expertbench.servers import ManagedServer, ServerError

    names = [run.plan.target.name, *sorted(run.pool.reserved - {run.plan.target.name})]
    for name in names:
        spec = run.pool.targets.targets[name]
        if spec.server is None:
            continue
        server = ManagedServer(spec, run.plan.settings.report_dir, port=run.ports.get(name))
        run.servers.append(server)  # stopped with the run, even after a failed start
        try:
            server.start()
        except ServerError as exc:
            raise pytest.UsageError(str(exc)) from None


def _register_third_party_scorers(config: pytest.Config) -> None:
    from pytest_expertbench.scorers import register_scorer

    config.hook.pytest_expertbench_register_scorers(register=register_scorer)
    for entry in entry_points(group="pytest_expertbench.scorers"):
        register_scorer(entry.name, entry.load())


def _collect_benchmark_dir(config: pytest.Config, bench_dir: Path) -> None:
    """Make pytest collect the benchmark directory.

    With no paths on the command line (testpaths or the current directory) a
    benchmark run collects only the benchmarks; with explicit paths, the benchmark
    directory is added unless a path already points into it.
    """
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = [str(bench_dir)]
        return
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == bench_dir or bench_dir in path.parents or path in bench_dir.parents:
            return
    config.args.append(str(bench_dir))


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return None
    plan = run.plan
    names = ", ".join(f"{p.benchmark.name} ({len(p.examples.examples)})" for p in plan.benchmarks)
    lines = [
        f"expertbench: target {plan.target.name} ({plan.target.kind}), "
        f"suites {','.join(plan.settings.suites)}: {names}"
    ]
    dist = config.getoption("dist", "no")
    if config.getoption("numprocesses", None) and dist not in FAST_DIST_MODES:
        lines.append(
            f"expertbench: --dist {dist} spreads a benchmark over workers, which then ask the "
            "model in smaller batches; use --dist loadfile for full speed (same results)"
        )
    return lines


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker the --dist mode (workers see their own as "no") and the
    managed server's port."""
    node.workerinput[DIST_KEY] = node.config.getoption("dist", "no")
    run = node.config.stash.get(RUN_KEY, None)
    if run is not None:
        node.workerinput[RUN_ID_KEY] = run.plan.settings.run_id
    if run is not None and run.ports:
        node.workerinput[PORT_KEY] = run.ports


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    collected = node.config.stash.get(COLLECTED_KEY, None)
    stats = getattr(node, "workeroutput", {}).get(STATS_KEY)
    if collected is not None:
        collected.add_stopped(getattr(node, "workeroutput", {}).get(STOPPED_KEY, {}))
    if collected is not None and stats:
        collected.add_request_stats(stats)
    for gate in getattr(node, "workeroutput", {}).get(GATES_KEY, ()):
        if collected is not None:
            collected.gates[gate[0]] = tuple(gate)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.close()


# --------------------------------------------------------------------------- collection


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    run = parent.config.stash.get(RUN_KEY, None)
    if run is None or file_path.suffix not in (".yaml", ".yml"):
        return None
    planned = run.plan.by_path.get(file_path.resolve())
    if planned is None:
        return None
    collector: BenchmarkFile = BenchmarkFile.from_parent(parent, path=file_path)
    collector.planned = planned
    return collector


class BenchmarkFile(pytest.File):
    """One benchmark YAML file: collects one item per selected example."""

    planned: PlannedBenchmark

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_expertbench.gate_items import make_gate

        bench = self.planned.benchmark
        self.example_items: list[BenchmarkItem] = []
        for example in self.planned.examples.examples:
            name = f"{bench.name}[{_safe_id(example.id)}]"
            # A string node id is parsed the way --lf and -k parse one (name + params).
            item: BenchmarkItem = BenchmarkItem.from_parent(
                self, name=name, nodeid=f"{self.nodeid}::{name}"
            )
            item.example = example
            for marker in bench.markers:
                item.add_marker(marker)
            self.example_items.append(item)
            yield item
        gate = make_gate(self, bench.name)
        for marker in bench.markers:
            gate.add_marker(marker)
        yield gate


def _safe_id(example_id: str) -> str:
    text = example_id.replace("::", ":").replace("\n", " ")
    return "".join(c if c.isprintable() else "?" for c in text)


class ExampleError(Exception):
    """An item that could not be asked or scored: reported as one line, no traceback."""


class BenchmarkItem(pytest.Item):
    """One example: asked in setup (so an unreachable model errors the item), scored in call."""

    parent: BenchmarkFile
    example: Example

    @property
    def planned(self) -> PlannedBenchmark:
        return self.parent.planned

    @functools.cached_property
    def request(self) -> Request:
        """The request for this example, rendered once (at prefetch, reused in setup)."""
        from pytest_expertbench.run import make_request

        return make_request(self.planned.benchmark, self.example)

    def setup(self) -> None:
        from pytest_expertbench.run import failed_example

        run = self.config.stash[RUN_KEY]
        _prefetch(self, run)
        request = self.request
        try:
            completion = _answer(self, run, request)
        except TargetError as exc:
            self._record(
                failed_example(
                    self.planned.benchmark, self.example, run.plan.target.name, exc.message
                )
            )
            raise ExampleError(f"model request failed: {exc.message}") from None
        self.stash[COMPLETION_KEY] = completion

    def runtest(self) -> None:
        from pytest_expertbench.run import ScoreError, failed_example, item_verdict, score_example

        run = self.config.stash[RUN_KEY]
        bench = self.planned.benchmark
        completion = self.stash[COMPLETION_KEY]
        try:
            result = score_example(bench, self.example, completion, run.plan.target.name)
        except ScoreError as exc:
            self._record(failed_example(bench, self.example, run.plan.target.name, str(exc)))
            raise ExampleError(str(exc)) from None
        self._record(result)
        why = item_verdict(bench, result)
        if why is not None:
            raise ExampleError(f"item_pass: {why}")

    def _record(self, result: ExampleResult) -> None:
        self.stash[RECORD_KEY] = result_to_json(result)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name

    # pytest formats a traceback for every failure (call: repr_failure; setup and teardown:
    # _repr_failure_py): ~80 ms of CPU for each errored item, 150 times the cost of a passing
    # one, which a run against a dead server pays on every item. An ExampleError is reported
    # as its one line, built without a traceback; pytest keeps a str longrepr as it is.
    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, ExampleError):
            return self._one_line(excinfo.value)
        return super().repr_failure(excinfo, style)

    def _repr_failure_py(  # type: ignore[override]  # a str longrepr, as repr_failure's
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, ExampleError):
            return self._one_line(excinfo.value)
        return super()._repr_failure_py(excinfo, style)

    def _one_line(self, error: ExampleError) -> str:
        return f"{self.nodeid}: {error}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Decide once whether waiting items print progress lines, and where."""
    config = session.config
    run = config.stash.get(RUN_KEY, None)
    shown = config.get_verbosity() >= 0 and _is_controller(config)
    if run is not None and run.plan.settings.progress_s and shown:
        run.progress_to = config.pluginmanager.get_plugin("terminalreporter")


def _answer(item: BenchmarkItem, run: ProcessRun, request: Request) -> Completion:
    """The item's answer; while it keeps the item waiting, a progress line now and then.

    Only a run without xdist workers shows them (workers cannot write to the
    terminal), and not under ``-q``.
    """
    every, reporter = run.plan.settings.progress_s, run.progress_to
    if reporter is None:
        return run.engine.result(request)
    waited = 0.0
    while True:
        try:
            return run.engine.result(request, timeout=every)
        except TimeoutError:
            waited += every
        name = item.planned.benchmark.name
        counts = run.request_stats().get(name, {})
        reporter.write_line(waiting_line(name, counts, item.example.id, waited))


def _prefetch(item: BenchmarkItem, run: ProcessRun) -> None:
    """Hand the engine the requests this process will need next, ahead of the item loop.

    Under no xdist, --dist loadfile and loadscope a benchmark file runs whole in one
    process, so its first item queues them all. Under --dist load only the items
    already sent to this worker are known, so those are queued, looking again
    whenever fewer than two rounds of requests are left ahead; under other modes
    (worksteal) an item asks only for itself, which keeps every example asked once.
    """
    run.ahead -= 1
    if run.dist in FAST_DIST_MODES:
        if id(item.parent) in run.prefetched:
            return
        run.prefetched.add(id(item.parent))
        upcoming = [i for i in item.session.items if i.parent is item.parent]
    elif run.dist == "load":
        if run.ahead >= 2 * run.plan.settings.concurrency and id(item) in run.prefetched:
            return
        upcoming = _queued_items(item)
    else:
        upcoming = [item]
    fresh = [i for i in upcoming if isinstance(i, BenchmarkItem) and id(i) not in run.prefetched]
    run.prefetched.update(id(i) for i in fresh)
    run.ahead += len(fresh)
    if fresh:
        run.engine.prefetch([i.request for i in fresh])


def _queued_items(item: BenchmarkItem) -> list[pytest.Item]:
    """The items xdist has already sent this worker (its pending queue), this one first."""
    items = item.session.items
    for plugin in item.config.pluginmanager.get_plugins():
        queue = getattr(plugin, "torun", None)
        if queue is not None and hasattr(queue, "lock"):
            with queue.lock() as pending:
                return [item, *(items[i] for i in pending if isinstance(i, int))]
    return [item]


def make_target(config: pytest.Config, spec: TargetSpec) -> Target:
    from pytest_expertbench.targets import build_target

    made: Target | None = config.hook.pytest_expertbench_make_target(spec=spec)
    return made if made is not None else build_target(spec)


# --------------------------------------------------------------------------- reports


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if not isinstance(item, BenchmarkItem):
        return rep
    if call.when == "teardown" and RECORD_KEY in item.stash:
        rep.expertbench = item.stash[RECORD_KEY]  # JSON-plain: crosses xdist with the report
    return rep


class ResultSink:
    """The controller's listener: keeps each example's record as its report arrives.

    A plugin object (as xdist's DSession is) because ``pytest_runtest_logreport``
    is not handed the config; the state itself stays in ``config.stash``.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._keep(report.nodeid, getattr(report, "expertbench", None))

    def _keep(self, nodeid: str, record: dict[str, Any] | None) -> None:
        from pytest_expertbench import report

        collected = self.config.stash.get(COLLECTED_KEY, None)
        if record is None or collected is None:
            return
        result = result_from_json(record)
        collected.results[nodeid] = result
        try:
            if collected.writer is None:
                collected.partial.parent.mkdir(parents=True, exist_ok=True)
                collected.writer = report.JsonlWriter(collected.partial)
            collected.writer.write(report.example_row(result))
        except OSError as exc:
            collected.problems.append(f"cannot write {collected.partial}: {exc}")


@pytest.hookimpl(tryfirst=True)  # before junitxml writes its file: the gates are in it
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    collected = config.stash.get(COLLECTED_KEY, None)
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    if collected is None:  # an xdist worker: its counts go to the controller
        config.workeroutput[STATS_KEY] = run.request_stats()  # type: ignore[attr-defined]
        config.workeroutput[STOPPED_KEY] = run.stopped_reasons()  # type: ignore[attr-defined]
        return
    collected.add_request_stats(run.request_stats())
    collected.add_stopped(run.stopped_reasons())
    _finish_cached_run(session, run, collected)
    outcomes = conclude_session(session)
    if collected.gates:
        from pytest_expertbench.gate_items import report_on_controller

        report_on_controller(config, list(collected.gates.values()), outcomes)
    failed = any(o.verdict.failed for o in outcomes) or bool(collected.problems)
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def conclude_session(session: pytest.Session) -> list[report.BenchmarkResult]:
    """Aggregate, compare, save and write the reports, once: at the first gate item that
    runs, else at the end of the session (every example has reported by then)."""
    from pytest_expertbench.baseline import BaselineError
    from pytest_expertbench.run import conclude

    config = session.config
    collected, run = config.stash[COLLECTED_KEY], config.stash[RUN_KEY]
    if collected.outcomes is not None:
        return collected.outcomes
    if collected.writer is not None:
        collected.writer.close()
        collected.writer = None
    try:
        interrupted = session.exitstatus in (
            pytest.ExitCode.INTERRUPTED,
            pytest.ExitCode.INTERNAL_ERROR,
        )
        outcomes = conclude(run.plan, collected.results.values(), interrupted=interrupted)
        write_reports(run.plan, outcomes, collected)
    except (OSError, BaselineError) as exc:
        collected.problems.append(f"could not finish the reports: {exc}")
        outcomes = []
    collected.outcomes = outcomes
    return outcomes


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Gates after every example (they judge them all); xdist workers leave theirs to the
    controller, which holds the results."""
    if RUN_KEY not in config.stash:
        return
    from pytest_expertbench.gate_items import drop_from_worker, order_items

    order_items(items)
    if not _is_controller(config):
        drop_from_worker(config, items)


def _finish_cached_run(session: pytest.Session, run: ProcessRun, collected: Collected) -> None:
    """Mark this run's answers finished unless it was interrupted or crashed: a later run
    in ``resume`` mode asks the model again instead of trusting them."""
    from pytest_expertbench.cache import CacheError

    stopped = (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
    if run.cache is None or session.exitstatus in stopped:
        return
    try:
        run.cache.finish_run()
    except CacheError as exc:
        collected.problems.append(str(exc))


def write_reports(
    plan: Plan, outcomes: Sequence[report.BenchmarkResult], collected: Collected
) -> None:
    from pytest_expertbench import report
    from pytest_expertbench import summary as summaries
    from pytest_expertbench.files import atomic_write_text

    directory = plan.settings.report_dir
    if not outcomes:
        return
    directory.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        rows.append(report.run_row(outcome))
        rows += [report.example_row(e) for e in outcome.examples]
        rows += report.metric_rows(outcome, plan.settings.threshold)
    atomic_write_text(directory / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary = summaries.markdown(outcomes)
    atomic_write_text(directory / "summary.md", summary)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary + "\n")
    collected.partial.unlink(missing_ok=True)
    if plan.settings.record is not None:
        from pytest_expertbench.targets.replay import write_replay

        write_replay(
            plan.settings.record, [e for o in outcomes for e in o.examples if e.error is None]
        )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    collected = config.stash.get(COLLECTED_KEY, None)
    if collected is None or collected.outcomes is None:
        return
    from pytest_expertbench import summary as summaries

    run = config.stash[RUN_KEY]
    terminalreporter.write_sep("=", "expertbench")
    if not collected.outcomes:
        terminalreporter.write_line("no benchmark example ran: nothing compared")
    for line in summaries.terminal_lines(collected.outcomes):
        alarm = line.startswith(("REGRESSION", "INCOMPLETE", "Gate failed"))
        terminalreporter.write_line(line, red=alarm, bold=alarm)
    if config.get_verbosity() >= 0:
        for benchmark, counts in sorted(collected.requests.items()):
            terminalreporter.write_line(
                request_line(
                    benchmark,
                    counts,
                    collected.stopped.get(benchmark),
                    this_run=run.plan.settings.run_id,
                )
            )
    for outcome in collected.outcomes:
        if outcome.baseline_note:
            terminalreporter.write_line(
                f"baseline {outcome.snapshot.benchmark}: {outcome.baseline_note}"
            )
    for problem in collected.problems:
        terminalreporter.write_line(f"ERROR {problem}", red=True)
    if collected.outcomes:
        terminalreporter.write_line(f"results: {run.plan.settings.report_dir}")


def request_line(
    benchmark: str, counts: dict[str, float], stopped: str | None = None, *, this_run: str = ""
) -> str:
    """One benchmark's request counts; ``stopped``: why the engine stopped asking, said once
    here rather than on every item it refused."""
    line = (
        f"requests {benchmark}: {counts['asked']:.0f} asked, {counts['done']:.0f} answered, "
        f"{counts['errors']:.0f} failed, {counts['retries']:.0f} retries, "
        f"{counts['cached']:.0f} from the cache{cache_sources(counts, this_run)}{_rate(counts)}"
    )
    if counts.get("cache_stale"):
        line += (
            f", {counts['cache_stale']:.0f} stored answers not served "
            "(the server reports another system_fingerprint)"
        )
    if stopped:
        line += f"; {counts.get('not_asked', 0.0):.0f} not asked, stopped asking: {stopped}"
    return line


def cache_sources(counts: dict[str, float], this_run: str = "") -> str:
    """Which runs the cached answers came from: `` (run 20261201-210405-1234)``, or with
    counts when several (`` (run A: 4, this run: 2)``); "" when none came from the cache."""
    runs = sorted(
        (name.removeprefix("cached_from:"), n)
        for name, n in counts.items()
        if name.startswith("cached_from:") and n
    )
    names = [("this run" if run == this_run else f"run {run}", n) for run, n in runs]
    if len(names) <= 1:
        return f" ({names[0][0]})" if names else ""
    return " (" + ", ".join(f"{name}: {n:.0f}" for name, n in names) + ")"


def waiting_line(benchmark: str, counts: dict[str, float], example: str, waited_s: float) -> str:
    got = {name: counts.get(name, 0.0) for name in ("asked", "done", "errors", "retries")}
    return (
        f"requests {benchmark}: {got['done']:.0f}/{got['asked']:.0f} answered{_rate(counts)}, "
        f"{got['errors']:.0f} failed, {got['retries']:.0f} retries; "
        f"{example} has waited {waited_s:.0f} s"
    )


def _rate(counts: dict[str, float]) -> str:
    elapsed = counts.get("elapsed_s", 0.0)
    return f", {counts.get('done', 0.0) / elapsed:.1f} req/s" if elapsed > 0 else ""


# --------------------------------------------------------------------------- records


def result_to_json(result: ExampleResult) -> dict[str, Any]:
    """Plain dicts, lists and scalars, which execnet carries (``asdict``'s deep copy costs
    more than the rest of an item's own work)."""
    doc = dict(vars(result))
    doc["scores"] = dict(result.scores)
    doc["details"] = dict(result.details)
    doc["tool_calls"] = [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
    return doc


def result_from_json(doc: dict[str, Any]) -> ExampleResult:
    calls = tuple(ToolCall(**c) for c in doc.get("tool_calls", ()))
    return ExampleResult(**{**doc, "tool_calls": calls})
