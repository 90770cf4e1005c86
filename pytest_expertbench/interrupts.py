"""An interrupted xdist controller interrupts its workers at once.

A Ctrl-C in a terminal reaches every process of the run, but a SIGINT or SIGTERM sent
to the controller alone (``kill``, ``timeout``, a CI runner) does not: its workers
went on with their queues until execnet's teardown, 5 s later, sent each one a SIGINT
of its own, and the whole run took 7-14 s to exit. The controller now forwards the
interruption to each local worker as a SIGINT when pytest reports it
(``pytest_keyboard_interrupt``), so that they stop with it.

A worker then sees the interruption twice when it came from a terminal (its own
SIGINT and the controller's): a worker raises KeyboardInterrupt for the first SIGINT
only, so that a second one does not break off its cleanup. A stuck worker is still
killed by xdist's teardown (after 10 s).

POSIX only in what it does: elsewhere no signal is forwarded.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

PLUGIN_NAME = "expertbench-interrupts"


class WorkerInterrupter:
    """The controller's record of its workers, which it interrupts when it is."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        interrupt_workers(self.nodes)


def track(node: Any) -> None:
    """Remember an xdist worker node (``pytest_configure_node``), on the controller."""
    manager = node.config.pluginmanager
    plugin = manager.get_plugin(PLUGIN_NAME)
    if plugin is None:
        plugin = WorkerInterrupter()
        manager.register(plugin, PLUGIN_NAME)
    plugin.nodes.append(node)


def interrupt_workers(nodes: list[Any]) -> int:
    """Send SIGINT to each worker process still running; how many were sent one.

    Only local (popen) workers have a process here to signal; a remote one is left
    to xdist's teardown.
    """
    sent = 0
    for node in nodes:
        process = getattr(getattr(getattr(node, "gateway", None), "_io", None), "popen", None)
        if not isinstance(process, subprocess.Popen) or process.poll() is not None:
            continue
        with contextlib.suppress(OSError):
            process.send_signal(signal.SIGINT)
            sent += 1
    return sent


def interrupt_once(config: pytest.Config) -> None:
    """On an xdist worker: KeyboardInterrupt for the first SIGINT, later ones ignored.

    A handler someone else set is left alone; the previous one comes back when the
    session ends.
    """
    handle_unless_taken(config, signal.SIGINT, signal.default_int_handler, _first_interrupt)


Handler = Callable[[int, FrameType | None], Any]


def handle_unless_taken(
    config: pytest.Config, signum: int, default: Handler | int, handler: Handler
) -> None:
    """Handle ``signum`` with ``handler`` for the session, unless a handler other than
    ``default`` is set (someone else's is left alone); ``default`` comes back at the end."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signum) is not default:
        return
    signal.signal(signum, handler)

    def restore() -> None:
        signal.signal(signum, default)

    config.add_cleanup(restore)


def _first_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt
