"""The gate's rule: threshold bands, paired tests, Holm across a session, coverage."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from pytest_expertbench import stats
from pytest_expertbench.baseline import MetricGate, Snapshot
from pytest_expertbench.config import MetricSpec
from pytest_expertbench.flips import natural_key
from pytest_expertbench.gate import GateRule, compare, decide, gate_status
from pytest_expertbench.metrics import aggregate
from pytest_expertbench.records import Direction, Threshold
from tests.test_baseline import metric, snapshot

FIVE_PERCENT = Threshold(rel=0.05)
BY_THRESHOLD = GateRule(mode="threshold")


# --------------------------------------------------------------------------- gate rules


@pytest.mark.parametrize(
    ("old", "new", "direction", "threshold", "expected"),
    [
        # relative, higher is better
        (2.0, 1.5, "higher", Threshold(rel=0.25), "ok"),  # exactly at the threshold
        (2.0, 1.4999, "higher", Threshold(rel=0.25), "regression"),
        (2.0, 2.5, "higher", Threshold(rel=0.25), "ok"),
        (2.0, 2.5001, "higher", Threshold(rel=0.25), "improvement"),
        (2.0, 1.9, "higher", Threshold(rel=0.25), "ok"),
        # relative, lower is better
        (2.0, 2.5, "lower", Threshold(rel=0.25), "ok"),
        (2.0, 2.5001, "lower", Threshold(rel=0.25), "regression"),
        (2.0, 1.5, "lower", Threshold(rel=0.25), "ok"),
        (2.0, 1.4999, "lower", Threshold(rel=0.25), "improvement"),
        # absolute
        (0.5, 0.25, "higher", Threshold(abs=0.25), "ok"),
        (0.5, 0.2499, "higher", Threshold(abs=0.25), "regression"),
        (0.5, 0.7501, "higher", Threshold(abs=0.25), "improvement"),
        (0.5, 0.75, "lower", Threshold(abs=0.25), "ok"),
        (0.5, 0.7501, "lower", Threshold(abs=0.25), "regression"),
        (0.5, 0.2499, "lower", Threshold(abs=0.25), "improvement"),
        # old == 0 with a relative threshold: any move against the direction
        (0.0, -1e-9, "higher", Threshold(rel=0.05), "regression"),
        (0.0, 1e-9, "higher", Threshold(rel=0.05), "improvement"),
        (0.0, 1e-9, "lower", Threshold(rel=0.05), "regression"),
        (0.0, 0.0, "lower", Threshold(rel=0.05), "ok"),
        # old == 0 with an absolute threshold keeps its band
        (0.0, 0.01, "lower", Threshold(abs=0.02), "ok"),
        (0.0, 0.03, "lower", Threshold(abs=0.02), "regression"),
        # negative old values: the band is taken from |old|
        (-2.0, -2.5, "higher", Threshold(rel=0.25), "ok"),
        (-2.0, -2.6, "higher", Threshold(rel=0.25), "regression"),
        (-2.0, -1.4, "higher", Threshold(rel=0.25), "improvement"),
        # a current value that is not a number cannot pass
        (0.5, math.nan, "higher", Threshold(rel=0.05), "regression"),
        (0.5, math.inf, "lower", Threshold(rel=0.05), "regression"),
    ],
)
def test_gate_status(
    old: float, new: float, direction: Direction, threshold: Threshold, expected: str
) -> None:
    assert gate_status(old, new, direction, threshold) == expected


def test_the_default_threshold_matches_the_design_rule() -> None:
    old = 0.58
    at_threshold = old * (1 - 0.05)
    assert gate_status(old, at_threshold, "higher", FIVE_PERCENT) == "ok"
    assert gate_status(old, math.nextafter(at_threshold, 0), "higher", FIVE_PERCENT) == "regression"


def test_compare_reports_deltas_and_fails_on_a_regression() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.58)})
    new = snapshot({"accuracy": metric("accuracy", 0.512)})
    verdict = compare(old, new, BY_THRESHOLD)
    (row,) = verdict.metrics
    assert row.status == "regression"
    assert row.baseline == 0.58
    assert row.current == new.metrics["accuracy"]
    assert row.delta_rel == pytest.approx((0.512 - 0.58) / 0.58)
    assert row.delta_abs == pytest.approx(0.512 - 0.58)
    assert row.threshold == FIVE_PERCENT
    assert verdict.failed and verdict.regressions == (row,)
    assert verdict.comparable and verdict.note is None


def test_a_metric_threshold_of_the_current_run_wins_over_the_default() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.58)})
    loose = {"accuracy": Threshold(rel=0.2)}
    new = snapshot({"accuracy": metric("accuracy", 0.512)}, thresholds=loose)
    verdict = compare(old, new, BY_THRESHOLD)
    assert verdict.metrics[0].threshold == Threshold(rel=0.2)
    assert verdict.metrics[0].status == "ok"
    assert not verdict.failed


def test_delta_rel_is_none_when_the_old_value_is_zero() -> None:
    old = snapshot({"errors": metric("errors", 0.0, "lower")})
    new = snapshot({"errors": metric("errors", 0.0, "lower")})
    (row,) = compare(old, new, BY_THRESHOLD).metrics
    assert row.delta_rel is None and row.delta_abs == 0.0 and row.status == "ok"


def test_new_and_missing_metrics() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.5), "gone": metric("gone", 3.0)})
    new = snapshot({"accuracy": metric("accuracy", 0.5), "fresh": metric("fresh", 1.0)})
    rows = {row.name: row for row in compare(old, new, BY_THRESHOLD).metrics}
    assert rows["accuracy"].status == "ok"
    assert rows["fresh"].status == "new" and rows["fresh"].baseline is None
    assert rows["gone"].status == "missing"
    assert rows["gone"].current is None and rows["gone"].baseline == 3.0


def test_no_baseline_makes_every_metric_new() -> None:
    verdict = compare(None, snapshot(), BY_THRESHOLD)
    assert verdict.comparable
    assert verdict.note == "no baseline yet"
    assert [row.status for row in verdict.metrics] == ["new"]
    assert not verdict.failed and verdict.flipped == ()


def test_a_changed_dataset_is_not_compared() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.9)}, fingerprint="sha256:" + "1" * 64)
    new = snapshot({"accuracy": metric("accuracy", 0.1)}, fingerprint="sha256:" + "2" * 64, n=4)
    verdict = compare(old, new, BY_THRESHOLD)
    assert not verdict.comparable and not verdict.failed
    assert [row.status for row in verdict.metrics] == ["not_compared"]
    assert verdict.note == (
        "dataset changed: baseline 11111111 (n=4) ≠ current 22222222 (n=4); not compared"
    )


def test_flips_follow_the_scores_behind_higher_metrics() -> None:
    old_examples = {
        "10": {"numeric_match": 1.0, "latency_ms": 100.0, "other": 1.0},
        "2": {"numeric_match": 1.0, "latency_ms": 100.0},
        "1": {"numeric_match": 0.0},
        "3": {"numeric_match": 1.0},
        "only-old": {"numeric_match": 1.0},
    }
    new_examples = {
        "10": {"numeric_match": 0.0, "latency_ms": 50.0, "other": 0.0},
        "2": {"numeric_match": 0.5, "latency_ms": 500.0},
        "1": {"numeric_match": 1.0},
        "3": {"numeric_match": 1.0},
        "only-new": {"numeric_match": 0.0},
    }
    metrics = {
        "accuracy": metric("accuracy", 0.5),
        "latency_p95_ms": metric("latency_p95_ms", 100.0, "lower", of="latency_ms"),
    }
    verdict = compare(
        snapshot(metrics, old_examples), snapshot(metrics, new_examples), BY_THRESHOLD
    )
    assert [(f.example_id, f.score, f.old, f.new) for f in verdict.flipped] == [
        ("2", "numeric_match", 1.0, 0.5),
        ("10", "numeric_match", 1.0, 0.0),
    ]


def test_flips_watch_every_score_when_a_metric_does_not_name_its_score() -> None:
    metrics = {"accuracy": metric("accuracy", 0.5, of=None)}
    old = snapshot(metrics, {"a": {"x": 1.0, "y": 2.0}})
    new = snapshot(metrics, {"a": {"x": 1.0, "y": 1.0}})
    assert [(f.example_id, f.score) for f in compare(old, new, BY_THRESHOLD).flipped] == [
        ("a", "y")
    ]


def test_natural_order() -> None:
    ids = ["q10", "10", "b", "2", "q2", "1", "a"]
    assert sorted(ids, key=natural_key) == ["1", "2", "10", "a", "b", "q2", "q10"]


# --------------------------------------------------------------------------- the rule


def scored(
    old: list[float],
    new: list[float],
    *,
    agg: str = "mean",
    direction: Direction = "higher",
    of: str = "numeric_match",
    n_run: int | None = None,
    keep_old_examples: bool = True,
    gates: dict[str, MetricGate] | None = None,
) -> tuple[Snapshot, Snapshot]:
    """Two snapshots of the same examples whose metric is aggregated from the scores given."""
    spec = MetricSpec(name="m", of=of, agg=agg, direction=direction)

    def side(values: list[float], keep: bool) -> Snapshot:
        result = aggregate(spec, "gsm8k", values)
        assert result is not None
        examples = {str(i): {of: v} for i, v in enumerate(values)} if keep else {}
        return snapshot({"m": result}, examples, n=n_run or len(values), gates=gates)

    return side(old, keep_old_examples), side(new, True)


def flipped(n: int, accuracy: float, down: int, up: int) -> tuple[list[float], list[float]]:
    """0/1 scores of ``n`` examples; ``down`` right ones go wrong, ``up`` wrong ones right."""
    right = round(n * accuracy)
    old = [1.0] * right + [0.0] * (n - right)
    new = list(old)
    for i in range(down):
        new[i] = 0.0
    for i in range(up):
        new[right + i] = 1.0
    return old, new


def test_one_flipped_example_at_n_25_is_inconclusive_not_a_regression() -> None:
    old, new = scored(*flipped(25, 0.48, down=1, up=0))
    (row,) = compare(old, new).metrics
    assert row.band == "regression"  # -8.3 %: beyond the 5 % threshold
    assert row.status == "inconclusive"
    assert row.test is not None and row.test.method == "mcnemar"
    assert row.p_value == pytest.approx(0.5)  # one of one changed examples went down
    assert row.detectable == pytest.approx(5 / 25)  # five flips, all down, are needed
    assert not compare(old, new).failed


def test_a_real_drop_is_a_regression() -> None:
    old, new = scored(*flipped(200, 0.6, down=30, up=3))
    verdict = compare(old, new)
    (row,) = verdict.metrics
    assert row.status == "regression" and verdict.failed
    assert row.p_value == pytest.approx(stats.binomial_tail(30, 33))
    assert row.p_value < 1e-5


def test_identical_answers_never_fail_whatever_the_mode() -> None:
    old, new = scored(*flipped(25, 0.4, down=0, up=0))
    for mode in ("both", "significant", "threshold"):
        (row,) = compare(old, new, GateRule(mode=mode)).metrics  # type: ignore[arg-type]
        assert row.status == "ok"
    assert compare(old, new).metrics[0].p_value == 1.0


def test_gate_modes() -> None:
    small_but_sure = scored(*flipped(2000, 0.6, down=60, up=10))  # -4.2 %, p tiny
    big_but_noisy = scored(*flipped(25, 0.48, down=2, up=0))  # -16.7 %, p = 0.25
    assert compare(*small_but_sure, GateRule(mode="both")).metrics[0].status == "ok"
    assert compare(*small_but_sure, GateRule(mode="significant")).metrics[0].status == "regression"
    assert compare(*big_but_noisy, GateRule(mode="threshold")).metrics[0].status == "regression"
    assert compare(*big_but_noisy, GateRule(mode="both")).metrics[0].status == "inconclusive"


def test_improvements_follow_the_same_rule() -> None:
    sure = compare(*scored(*flipped(200, 0.5, down=2, up=30))).metrics[0]
    noisy = compare(*scored(*flipped(25, 0.48, down=0, up=2))).metrics[0]
    assert (sure.status, noisy.status) == ("improvement", "inconclusive")


def test_a_metric_own_gate_and_alpha_win() -> None:
    pair = scored(*flipped(25, 0.48, down=2, up=0), gates={"m": MetricGate("threshold", None)})
    assert compare(*pair).metrics[0].status == "regression"
    loose = scored(*flipped(100, 0.6, down=6, up=1), gates={"m": MetricGate(None, 0.2)})
    strict = scored(*flipped(100, 0.6, down=6, up=1))
    assert compare(*loose).metrics[0].status == "regression"  # p = 0.0625 < 0.2
    assert compare(*strict).metrics[0].status == "inconclusive"


def test_holm_spreads_alpha_over_every_metric_of_a_session() -> None:
    one = scored(*flipped(100, 0.6, down=8, up=1))  # p = 10/512 ≈ 0.0195 alone
    alone = compare(*one)
    assert alone.metrics[0].status == "regression"
    together = decide([compare(*one), compare(*one), compare(*one)])
    assert [v.metrics[0].status for v in together] == ["inconclusive"] * 3
    assert together[0].metrics[0].p_value == pytest.approx(3 * 10 / 512)
    assert decide(decide([alone])) == decide([alone])  # deciding again changes nothing


def test_a_metric_over_too_few_examples_is_incomplete_and_fails() -> None:
    old, new = scored([1.0] * 14, [1.0], n_run=14)
    verdict = compare(old, new)
    assert verdict.metrics[0].status == "incomplete" and verdict.failed
    assert verdict.metrics[0].reason == (
        "only 1 of 14 examples scored (below 90%): the rest errored"
    )
    assert compare(None, new).metrics[0].status == "incomplete"
    assert compare(*scored([1.0] * 14, [1.0] * 13, n_run=14)).metrics[0].status == "ok"


def test_a_score_some_answers_cannot_have_leaves_no_hole_but_errors_do() -> None:
    """tpot_ms has no value for a one-token answer: 10 of 14 examples with it, none of
    the 14 errored, is a whole sample; 4 errored of 14 is not."""
    old, new = scored([5.0] * 14, [5.0] * 10, of="tpot_ms", direction="lower", n_run=14)

    def with_errors(snap: Snapshot, errors: int) -> Snapshot:
        metric = snap.metrics["m"]
        return replace(snap, metrics={"m": replace(metric, meta={**metric.meta, "errors": errors})})

    assert compare(old, with_errors(new, 0)).metrics[0].status == "ok"
    row = compare(old, with_errors(new, 4)).metrics[0]
    assert row.status == "incomplete"
    assert row.reason == "only 10 of 14 examples scored (below 90%): the rest errored"


def test_a_baseline_without_example_scores_gets_the_unpaired_test() -> None:
    old, new = scored(*flipped(400, 0.6, down=80, up=0), keep_old_examples=False)
    (row,) = compare(old, new).metrics
    assert row.test is not None and row.test.method == "unpaired-z"
    assert row.status == "regression"


def test_latency_percentiles_are_tested_by_a_paired_permutation_test() -> None:
    rng = np.random.default_rng(1)
    base = list(rng.lognormal(5, 0.3, size=200))
    slower = [v * 1.5 for v in base]
    noisy = [v * float(rng.uniform(0.9, 1.1)) for v in base]
    lat = {"agg": "p95", "direction": "lower", "of": "latency_ms"}
    (row,) = compare(*scored(base, slower, **lat)).metrics  # type: ignore[arg-type]
    assert row.test is not None and row.test.method == "permutation"
    assert row.status == "regression"
    (same,) = compare(*scored(base, noisy, **lat)).metrics  # type: ignore[arg-type]
    assert same.status in ("ok", "inconclusive")


def test_a_current_value_that_is_not_a_number_is_a_regression() -> None:
    old = snapshot({"accuracy": metric("accuracy", 0.5)})
    new = snapshot({"accuracy": metric("accuracy", math.nan)})
    assert compare(old, new).metrics[0].status == "regression"


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(("k", "n"), [(0, 0), (5, 5), (9, 10), (3, 10), (18, 25), (600, 1100)])
def test_the_binomial_tail_matches_scipy(k: int, n: int) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    expected = scipy_stats.binom.sf(k - 1, n, 0.5) if n else 1.0
    assert stats.binomial_tail(k, n) == pytest.approx(expected, rel=1e-9)


def test_the_permutation_test_enumerates_few_moved_examples_exactly() -> None:
    old = np.array([0.0, 0.0, 0.0, 0.0, 0.5])
    new = np.array([-1.0, -2.0, -3.0, 0.0, 0.5])
    test = stats.paired_test("mean", old, new)
    assert test.method == "permutation"
    assert test.p_down == pytest.approx(1 / 8)  # of 8 sign patterns, only the observed one
    assert test.p_up == pytest.approx(1.0)


def test_a_paired_permutation_test_agrees_with_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    old = rng.uniform(0, 1, size=60)
    new = old - rng.normal(0.05, 0.2, size=60)
    ours = stats.paired_test("mean", old, new, resamples=20000)
    theirs = scipy_stats.ttest_rel(new, old, alternative="less").pvalue
    assert ours.p_down == pytest.approx(theirs, abs=0.03)


def test_holm_adjusted_p_values() -> None:
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([]) == []
    assert stats.holm([0.9, 0.5]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 caps at 1


def test_detectable_change_shrinks_with_n() -> None:
    small = stats.paired_test("mean", *map(np.array, flipped(25, 0.6, 2, 2)))
    large = stats.paired_test("mean", *map(np.array, flipped(2500, 0.6, 200, 200)))
    assert small.detectable > 5 * large.detectable


def test_a_changed_number_of_repeats_is_not_compared() -> None:
    from pytest_expertbench.comparability import differences

    base = {"generation": {"temperature": 0.7}, "scorers": "s", "prompt": "p"}
    assert differences(base, {**base, "repeats": 1}).meaning is None  # an older context
    assert differences(base, {**base, "repeats": 5}).meaning == ("repeats 1 → 5: not comparable")
    assert differences({**base, "concurrency": 1}, {**base, "concurrency": 8}).setup == (
        "concurrency 1 → 8: timing not comparable"
    )
