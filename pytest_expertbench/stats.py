"""The gate's statistics: is a change between two runs more than run-to-run noise?

Every test here is one-sided and paired where it can be: the same examples were
asked in both runs, so each example is its own control and the noise that matters
is how often an example's score moves, not how spread the scores are. The choice
of test follows the metric's aggregation (``pass@k``, ``pass^k`` and ``flaky`` are
tested as the ``mean`` of each example's own value of them):

* 0/1 scores under ``mean``, ``rate`` or ``count``: the exact McNemar test (a
  binomial test on the examples that changed; nothing is approximated at small n);
* other scores under ``mean``: a paired sign-flip permutation test of the mean
  difference (exact enumeration when few examples moved, else seeded Monte Carlo);
* any other aggregate (percentiles, sum, min, max): a seeded paired permutation test
  of the statistic's difference (each example's two scores swapped at random).

Without per-example scores (a baseline imported from elsewhere) the two intervals
give an unpaired z-test. Each test also says the smallest change its n can detect
with 80 % power, so a report can say what a pass means. Everything is
deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from pytest_expertbench.records import repeat_aggregation

FloatArray = NDArray[np.float64]
Statistic = Callable[[FloatArray], FloatArray]  # one value per row of a 2-D array

POWER = 0.8
RESAMPLES = 2000
_EXACT_PERMUTATION_LIMIT = 12  # up to 2**12 sign patterns are enumerated, not sampled
_CHUNK_VALUES = 1_000_000
_NORMAL = NormalDist()


def _percentile(q: float) -> Statistic:
    return lambda rows: np.percentile(rows, q, axis=1, method="linear")


_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


def _mean(rows: FloatArray) -> FloatArray:
    return np.asarray(np.mean(rows, axis=1), dtype=np.float64)


class _Statistics(dict[str, Statistic]):
    """The statistic of each aggregation; the aggregations of repeats (``pass@k`` and
    ``pass^k`` for every k, ``flaky``) are the mean of each example's own value of it."""

    def __contains__(self, agg: object) -> bool:
        return super().__contains__(agg) or (
            isinstance(agg, str) and repeat_aggregation(agg) is not None
        )

    def __missing__(self, agg: str) -> Statistic:
        if repeat_aggregation(agg) is not None:
            return _mean
        raise KeyError(agg)


STATISTICS: dict[str, Statistic] = _Statistics(
    {
        "mean": _mean,
        "sum": lambda rows: np.sum(rows, axis=1),
        "min": lambda rows: np.min(rows, axis=1),
        "max": lambda rows: np.max(rows, axis=1),
        "rate": lambda rows: np.mean(rows > 0, axis=1),
        "count": lambda rows: np.sum(rows > 0, axis=1).astype(np.float64),
        **{agg: _percentile(q) for agg, q in _PERCENTILES.items()},
    }
)


@dataclass(frozen=True)
class ChangeTest:
    """How surprising a metric's move would be if nothing had changed.

    ``p_down`` is the one-sided p-value for "the statistic went down", ``p_up`` for
    "went up"; the gate reads the one its direction calls worse. ``detectable`` is
    the smallest move (in the metric's unit, either way) that this test, at this n
    and the noise seen, finds with 80 % power at ``alpha``.
    """

    method: str  # "mcnemar", "permutation" or "unpaired-z"
    p_down: float
    p_up: float
    detectable: float
    pairs: int  # examples paired (0 for an unpaired test)


def z_power(alpha: float, power: float = POWER) -> float:
    """z_(1-α) + z_(power): how many standard errors a detectable move spans."""
    return _NORMAL.inv_cdf(1 - alpha) + _NORMAL.inv_cdf(power)


def paired_test(
    agg: str,
    old: Sequence[float] | FloatArray,
    new: Sequence[float] | FloatArray,
    *,
    alpha: float = 0.05,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> ChangeTest:
    """The paired test that suits ``agg`` over scores paired by example (same order)."""
    a, b = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired scores must be two non-empty sequences of one length")
    if agg not in STATISTICS:
        raise ValueError(f"no test for the aggregation {agg!r}")
    if repeat_aggregation(agg) is not None:
        agg = "mean"  # each example's own pass@k / pass^k / flaky, paired like scores
    if agg in ("rate", "count"):
        a, b = (a > 0).astype(np.float64), (b > 0).astype(np.float64)
    scale = float(a.size) if agg == "count" else 1.0
    if agg in ("mean", "rate", "count") and _binary(a) and _binary(b):
        return mcnemar(a, b, alpha=alpha, scale=scale)
    if agg == "mean":
        return permutation(a, b, alpha=alpha, seed=seed, resamples=resamples)
    return swap_test(STATISTICS[agg], a, b, alpha=alpha, seed=seed, resamples=resamples)


def _binary(values: FloatArray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def mcnemar(old: FloatArray, new: FloatArray, *, alpha: float, scale: float = 1.0) -> ChangeTest:
    """Exact McNemar: of the examples that changed, how lopsided is the split?

    Under no change an example is as likely to go 1 → 0 as 0 → 1, so the number
    that went down is Binomial(changed, 1/2). ``scale`` turns a mean into a count.
    """
    down = int(np.count_nonzero((old == 1) & (new == 0)))
    up = int(np.count_nonzero((old == 0) & (new == 1)))
    n = old.size
    changed = (down + up) / n
    drift = (up - down) / n
    se = math.sqrt(max(changed - drift * drift, 0.0) / n)
    # With no change seen, the fewest changed examples that could ever be significant.
    least = math.ceil(math.log2(1 / alpha)) / n if alpha < 1 else 0.0
    detectable = max(z_power(alpha) * se, least) * scale
    return ChangeTest(
        "mcnemar", binomial_tail(down, up + down), binomial_tail(up, up + down), detectable, n
    )


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2); 1.0 when n is 0."""
    if k <= 0 or n == 0:
        return 1.0
    if k > n:
        return 0.0
    if n <= 60:
        return sum(math.comb(n, i) for i in range(k, n + 1)) / float(2**n)
    # Summed in log space: exact to float precision, with no thousand-digit integers.
    i = np.arange(k, n + 1, dtype=np.float64)
    log_pmf = math.lgamma(n + 1) - _lgamma(i + 1) - _lgamma(n - i + 1) - n * math.log(2)
    return float(min(1.0, np.sum(np.exp(log_pmf))))


def _lgamma(values: FloatArray) -> FloatArray:
    return np.array([math.lgamma(v) for v in values], dtype=np.float64)


def permutation(
    old: FloatArray, new: FloatArray, *, alpha: float, seed: int, resamples: int
) -> ChangeTest:
    """Sign-flip permutation test of the mean paired difference.

    Under no change each example's difference is as likely to have either sign, so
    the observed mean is held against the means of randomly re-signed differences:
    every pattern when few examples moved, ``resamples`` seeded ones otherwise.
    """
    diffs = new - old
    moved = diffs[diffs != 0]
    n = old.size
    observed = float(np.sum(moved))
    if moved.size == 0:
        p_down = p_up = 1.0
    elif moved.size <= _EXACT_PERMUTATION_LIMIT:
        patterns = ((np.arange(2**moved.size)[:, None] >> np.arange(moved.size)) & 1) * 2 - 1
        sums = patterns @ moved
        p_down = float(np.mean(sums <= observed + 1e-12))
        p_up = float(np.mean(sums >= observed - 1e-12))
    else:
        sums = _signed_sums(moved, seed=seed, resamples=resamples)
        p_down = float((1 + np.count_nonzero(sums <= observed + 1e-12)) / (resamples + 1))
        p_up = float((1 + np.count_nonzero(sums >= observed - 1e-12)) / (resamples + 1))
    spread = float(np.std(diffs, ddof=1)) if n > 1 else 0.0
    if spread == 0.0 and n > 1:  # nothing moved: judge by how spread the scores are
        spread = math.sqrt(float(np.var(old, ddof=1)) + float(np.var(new, ddof=1)))
    return ChangeTest("permutation", p_down, p_up, z_power(alpha) * spread / math.sqrt(n), n)


def _signed_sums(moved: FloatArray, *, seed: int, resamples: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_VALUES // moved.size)
    sums = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        signs = rng.integers(0, 2, size=(stop - start, moved.size)) * 2 - 1
        sums[start:stop] = signs @ moved
    return sums


def swap_test(
    statistic: Statistic,
    old: FloatArray,
    new: FloatArray,
    *,
    alpha: float,
    seed: int,
    resamples: int,
) -> ChangeTest:
    """Paired permutation test of ``statistic(new) - statistic(old)`` for any statistic.

    If nothing changed, which of an example's two scores came from which run is a
    coin toss, so the observed difference is held against the differences with each
    example's pair swapped at random (seeded). Unlike a bootstrap of a tail statistic
    (a p95 of 25 latencies rests on two of them), this keeps its false-alarm rate at
    alpha or below at any n.
    """
    rng = np.random.default_rng(seed)
    n = old.size
    observed = float(statistic(new[np.newaxis, :])[0] - statistic(old[np.newaxis, :])[0])
    if bool(np.all(old == new)):
        return ChangeTest("permutation", 1.0, 1.0, _still_spread(statistic, old, rng, alpha), n)
    rows = max(1, _CHUNK_VALUES // n)
    deltas = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        swap = rng.integers(0, 2, size=(stop - start, n)).astype(bool)
        deltas[start:stop] = statistic(np.where(swap, old, new)) - statistic(
            np.where(swap, new, old)
        )
    tolerance = 1e-12 * max(1.0, abs(observed))
    p_down = float((1 + np.count_nonzero(deltas <= observed + tolerance)) / (resamples + 1))
    p_up = float((1 + np.count_nonzero(deltas >= observed - tolerance)) / (resamples + 1))
    spread = float(np.std(deltas, ddof=1)) if resamples > 1 else 0.0
    return ChangeTest("permutation", p_down, p_up, z_power(alpha) * spread, n)


def _still_spread(
    statistic: Statistic, values: FloatArray, rng: np.random.Generator, alpha: float
) -> float:
    """The detectable change when both runs agree example by example: judged by how much
    the statistic of one run varies over resamples of its examples, times the square
    root of two for the second run."""
    if values.size < 2:
        return 0.0
    picks = rng.integers(0, values.size, size=(min(RESAMPLES, 500), values.size))
    return z_power(alpha) * math.sqrt(2) * float(np.std(statistic(values[picks]), ddof=1))


def unpaired_test(
    old_value: float,
    old_ci: tuple[float, float],
    new_value: float,
    new_ci: tuple[float, float],
    *,
    alpha: float = 0.05,
) -> ChangeTest:
    """A z-test from two 95 % intervals, for a baseline without per-example scores.

    Each interval's half-width over 1.96 stands in for its standard error. It is
    weaker than a paired test (the noise both runs share is not cancelled), and
    reports say so.
    """
    se = math.hypot(_se(old_ci), _se(new_ci))
    delta = new_value - old_value
    if se == 0:
        p_down = 0.0 if delta < 0 else 1.0
        p_up = 0.0 if delta > 0 else 1.0
    else:
        p_down = _NORMAL.cdf(delta / se)
        p_up = 1 - p_down
    return ChangeTest("unpaired-z", p_down, p_up, z_power(alpha) * se, 0)


def _se(ci: tuple[float, float]) -> float:
    return max(ci[1] - ci[0], 0.0) / (2 * 1.959963984540054)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    Holding each adjusted p-value to α keeps the chance of any false finding in
    the family at α or below, whatever the dependence between the tests.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
