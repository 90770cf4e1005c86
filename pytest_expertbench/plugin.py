"""pytest hooks: configure, collect, report and conclude a benchmark run.

This module and the ones it splits into (``options``, ``startup``, ``state``, ``items``,
``gate_items``) are the only ones that know pytest. Everything else is delegated to
plain modules (``run``, ``engine``, ``report``, …); the hooks translate between
pytest's objects and those modules' records. Per-process state lives in ``config.stash``.
Under xdist every process collects and asks the model for its own items; only the
controller aggregates, compares and writes files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expertbench import hookspecs
from pytest_expertbench.gate_items import CONCLUDE_KEY, GATES_KEY, GateOrder
from pytest_expertbench.interrupts import interrupt_once
from pytest_expertbench.interrupts import track as track_worker
from pytest_expertbench.items import (
    CHUNKED_DIST_MODES,
    FAST_DIST_MODES,
    BenchmarkFile,
    BenchmarkItem,
)
from pytest_expertbench.options import add_options, option_value, settings_from
from pytest_expertbench.startup import (
    interrupt_on_sigterm,
    prepare_run,
    register_third_party_scorers,
    start_servers,
)
from pytest_expertbench.state import (
    CACHE_FAILED_KEY,
    COLLECTED_KEY,
    DIST_KEY,
    PORT_KEY,
    RECORD_KEY,
    RUN_ID_KEY,
    RUN_KEY,
    STATS_KEY,
    STOPPED_KEY,
    Collected,
    ProcessRun,
    is_controller,
    result_from_json,
)

if TYPE_CHECKING:  # the rest is imported when a benchmark run needs it: a plain test
    # run with this plugin installed pays nothing for numpy, httpx or the datasets library
    from pytest_expertbench import report
    from pytest_expertbench.config import Price
    from pytest_expertbench.run import Plan

BUILTIN_MARKERS = {
    "gpu": "needs a GPU (deselect with -m 'not gpu')",
    "heavy": "a large or expensive benchmark",
    "slow": "a benchmark that takes long",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


# --------------------------------------------------------------------------- configure


def pytest_configure(config: pytest.Config) -> None:
    for name, text in BUILTIN_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    suites = option_value(config, "")
    if not suites:
        return
    from pytest_expertbench.baseline import BaselineError
    from pytest_expertbench.cache import CacheError
    from pytest_expertbench.config import ConfigError

    settings = settings_from(config, suites)
    register_third_party_scorers(config, settings.bench_dir)
    try:
        run = prepare_run(config, settings)
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
    # Gates after every example (they judge them all), even after --lf's selection; xdist
    # workers leave theirs to the controller, which holds the results.
    config.pluginmanager.register(GateOrder(is_controller(config)), "expertbench-gate-order")
    if is_controller(config):
        interrupt_on_sigterm(config)
        start_servers(run)
        partial = settings.report_dir / "results.partial.jsonl"
        config.stash[COLLECTED_KEY] = Collected(partial=partial)
        config.pluginmanager.register(ResultSink(config), "expertbench-results")
    else:  # an xdist worker, which its controller interrupts when it is (interrupts.py)
        interrupt_once(config)
    _collect_benchmark_dir(config, settings.bench_dir)


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
    fast = (*FAST_DIST_MODES, *CHUNKED_DIST_MODES)
    if config.getoption("numprocesses", None) and dist not in fast:
        lines.append(
            f"expertbench: --dist {dist} spreads a benchmark over workers, which then ask the "
            "model in smaller batches; use --dist loadfile for full speed (same results)"
        )
    return lines


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under --dist load and worksteal, a benchmark's examples go to workers in chunks
    that each worker asks for whole (chunks.py); None leaves xdist's own scheduler."""
    run = config.stash.get(RUN_KEY, None)
    if run is None or config.getoption("dist", "no") not in CHUNKED_DIST_MODES:
        return None
    from pytest_expertbench.chunks import ChunkScheduling, chunk_size

    return ChunkScheduling(config, log, chunk_size(run.plan.settings.concurrency))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker the --dist mode (workers see their own as "no") and the
    managed server's port."""
    node.workerinput[DIST_KEY] = node.config.getoption("dist", "no")
    track_worker(node)  # interrupted with the controller
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
        failed_write = getattr(node, "workeroutput", {}).get(CACHE_FAILED_KEY)
        if failed_write and failed_write not in collected.problems:
            collected.problems.append(failed_write)
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


def pytest_sessionstart(session: pytest.Session) -> None:
    """Decide once whether waiting items print progress lines, and where."""
    config = session.config
    run = config.stash.get(RUN_KEY, None)
    shown = config.get_verbosity() >= 0 and is_controller(config)
    if run is not None and run.plan.settings.progress_s and shown:
        run.progress_to = config.pluginmanager.get_plugin("terminalreporter")


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
        config.workeroutput[CACHE_FAILED_KEY] = run.flush_cache()  # type: ignore[attr-defined]
        return
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
    collected.add_request_stats(run.request_stats())  # the workers' came at testnodedown
    collected.add_stopped(run.stopped_reasons())
    if collected.writer is not None:
        collected.writer.close()
        collected.writer = None
    try:
        interrupted = session.exitstatus in (
            pytest.ExitCode.INTERRUPTED,
            pytest.ExitCode.INTERNAL_ERROR,
        )
        outcomes = conclude(run.plan, collected.results.values(), interrupted=interrupted)
        write_reports(run.plan, outcomes, collected, prices(run))
    except (OSError, BaselineError) as exc:
        collected.problems.append(f"could not finish the reports: {exc}")
        outcomes = []
    collected.outcomes = outcomes
    return outcomes


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


def prices(run: ProcessRun) -> dict[str, Price | None]:
    """Each target's ``price``, by name (the model under test's as the run built it)."""
    found = {name: spec.price for name, spec in run.pool.targets.targets.items()}
    return {**found, run.plan.target.name: run.plan.target.price}


def token_lines(
    plan: Plan, collected: Collected, prices: Mapping[str, Price | None]
) -> dict[str, str]:
    """Each benchmark's token line (the model's and its judges' tokens and cost)."""
    from pytest_expertbench.summary import token_line

    lines = {
        name: token_line(name, counts, plan.target.name, prices)
        for name, counts in collected.requests.items()
    }
    return {name: line for name, line in lines.items() if line is not None}


def write_reports(
    plan: Plan,
    outcomes: Sequence[report.BenchmarkResult],
    collected: Collected,
    prices: Mapping[str, Price | None],
) -> None:
    from pytest_expertbench import report
    from pytest_expertbench import summary as summaries

    if not outcomes:
        return
    lines = {
        name: summaries.request_line(
            name, counts, collected.stopped.get(name), this_run=plan.settings.run_id, rate=False
        )
        for name, counts in collected.requests.items()
    }
    tokens = token_lines(plan, collected, prices)
    text = summaries.markdown(outcomes, requests=lines, tokens=tokens)
    report.write_run(plan.settings.report_dir, outcomes, plan.settings.threshold, text)
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
        tokens = token_lines(run.plan, collected, prices(run))
        for benchmark, counts in sorted(collected.requests.items()):
            terminalreporter.write_line(
                summaries.request_line(
                    benchmark,
                    counts,
                    collected.stopped.get(benchmark),
                    this_run=run.plan.settings.run_id,
                )
            )
            if benchmark in tokens:
                terminalreporter.write_line(tokens[benchmark])
    for outcome in collected.outcomes:
        if outcome.baseline_note:
            terminalreporter.write_line(
                f"baseline {outcome.snapshot.benchmark}: {outcome.baseline_note}"
            )
    for problem in collected.problems:
        terminalreporter.write_line(f"ERROR {problem}", red=True)
    if collected.outcomes:
        terminalreporter.write_line(f"results: {run.plan.settings.report_dir}")


# --------------------------------------------------------------------------- records
