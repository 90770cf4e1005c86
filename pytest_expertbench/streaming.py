"""The timing of a streamed answer, as vLLM's ``bench serve`` defines it.

A target that reads a stream (server-sent events, NDJSON) starts a :class:`TokenClock`
just before it sends the request and ticks it at each chunk that carries output
(text or a tool call); the clock's :meth:`TokenClock.timed` puts the figures on the
:class:`Completion`, and :func:`stream_scores` turns them into per-example scores:

- ``ttft_ms``: from sending the request to the first output chunk;
- ``tpot_ms``: the mean time per output token after the first,
  (last chunk - first chunk) / (output tokens - 1), the output tokens from the
  server's usage when it reports them, else the count of output chunks;
- ``itl_p50_ms``, ``itl_p90_ms``, ``itl_p99_ms``: percentiles of the gaps between
  consecutive output chunks (inter-token latency), one example's own.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from pytest_expertbench.records import Completion

__all__ = ["STREAM_SCORES", "TokenClock", "stream_scores"]

_ITL_PERCENTILES = {"itl_p50_ms": 50.0, "itl_p90_ms": 90.0, "itl_p99_ms": 99.0}
STREAM_SCORES = ("ttft_ms", "tpot_ms", *_ITL_PERCENTILES)


class TokenClock:
    """The times at which a stream's output chunks arrived, from the request's sending."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.chunks: list[float] = []

    def tick(self) -> None:
        """An output chunk arrived now."""
        self.chunks.append(time.perf_counter())

    def timed(self, completion: Completion) -> Completion:
        """``completion`` with ttft, tpot and the inter-chunk gaps (none without output)."""
        if not self.chunks:
            return completion
        first, last = self.chunks[0], self.chunks[-1]
        tokens = completion.completion_tokens or len(self.chunks)
        tpot = (last - first) * 1000 / (tokens - 1) if tokens > 1 else None
        gaps = tuple((b - a) * 1000 for a, b in zip(self.chunks, self.chunks[1:], strict=False))
        return replace(completion, ttft_ms=(first - self.started) * 1000, tpot_ms=tpot, itl_ms=gaps)


def stream_scores(completion: Completion) -> dict[str, float]:
    """The streamed-timing scores of one answer; empty for an answer that was not streamed."""
    scores: dict[str, float] = {}
    if completion.ttft_ms is not None:
        scores["ttft_ms"] = completion.ttft_ms
    if completion.tpot_ms is not None:
        scores["tpot_ms"] = completion.tpot_ms
    if completion.itl_ms:
        gaps = np.asarray(completion.itl_ms)
        for name, q in _ITL_PERCENTILES.items():
            scores[name] = float(np.percentile(gaps, q, method="linear"))
    return scores
