"""Asking ahead under ``--dist worksteal`` without asking any example twice.

Under worksteal each xdist worker gets a share of the items up front, and a worker
that runs out takes ("steals") the tail of another's queue: the controller sends the
other worker a ``steal`` command naming those items, and that worker gives back the
ones still queued (``WorkerInteractor.steal``). An item whose request this worker has
already sent must not be given away, or the thief would ask it again. So a worker
*claims* the items it asks ahead for, under the queue's lock, and its ``steal`` gives
back only the unclaimed ones that were asked for (the controller accepts any subset).

A worker claims at most half of its queue, from the head, and a steal takes at most
half, from the tail: a steal always finds something to give, so the controller never
repeats a request that is refused again and again (xdist retries at once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

_KEY = pytest.StashKey["StealGuard | None"]()
_MARGIN = 2  # queued items the controller may not yet know are done


class StealGuard:
    """A worker's claimed items, and its ``steal`` that gives back only the others."""

    def __init__(self, interactor: Any) -> None:
        self.interactor = interactor
        self.claimed: set[int] = set()
        self._steal: Callable[[Sequence[int]], None] = interactor.steal
        interactor.steal = self.steal  # an instance attribute: handle_command calls it

    def steal(self, indices: Sequence[int]) -> None:
        """What the controller asked for, less what this worker has claimed."""
        with self.interactor.torun.lock():  # re-entrant: the original takes it again
            self._steal([i for i in indices if i not in self.claimed])

    def claim(self, items: Sequence[pytest.Item], limit: int) -> list[pytest.Item]:
        """Up to ``limit`` items from the head of the queue, claimed: never given away.

        The item that runs next (taken off the queue already) comes first: it cannot
        be stolen.
        """
        picked: list[int] = []
        following = getattr(self.interactor, "nextitem_index", None)
        if isinstance(following, int) and following not in self.claimed:
            picked.append(following)
        with self.interactor.torun.lock() as pending:
            queued = [i for i in pending if isinstance(i, int)]
            room = min(limit, len(queued) // 2 - _MARGIN)
            picked += [i for i in queued[: max(0, room)] if i not in self.claimed]
            self.claimed.update(picked)
        return [items[i] for i in picked]


def guard(config: pytest.Config) -> StealGuard | None:
    """This worker's guard, installed on xdist's worker the first time; None without one."""
    if _KEY in config.stash:
        return config.stash[_KEY]
    found = None
    for plugin in config.pluginmanager.get_plugins():
        queue = getattr(plugin, "torun", None)
        stealable = callable(getattr(plugin, "steal", None))
        if queue is not None and hasattr(queue, "lock") and stealable:
            found = StealGuard(plugin)
            break
    config.stash[_KEY] = found
    return found
