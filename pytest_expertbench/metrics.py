"""Per-example scores → one metric value with a confidence interval.

The interval is what lets a reader tell a regression from noise, so each
aggregation gets the interval that suits it: a normal approximation for a mean,
Wilson's score interval for a rate (it stays inside [0, 1] and behaves at 0 % and
100 %), and a seeded percentile bootstrap for the statistics that have no simple
formula (sum, min, max, percentiles). Everything is deterministic: the same scores
and seed give the same floats, so a baseline and a rerun can be compared exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from pytest_expertbench.config import MetricSpec
from pytest_expertbench.records import MetricResult, repeat_aggregation

FloatArray = NDArray[np.float64]
Interval = tuple[float, float]
# A statistic of each row of a 2-D array (one row per bootstrap resample).
RowStatistic = Callable[[FloatArray], FloatArray]

Z_95 = 1.959963984540054  # NormalDist().inv_cdf(0.975), written out for the common case

# Bootstrap resamples are drawn in chunks of about this many values (8 bytes each), so
# memory stays near a few such arrays whatever the number of examples.
_CHUNK_VALUES = 500_000

_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


def _percentile_of_rows(q: float) -> RowStatistic:
    return lambda rows: np.percentile(rows, q, axis=1, method="linear")


_BOOTSTRAPPED: dict[str, RowStatistic] = {
    "sum": lambda rows: np.sum(rows, axis=1),
    "min": lambda rows: np.min(rows, axis=1),
    "max": lambda rows: np.max(rows, axis=1),
    **{agg: _percentile_of_rows(q) for agg, q in _PERCENTILES.items()},
}


def aggregate(
    spec: MetricSpec,
    benchmark: str,
    values: Sequence[float],
    *,
    seed: int = 0,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> MetricResult | None:
    """The metric ``spec`` over ``values``; None when there is nothing to aggregate.

    Raises ValueError naming the metric for a NaN or infinite value: a score that is
    not a number would silently poison the mean and every comparison after it.
    """
    metric_id = f"{benchmark}.{spec.name}"
    if len(values) == 0:
        return None
    if not 0 < confidence < 1:
        raise ValueError(f"metric {metric_id}: confidence must be between 0 and 1")
    if resamples < 1:
        raise ValueError(f"metric {metric_id}: resamples must be 1 or more")
    data = _finite(values, metric_id)
    z = z_score(confidence)
    if spec.agg == "mean":
        value, ci, method = _mean(data, z)
    elif spec.agg == "rate":
        value, ci, method = _rate(data, z)
    elif spec.agg == "count":
        value, ci, method = _count(data, z)
    elif repeat_aggregation(spec.agg) is not None:
        # ``values`` are each example's own pass@k, pass^k or flaky (see per_example):
        # the metric is their mean, a Wilson interval when they are all 0 or 1.
        if bool(np.all((data == 0) | (data == 1))):
            value, ci, method = _rate(data, z)
        else:
            value, ci, method = _mean(data, z)
    elif spec.agg in _BOOTSTRAPPED:
        value, ci, method = _bootstrapped(
            _BOOTSTRAPPED[spec.agg], data, seed=seed, resamples=resamples, confidence=confidence
        )
    else:
        raise ValueError(f"metric {metric_id}: unknown aggregation {spec.agg!r}")
    return MetricResult(
        metric_id=metric_id,
        value=value,
        ci=ci,
        samples_used=int(data.size),
        direction=spec.direction,
        unit=spec.unit,
        meta={"agg": spec.agg, "of": spec.key, "ci_method": method},
    )


def per_example(agg: str, repeats: Sequence[float]) -> float:
    """One example's value of a repeat aggregation, from its repeats' scores.

    A repeat is correct when its score is > 0 (as for ``rate``). With n repeats of
    which c are correct: ``pass@k`` is the unbiased estimator of Chen et al. (2021),
    1 - C(n-c, k) / C(n, k), the chance that at least one of k answers drawn from the n
    is correct; ``pass^k`` is C(c, k) / C(n, k), the chance that all k are; ``flaky``
    is 1 when the repeats do not all give the same score, else 0.
    """
    found = repeat_aggregation(agg)
    if found is None:
        raise ValueError(f"{agg!r} is not an aggregation of repeats")
    kind, k = found
    if kind == "flaky":
        return float(len(set(repeats)) > 1)
    n = len(repeats)
    if not 1 <= k <= n:
        raise ValueError(f"{agg} needs {k} repeats per example, got {n}")
    c = sum(1 for score in repeats if score > 0)
    if kind == "pass^":
        return math.comb(c, k) / math.comb(n, k)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def z_score(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence`` (1.96 for 95 %)."""
    if confidence == 0.95:
        return Z_95
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, z: float) -> Interval:
    """Wilson's score interval for ``successes`` out of ``n`` trials."""
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def _finite(values: Sequence[float], metric_id: str) -> FloatArray:
    data = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(data))
    if bad.size:
        first = int(bad[0])
        raise ValueError(
            f"metric {metric_id}: score #{first} is {data[first]!r}, not a finite number"
        )
    return data


def _mean(data: FloatArray, z: float) -> tuple[float, Interval, str]:
    value = float(np.mean(data))
    if data.size == 1:
        return value, (value, value), "exact"
    half = z * float(np.std(data, ddof=1)) / math.sqrt(data.size)
    # A mean cannot leave the range of its data: 0/1 scores keep an interval in [0, 1].
    low, high = float(np.min(data)), float(np.max(data))
    return value, (max(value - half, low), min(value + half, high)), "normal"


def _rate(data: FloatArray, z: float) -> tuple[float, Interval, str]:
    successes = int(np.count_nonzero(data > 0))
    return successes / data.size, wilson_interval(successes, data.size, z), "wilson"


def _count(data: FloatArray, z: float) -> tuple[float, Interval, str]:
    successes = int(np.count_nonzero(data > 0))
    low, high = wilson_interval(successes, data.size, z)
    return float(successes), (low * data.size, high * data.size), "wilson"


def _bootstrapped(
    statistic: RowStatistic, data: FloatArray, *, seed: int, resamples: int, confidence: float
) -> tuple[float, Interval, str]:
    """The statistic of ``data`` and its percentile-bootstrap interval.

    The interval is widened to contain the estimate if it does not: a percentile
    bootstrap of a tail statistic on few values can miss it, and a reported value
    outside its own interval would only confuse the reader.
    """
    value = float(statistic(data[np.newaxis, :])[0])
    if bool(np.all(data == data[0])):
        return value, (value, value), "exact"  # every resample is the same
    replicates = _replicates(statistic, data, seed=seed, resamples=resamples)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], method="linear")
    return value, (min(float(low), value), max(float(high), value)), "bootstrap"


def _replicates(
    statistic: RowStatistic, data: FloatArray, *, seed: int, resamples: int
) -> FloatArray:
    """``resamples`` bootstrap values of the statistic, drawn chunk by chunk.

    The chunk size depends only on the number of values, so the draws (and hence
    the interval) are the same on every run with the same seed.
    """
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CHUNK_VALUES // data.size)
    replicates = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows_per_chunk):
        stop = min(start + rows_per_chunk, resamples)
        picks = rng.integers(0, data.size, size=(stop - start, data.size))
        replicates[start:stop] = statistic(data[picks])
    return replicates
