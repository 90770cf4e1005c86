"""metrics.aggregate: values, intervals, determinism, bad input and memory."""

from __future__ import annotations

import math
import statistics
import time
import tracemalloc

import numpy as np
import pytest

from pytest_expertbench.config import MetricSpec
from pytest_expertbench.metrics import aggregate
from pytest_expertbench.records import MetricResult


def spec(agg: str, *, name: str = "m", of: str = "score") -> MetricSpec:
    return MetricSpec(name=name, of=of, agg=agg, direction="higher", unit="ratio")


def result(
    agg: str, values: list[float], *, seed: int = 0, resamples: int = 1000, confidence: float = 0.95
) -> MetricResult:
    metric = aggregate(
        spec(agg), "bench", values, seed=seed, resamples=resamples, confidence=confidence
    )
    assert metric is not None
    return metric


def test_the_result_carries_the_spec() -> None:
    metric = aggregate(spec("mean", name="accuracy", of="exact_match"), "gsm8k", [1.0, 0.0])
    assert metric is not None
    assert metric.metric_id == "gsm8k.accuracy"
    assert (metric.samples_used, metric.direction, metric.unit) == (2, "higher", "ratio")
    assert metric.meta == {"agg": "mean", "of": "exact_match", "ci_method": "normal"}


def test_mean_has_a_normal_interval() -> None:
    values = [1.0, 0.0, 1.0, 1.0]
    metric = result("mean", values)
    half = 1.959963984540054 * statistics.stdev(values) / math.sqrt(len(values))
    assert metric.value == 0.75
    assert metric.ci == pytest.approx((0.75 - half, min(0.75 + half, 1.0)), rel=1e-12)


def test_other_confidences_use_their_own_z() -> None:
    values = [3.0, 5.0, 4.0, 8.0, 1.0]
    metric = result("mean", values, confidence=0.90)
    z90 = 1.6448536269514722  # the normal 95th percentile
    half = z90 * statistics.stdev(values) / math.sqrt(len(values))
    assert metric.ci == pytest.approx((4.2 - half, 4.2 + half), rel=1e-12)


def test_a_single_value_is_its_own_interval() -> None:
    metric = result("mean", [0.4])
    assert (metric.value, metric.ci, metric.meta["ci_method"]) == (0.4, (0.4, 0.4), "exact")


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Wilson 95 % intervals worked out by hand from the score-interval formula.
        (8, 10, 0.490162, 0.943318),
        (0, 10, 0.0, 0.277533),
        (10, 10, 0.722467, 1.0),
        (1, 2, 0.094531, 0.905469),
    ],
)
def test_rate_has_a_wilson_interval(successes: int, n: int, low: float, high: float) -> None:
    values = [0.7] * successes + [0.0] * (n - successes)
    metric = result("rate", values)
    assert metric.value == successes / n
    assert metric.ci == pytest.approx((low, high), abs=1e-6)
    assert metric.meta["ci_method"] == "wilson"


def test_count_is_successes_with_a_scaled_wilson_interval() -> None:
    values = [1.0, 0.0, 2.5, 0.0, -1.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # 6 of 10 above 0
    count = result("count", values)
    rate = result("rate", values)
    assert count.value == 6.0
    assert rate.ci is not None
    assert count.ci == pytest.approx((rate.ci[0] * 10, rate.ci[1] * 10), rel=1e-12)


@pytest.mark.parametrize("agg", ["sum", "min", "max", "p50", "p90", "p95", "p99"])
def test_bootstrap_statistics_match_numpy(agg: str) -> None:
    values = [float(v) for v in np.random.default_rng(7).lognormal(5, 1, size=300)]
    expected = {
        "sum": float(np.sum(values)),
        "min": min(values),
        "max": max(values),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
    }[agg]
    metric = result(agg, values)
    assert metric.value == pytest.approx(expected, rel=1e-12)
    assert metric.meta["ci_method"] == "bootstrap"
    assert metric.ci is not None
    low, high = metric.ci
    assert low <= metric.value <= high
    assert low < high


def test_bootstrap_is_deterministic_per_seed() -> None:
    values = [float(v) for v in np.random.default_rng(3).normal(100, 15, size=500)]
    first = result("p95", values, seed=11)
    again = result("p95", values, seed=11)
    other = result("p95", values, seed=12)
    assert first.ci == again.ci
    assert first.ci != other.ci
    assert first.value == other.value


def test_bootstrap_interval_of_a_sum_is_about_the_normal_one() -> None:
    values = [float(v) for v in np.random.default_rng(5).normal(10, 4, size=2000)]
    metric = result("sum", values, seed=1)
    assert metric.ci is not None
    width = metric.ci[1] - metric.ci[0]
    normal_width = 2 * 1.959963984540054 * statistics.stdev(values) * math.sqrt(len(values))
    assert width == pytest.approx(normal_width, rel=0.15)


def test_constant_values_have_an_exact_interval() -> None:
    metric = result("p95", [250.0] * 40)
    assert (metric.value, metric.ci, metric.meta["ci_method"]) == (250.0, (250.0, 250.0), "exact")


def test_no_values_is_no_metric() -> None:
    assert aggregate(spec("mean"), "bench", []) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_a_finite_number_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"bench\.m.*#2"):
        aggregate(spec("p95"), "bench", [1.0, 2.0, bad])


def test_an_unknown_aggregation_is_refused() -> None:
    with pytest.raises(ValueError, match=r"bench\.m.*'median'"):
        aggregate(spec("median"), "bench", [1.0])


def test_twenty_thousand_values_stay_small_and_fast() -> None:
    values = [float(v) for v in np.random.default_rng(0).exponential(800, size=20_000)]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        metric = result("p95", values, resamples=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert metric.samples_used == 20_000
    assert peak < 50 * 1024 * 1024
    assert elapsed < 30  # a generous bound for a slow CI machine; about a second here


def test_a_mean_interval_stays_within_the_range_of_the_data() -> None:
    spec = MetricSpec(name="accuracy", of="ok", agg="mean", direction="higher")
    result = aggregate(spec, "b", [1.0] * 19 + [0.0])
    assert result is not None and result.ci is not None
    assert result.ci[1] == 1.0  # the normal approximation alone would reach past 1
    assert 0.0 <= result.ci[0] < result.value
