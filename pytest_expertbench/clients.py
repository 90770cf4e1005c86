"""What each request in flight borrows before it is sent: a client and a rate-limit slot.

Split from the engine, which hands these out on its loop thread; neither is
thread-safe, and neither needs to be.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx

from pytest_expertbench.transport import HttpModelClient

__all__ = ["ClientPool", "RateLimiter"]


class RateLimiter:
    """A token bucket of one token: requests are spaced 60/rpm seconds apart."""

    def __init__(self, requests_per_minute: float) -> None:
        self.interval = 60.0 / requests_per_minute
        self.next_slot = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class ClientPool:
    """One keep-alive client (an httpx client of one connection) per request in flight.

    httpcore, under httpx, scans every connection and waiting request of its pool on
    each request: against tests/support/fake_openai.py (bench/transport.py), 32
    requests in flight cost about 4 ms of CPU per request through one httpx client of
    32 connections and 1.7 ms through 32 clients of one. Each request in flight
    borrows a slot with its own client: nothing queues inside httpcore, and the server
    sees at most ``concurrency`` keep-alive connections, as with one big pool. Used
    only on the engine's loop thread.
    """

    def __init__(self, concurrency: int) -> None:
        self._free = list(range(concurrency - 1, -1, -1))  # a stack: warm slots first
        self._clients: dict[int, HttpModelClient] = {}
        self._ssl: ssl.SSLContext | None = None

    def acquire(self) -> tuple[int, HttpModelClient]:
        slot = self._free.pop()
        client = self._clients.get(slot)
        if client is None:
            if self._ssl is None:  # one context for all: building one costs ~40 ms
                self._ssl = httpx.create_ssl_context()
            client = self._clients[slot] = HttpModelClient(1, self._ssl)
        return slot, client

    def release(self, slot: int) -> None:
        self._free.append(slot)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
