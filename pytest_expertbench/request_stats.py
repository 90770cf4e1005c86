"""What the engine counts of one benchmark's requests, and the frozen copy it hands out.

The engine's loop thread updates :class:`BenchmarkCounters` under its lock; callers
(the terminal progress line, the summary, xdist workers reporting to the controller)
only ever see :class:`BenchmarkStats`, a copy taken under that lock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchmarkStats:
    """Progress of one benchmark's requests, for the terminal progress line and summary."""

    asked: int = 0
    done: int = 0
    errors: int = 0
    retries: int = 0
    cached: int = 0
    elapsed_s: float = 0.0  # first start → last finish
    not_asked: int = 0  # errors because the breaker had opened (counted in errors too)
    stopped: str | None = None  # why the engine stopped asking, once it refused a request


@dataclass
class BenchmarkCounters:
    """One benchmark's progress as it happens; :meth:`snapshot` freezes it."""

    asked: int = 0
    done: int = 0
    errors: int = 0
    retries: int = 0
    cached: int = 0
    not_asked: int = 0
    first_start: float | None = None
    last_finish: float | None = None

    def snapshot(self, stopped: str | None) -> BenchmarkStats:
        elapsed = 0.0
        if self.first_start is not None and self.last_finish is not None:
            elapsed = max(0.0, self.last_finish - self.first_start)
        return BenchmarkStats(
            self.asked,
            self.done,
            self.errors,
            self.retries,
            self.cached,
            elapsed,
            self.not_asked,
            stopped if self.not_asked else None,
        )
