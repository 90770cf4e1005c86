"""What the engine counts of one benchmark's requests, and the frozen copy it hands out.

The engine's loop thread updates :class:`BenchmarkCounters` under its lock; callers
(the terminal progress line, the summary, xdist workers reporting to the controller)
only ever see :class:`BenchmarkStats`, a copy taken under that lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_expertbench.records import Completion

# The prefixes of the token counts of what a benchmark's scorers asked (a judge), in its
# request counts: judge_prompt_tokens:<target>, … (summed over xdist workers as the rest).
JUDGE_TOKENS = ("judge_prompt_tokens:", "judge_completion_tokens:", "judge_with_usage:")


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
    # The tokens of the answers that reported usage (those from the cache included: what
    # the answers cost, which a resumed run shows the same), and how many did.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    with_usage: int = 0
    # concurrency auto (adaptive.py): the limit when its last request finished, and the
    # highest it reached; 0 for a fixed concurrency.
    concurrency_settled: int = 0
    concurrency_peak: int = 0


@dataclass
class BenchmarkCounters:
    """One benchmark's progress as it happens; :meth:`snapshot` freezes it."""

    asked: int = 0
    done: int = 0
    errors: int = 0
    retries: int = 0
    cached: int = 0
    not_asked: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    with_usage: int = 0
    concurrency_settled: int = 0
    concurrency_peak: int = 0
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
            self.prompt_tokens,
            self.completion_tokens,
            self.with_usage,
            self.concurrency_settled,
            self.concurrency_peak,
        )

    def add_usage(self, completion: Completion) -> None:
        """Count the tokens of ``completion`` when its target reported any."""
        if completion.prompt_tokens is None and completion.completion_tokens is None:
            return
        self.prompt_tokens += completion.prompt_tokens or 0
        self.completion_tokens += completion.completion_tokens or 0
        self.with_usage += 1
