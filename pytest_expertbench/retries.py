"""When a failed request is asked again, after how long, and what its last error says.

Kept apart from the engine's queue and threads so the policy reads in one place:
exponential backoff with full jitter, never shorter than the server's Retry-After; a
Retry-After above the cap ends the request at once; the final error counts attempts.
"""

from __future__ import annotations

import random

from pytest_expertbench.records import TargetError


def backoff_s(attempt: int, retry_after: float | None, *, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter; never shorter than the server asked."""
    ceiling = min(max_s, base_s * 2 ** (attempt - 1))
    delay = random.uniform(0, ceiling)
    return max(delay, retry_after) if retry_after is not None else delay


def capped_error(error: TargetError, cap_s: float) -> TargetError:
    """``error``, made final when the server asks to wait longer than the cap."""
    if error.retry_after is None or error.retry_after <= cap_s:
        return error
    return TargetError(
        f"{error.message}: the server asked to wait {error.retry_after:g} s, "
        f"above the {cap_s:g} s cap (max_retry_after_s)",
        status=error.status,
    )


def final_error(error: TargetError, attempts: int) -> TargetError:
    """The last error, saying how many attempts were made when there was more than one."""
    if attempts == 1:
        return error
    return TargetError(
        f"{error.message} (after {attempts} attempts)",
        retryable=error.retryable,
        retry_after=error.retry_after,
        status=error.status,
        connection_failed=error.connection_failed,
    )
