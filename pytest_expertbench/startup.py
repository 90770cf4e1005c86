"""The session's start on pytest's side: the targets, the pool, the plan, the servers.

``plugin.pytest_configure`` calls these before collection, so that a bad targets file,
a target that cannot be built or a managed server that does not come up stops the run
before any item. Like ``plugin.py`` it knows pytest (the config, UsageError); what it
builds comes from plain modules, imported when a benchmark run needs them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_expertbench.interrupts import handle_unless_taken
from pytest_expertbench.state import DIST_KEY, PORT_KEY, ProcessRun, is_controller

if TYPE_CHECKING:
    from pytest_expertbench.config import TargetsFile, TargetSpec
    from pytest_expertbench.run import Settings
    from pytest_expertbench.targets import Target


def prepare_run(config: pytest.Config, settings: Settings) -> ProcessRun:
    """The plan and the targets' pool; the model under test is built now, so that a bad
    target stops the run before any item, and judges when a scorer first asks them."""
    from pytest_expertbench.capabilities import check_capabilities, unsent_generation
    from pytest_expertbench.engine import EngineSettings
    from pytest_expertbench.judging import TargetPool
    from pytest_expertbench.run import make_plan
    from pytest_expertbench.targets_file import load_targets

    targets, ports = _with_ports(config, load_targets(settings.targets_path))
    under_test = targets.get(settings.target)
    target = make_target(config, under_test)

    def build(spec: TargetSpec) -> Target:
        return target if spec is under_test else make_target(config, spec)

    run: ProcessRun
    pool = TargetPool(
        targets,
        build,
        EngineSettings(concurrency=settings.concurrency, adaptive=settings.adaptive),
        lambda: run.open_cache(),
    )
    try:
        plan = make_plan(settings, targets, with_baselines=is_controller(config), asker=pool)
        check_capabilities((p.benchmark for p in plan.benchmarks), under_test, target)
    except BaseException:
        pool.close()
        raise
    if is_controller(config):
        for line in unsent_generation([p.benchmark for p in plan.benchmarks], under_test, target):
            config.issue_config_time_warning(pytest.PytestConfigWarning(line), stacklevel=2)
    dist = getattr(config, "workerinput", {}).get(DIST_KEY, "no")
    run = ProcessRun(plan=plan, pool=pool, ports=ports, dist=dist)
    return run


def _with_ports(config: pytest.Config, targets: TargetsFile) -> tuple[TargetsFile, dict[str, int]]:
    """Give every managed server its ``{port}``: picked on the controller, handed to workers.

    Every target with a server gets one, used or not: which judges a run asks is known
    only once its benchmarks are read, and picking a port costs nothing.
    """
    from pytest_expertbench.ports import resolve_port

    given: dict[str, int] = getattr(config, "workerinput", {}).get(PORT_KEY, {})
    specs, ports = {}, {}
    for name, spec in targets.targets.items():
        specs[name], port = resolve_port(spec, given.get(name))
        if port is not None:
            ports[name] = port
    return replace(targets, targets=specs), ports


def interrupt_on_sigterm(config: pytest.Config) -> None:
    """Make SIGTERM (a CI job's timeout or cancel, ``timeout``, ``kill``) act as Ctrl-C.

    pytest would die at once, leaving the managed server running and nothing written;
    as an interruption the session ends as a Ctrl-C does: the server is stopped and
    what ran is reported (never saved as a baseline). A handler someone else set is
    left alone; the default comes back when the session ends.
    """
    handle_unless_taken(config, signal.SIGTERM, signal.SIG_DFL, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"terminated ({signal.Signals(signum).name})")


def start_servers(run: ProcessRun) -> None:
    """Start the servers of the model under test and of the judges its scorers will ask
    (controller only), before any worker starts."""
    from pytest_expertbench.servers import ManagedServer, ServerError

    names = [run.plan.target.name, *sorted(run.pool.reserved - {run.plan.target.name})]
    for name in names:
        spec = run.pool.targets.targets[name]
        if spec.server is None:
            continue
        server = ManagedServer(
            spec, run.plan.settings.report_dir, port=run.ports.get(name), scrubber=run.pool.scrubber
        )
        run.servers.append(server)  # stopped with the run, even after a failed start
        try:
            server.start()
        except ServerError as exc:
            raise pytest.UsageError(str(exc)) from None


def register_third_party_scorers(config: pytest.Config, bench_dir: Path) -> None:
    """This run's scorers from the hook and the entry points, forgotten at its end.

    The conftest.py files that the benchmark directory sees are imported first, so that
    their hooks (scorers, targets) count although pytest would import them only when it
    collects that directory, after the benchmark files have been read.
    """
    from pytest_expertbench.scorers import forget_registered_scorers, register_scorer

    forget_registered_scorers()
    config.add_cleanup(forget_registered_scorers)
    load_conftests(config, bench_dir)
    config.hook.pytest_expertbench_register_scorers(register=register_scorer)
    for entry in entry_points(group="pytest_expertbench.scorers"):
        register_scorer(entry.name, entry.load())


def load_conftests(config: pytest.Config, directory: Path) -> None:
    """Import ``directory``'s conftest.py and its parents' (up to --confcutdir), as pytest's
    collection does; collection then finds them imported (pytest keeps them by folder)."""
    if not directory.is_dir():
        return  # make_plan says so, naming the option
    config.pluginmanager._loadconftestmodules(
        directory,
        config.getoption("importmode"),
        config.rootpath,
        consider_namespace_packages=config.getini("consider_namespace_packages"),
    )


def make_target(config: pytest.Config, spec: TargetSpec) -> Target:
    """The hook's target (first result wins), else an installed package's for the
    ``kind`` (the ``pytest_expertbench.targets`` entry points), else a built-in kind's."""
    from pytest_expertbench.targets import build_target

    made: Target | None = config.hook.pytest_expertbench_make_target(spec=spec)
    if made is not None:
        return made
    for entry in entry_points(group="pytest_expertbench.targets", name=spec.kind):
        factory: Callable[[TargetSpec], Target] = entry.load()
        return factory(spec)
    return build_target(spec)
