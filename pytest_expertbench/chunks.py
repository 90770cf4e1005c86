"""Benchmark examples handed to xdist workers in chunks, under ``--dist load`` and
``worksteal``.

A worker asks the model ahead only for items it knows it will run. Under ``load``
and ``worksteal`` xdist hands out items a few at a time, and which ones a worker
gets next is known only to xdist's private queue; under ``worksteal`` another
worker may even take queued items away after their requests went out, and ask
them again. Instead, the plugin gives xdist a scheduler of its own through xdist's
``pytest_xdist_make_scheduler`` hook: its load-scope scheduling, with each
benchmark file's examples cut into chunks of consecutive items, each chunk one
unit of work that one worker runs whole. A worker that starts a chunk asks for all
of it at once, and no example is asked twice. Other tests stay units of their own,
spread as ``load`` spreads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

_ROUNDS = 4  # a chunk is this many rounds of the concurrency


def chunk_size(concurrency: int) -> int:
    """Examples per chunk: a few rounds of requests in flight, so the server stays busy
    while the worker's next chunk is on its way."""
    return max(8, _ROUNDS * concurrency)


def example_file(nodeid: str) -> str | None:
    """The benchmark file of an example item's node id (``<file>::<bench>[<id>]``), or
    None for any other node id (a gate item, a test module's test)."""
    file, separator, name = nodeid.rpartition("::")
    if not separator or "::" in file or not name.endswith("]"):
        return None
    return file if file.endswith((".yaml", ".yml")) else None


def chunk_scopes(nodeids: Iterable[str], size: int) -> dict[str, str]:
    """Each example item's chunk, by node id: its file and its position there // size.

    Workers compute the same chunks from the same collection (see ``chunk_index``).
    """
    seen: dict[str, int] = {}
    scopes: dict[str, str] = {}
    for nodeid in nodeids:
        file = example_file(nodeid)
        if file is None:
            continue
        position = seen.get(file, 0)
        seen[file] = position + 1
        scopes[nodeid] = f"{file}::chunk-{position // size}"
    return scopes


class ChunkScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no stubs
    """xdist's load-scope scheduling with a benchmark chunk as the scope of its examples,
    and every other test a scope of its own."""

    def __init__(self, config: pytest.Config, log: Any, size: int) -> None:
        super().__init__(config, log)
        self._size = size
        self._scopes: dict[str, str] = {}

    def schedule(self) -> None:
        if self.collection is None and self.registered_collections:
            collection = next(iter(self.registered_collections.values()))
            self._scopes = chunk_scopes(collection, self._size)
        super().schedule()

    def _split_scope(self, nodeid: str) -> str:
        return self._scopes.get(nodeid, nodeid)
