"""The worksteal guard: claimed items are never given away, and a steal finds some."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import execnet
from xdist import remote

from pytest_expertbench.worksteal import StealGuard


class FakeInteractor:
    """xdist's WorkerInteractor as far as the guard uses it: a queue and ``steal``."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.torun = remote.TestQueue(execnet.gateway_base.get_execmodel("thread"))
        for i in indices:
            self.torun.put(i)
        self.nextitem_index: Any = 99
        self.given: list[list[int]] = []

    def steal(self, indices: Sequence[int]) -> None:  # xdist's: all of them or none
        with self.torun.lock() as queue:
            wanted = set(indices)
            if wanted <= set(queue):
                self.torun.replace(i for i in queue if i not in wanted)
                self.given.append(sorted(wanted))
            else:
                self.given.append([])


def test_claimed_items_stay_and_a_steal_takes_the_unclaimed_tail() -> None:
    worker = FakeInteractor(range(20))
    guard = StealGuard(worker)
    items = [f"item{i}" for i in range(100)]
    claimed = guard.claim(items, limit=64)  # type: ignore[arg-type]
    assert claimed[0] == "item99"  # the next item first: already off the queue
    assert claimed[1:] == [f"item{i}" for i in range(8)]  # at most half of the queue, less 2
    worker.steal(list(range(5, 20)))  # the controller asks for what it thinks is the tail
    assert worker.given == [list(range(8, 20))]  # the claimed ones stay
    with worker.torun.lock() as queue:
        assert list(queue) == list(range(8))
    assert guard.claim(items, limit=64) == []  # nothing more to claim in so short a queue


def test_the_required_xdist_has_the_queue_lock_and_steal_that_the_plugin_uses() -> None:
    """items.py and worksteal.py use the worker's ``torun.lock()`` (xdist's TestQueue, new
    in 3.6.0, which was yanked) and ``WorkerInteractor.steal`` (3.2.0, worksteal)."""
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'"pytest-xdist>=([0-9.]+)"', pyproject)
    assert found is not None
    assert tuple(int(part) for part in found.group(1).split(".")) >= (3, 6, 1)
    assert callable(remote.TestQueue.lock)
    assert callable(remote.WorkerInteractor.steal)
