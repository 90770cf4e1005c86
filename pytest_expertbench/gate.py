"""The gate: does a metric's move since the baseline fail the build?

The rule, in two sentences: a metric regresses when it moved against its direction
by more than its threshold AND a one-sided paired test on the per-example scores,
Holm-corrected over every metric compared in the session, gives p < α (5 %). A move
beyond the threshold that the test cannot tell from noise is ``inconclusive``, which
does not fail; improvements follow the same rule the other way.

:func:`compare` holds one benchmark against its baseline (its own metrics are the
family); :func:`decide` then re-decides every benchmark of a session together, so the
correction covers them all. Both keep the raw test on each row, so deciding again is
idempotent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from pytest_expertbench import stats
from pytest_expertbench.baseline import MetricGate, Snapshot
from pytest_expertbench.comparability import differences, is_timing
from pytest_expertbench.flips import Flip, flips_since
from pytest_expertbench.records import Direction, GateMode, MetricResult, Threshold

MetricStatus = Literal[
    "regression",
    "improvement",
    "ok",
    "inconclusive",
    "incomplete",
    "new",
    "missing",
    "not_compared",
]
FAILING: frozenset[str] = frozenset({"regression", "incomplete"})


@dataclass(frozen=True)
class GateRule:
    """The session's gate settings; a metric's own ``gate:``/``alpha:`` win over them."""

    threshold: Threshold = field(default_factory=lambda: Threshold(rel=0.05))
    mode: GateMode = "both"
    alpha: float = 0.05
    coverage: float = 0.9  # a metric over fewer than this share of the examples run fails
    seed: int = 0


@dataclass(frozen=True)
class MetricComparison:
    """One metric held against its baseline; ``current`` is None for a ``missing`` metric.

    ``band`` is what the threshold alone says (regression, improvement or ok);
    ``status`` is the gate's final word. ``p_value`` is the Holm-adjusted one-sided
    p-value for the way the metric moved; ``detectable`` the smallest move (in the
    metric's unit) this comparison could have flagged.
    """

    name: str
    direction: Direction
    unit: str
    current: MetricResult | None
    baseline: float | None
    delta_rel: float | None
    delta_abs: float | None
    threshold: Threshold
    status: MetricStatus
    band: MetricStatus | None = None
    test: stats.ChangeTest | None = None
    p_value: float | None = None
    mode: GateMode = "both"
    alpha: float = 0.05
    detectable: float | None = None
    reason: str | None = None  # why a metric is incomplete or not compared

    @property
    def p_worse(self) -> float | None:
        if self.test is None:
            return None
        return self.test.p_down if self.direction == "higher" else self.test.p_up

    @property
    def p_better(self) -> float | None:
        if self.test is None:
            return None
        return self.test.p_up if self.direction == "higher" else self.test.p_down

    @property
    def detectable_rel(self) -> float | None:
        if self.detectable is None or not self.baseline:
            return None
        return self.detectable / abs(self.baseline)


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one benchmark."""

    benchmark: str
    comparable: bool
    note: str | None
    metrics: tuple[MetricComparison, ...]
    flipped: tuple[Flip, ...]

    def having(self, *statuses: str) -> tuple[MetricComparison, ...]:
        return tuple(m for m in self.metrics if m.status in statuses)

    @property
    def regressions(self) -> tuple[MetricComparison, ...]:
        return self.having("regression")

    @property
    def improvements(self) -> tuple[MetricComparison, ...]:
        return self.having("improvement")

    @property
    def failed(self) -> bool:
        return any(m.status in FAILING for m in self.metrics)


def compare(
    baseline: Snapshot | None, current: Snapshot, rule: GateRule | Threshold | None = None
) -> Verdict:
    """Hold ``current`` against ``baseline``, metric by metric, its own metrics the family.

    A changed dataset (another fingerprint) is never compared. A current value that is
    not a finite number counts as a regression; one over too few examples (errors) is
    ``incomplete``. Both fail the gate.
    """
    if rule is None:
        rule = GateRule()
    elif isinstance(rule, Threshold):
        rule = GateRule(threshold=rule)
    if baseline is None:
        return _uncompared(current, rule, "no baseline yet", "new", comparable=True)
    if baseline.dataset.fingerprint != current.dataset.fingerprint:
        old, new = baseline.dataset, current.dataset
        note = (
            f"dataset changed: baseline {old.short()} (n={old.n}) ≠ "
            f"current {new.short()} (n={new.n}); not compared"
        )
        return _uncompared(current, rule, note, "not_compared", comparable=False)
    changed = differences(baseline.context, current.context)
    if changed.meaning:
        return _uncompared(current, rule, changed.meaning, "not_compared", comparable=False)
    rows = [
        _compare_metric(name, baseline, current, rule, changed.setup)
        for name, metric in current.metrics.items()
    ]
    rows += [
        replace(_row(name, metric, _rule_for(current, name, rule), "missing"), current=None)
        for name, metric in baseline.metrics.items()
        if name not in current.metrics
    ]
    verdict = Verdict(current.benchmark, True, None, tuple(rows), flips_since(baseline, current))
    return decide([verdict])[0]


def _rule_for(current: Snapshot, name: str, rule: GateRule) -> GateRule:
    own: MetricGate = current.gates.get(name, MetricGate())
    return replace(
        rule,
        threshold=current.thresholds.get(name, rule.threshold),
        mode=own.mode or rule.mode,
        alpha=rule.alpha if own.alpha is None else own.alpha,
    )


def _row(
    name: str,
    metric: MetricResult,
    rule: GateRule,
    status: MetricStatus,
    *,
    baseline: float | None = None,
    reason: str | None = None,
) -> MetricComparison:
    """A row about ``metric``; a ``missing`` one is given the baseline's and drops it."""
    return MetricComparison(
        name=name,
        direction=metric.direction,
        unit=metric.unit,
        current=metric,
        baseline=metric.value if status == "missing" else baseline,
        delta_rel=None,
        delta_abs=None,
        threshold=rule.threshold,
        status=status,
        mode=rule.mode,
        alpha=rule.alpha,
        reason=reason,
    )


def _uncompared(
    current: Snapshot, rule: GateRule, note: str, status: MetricStatus, *, comparable: bool
) -> Verdict:
    rows = []
    for name, metric in current.metrics.items():
        own = _rule_for(current, name, rule)
        short = _coverage_gap(metric, current, own)
        rows.append(_row(name, metric, own, "incomplete" if short else status, reason=short))
    return Verdict(current.benchmark, comparable, note, tuple(rows), ())


def _coverage_gap(metric: MetricResult, current: Snapshot, rule: GateRule) -> str | None:
    """Why ``metric`` stands on too few examples to be trusted, or None."""
    ran, scored = current.dataset.n, metric.samples_used
    errors = metric.meta.get("errors")
    if scored and isinstance(errors, int):
        # What errored is missing; a score some answers cannot have (tpot_ms of a
        # one-token answer, the usage a server left out) is not a hole in the sample.
        scored = ran - errors
    if ran and scored < rule.coverage * ran:
        return (
            f"only {scored} of {ran} examples scored (below {rule.coverage:.0%}): the rest errored"
        )
    return None


def _compare_metric(
    name: str,
    baseline: Snapshot,
    current: Snapshot,
    session_rule: GateRule,
    setup_changed: str | None,
) -> MetricComparison:
    metric = current.metrics[name]
    rule = _rule_for(current, name, session_rule)
    old_metric = baseline.metrics.get(name)
    if old_metric is None:
        return _row(name, metric, rule, "new")
    across = current.gates.get(name, MetricGate()).across_setups
    if setup_changed and not across and is_timing(metric.meta.get("of"), metric.unit):
        return _row(
            name, metric, rule, "not_compared", baseline=old_metric.value, reason=setup_changed
        )
    old, new = old_metric.value, metric.value
    finite = math.isfinite(new)
    short = _coverage_gap(metric, current, rule)
    band = gate_status(old, new, metric.direction, rule.threshold)
    return replace(
        _row(name, metric, rule, "incomplete" if short else band, baseline=old, reason=short),
        delta_rel=(new - old) / abs(old) if old != 0 and finite else None,
        delta_abs=new - old if finite else None,
        band=band,
        test=_test(baseline, current, old_metric, metric, rule) if finite and not short else None,
    )


def _test(
    baseline: Snapshot,
    current: Snapshot,
    old: MetricResult,
    new: MetricResult,
    rule: GateRule,
) -> stats.ChangeTest | None:
    """The paired test over the examples both runs scored; unpaired from the intervals
    when the baseline kept no per-example scores; None when neither is possible."""
    score, agg = new.meta.get("of"), new.meta.get("agg", "mean")
    if isinstance(score, str) and isinstance(agg, str) and agg in stats.STATISTICS:
        pairs = [
            (old_scores[score], new_scores[score])
            for example_id, new_scores in current.examples.items()
            if score in new_scores
            and score in (old_scores := baseline.examples.get(example_id, {}))
        ]
        if pairs:
            before, after = zip(*pairs, strict=True)
            return stats.paired_test(agg, before, after, alpha=rule.alpha, seed=rule.seed)
    if old.ci is not None and new.ci is not None:
        return stats.unpaired_test(old.value, old.ci, new.value, new.ci, alpha=rule.alpha)
    return None


def decide(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Final statuses for every compared metric of ``verdicts``, as one family.

    Regressions and improvements are each Holm-corrected over all tested metrics, so
    the chance that a session with no real change shows any regression stays below α.
    """
    rows = [row for verdict in verdicts for row in verdict.metrics if row.test is not None]
    worse = dict(zip(map(id, rows), stats.holm([r.p_worse or 1.0 for r in rows]), strict=True))
    better = dict(zip(map(id, rows), stats.holm([r.p_better or 1.0 for r in rows]), strict=True))
    return [
        replace(
            verdict,
            metrics=tuple(
                _decided(r, worse.get(id(r)), better.get(id(r))) for r in verdict.metrics
            ),
        )
        for verdict in verdicts
    ]


def _decided(row: MetricComparison, worse: float | None, better: float | None) -> MetricComparison:
    if row.band is None or row.status in ("incomplete", "new", "missing", "not_compared"):
        return row
    if row.current is not None and not math.isfinite(row.current.value):
        return replace(row, status="regression")
    threshold_abs = _threshold_abs(row)
    if worse is None or better is None or row.test is None:  # nothing to test: the band decides
        return replace(row, status=row.band, detectable=threshold_abs)
    moved_worse = row.band == "regression" or (row.band == "ok" and _leans_worse(row))
    p = worse if moved_worse else better
    detectable = {
        "threshold": threshold_abs,
        "significant": row.test.detectable,
        "both": max(threshold_abs, row.test.detectable),
    }[row.mode]
    return replace(row, status=_status(row, worse, better), p_value=p, detectable=detectable)


def _status(row: MetricComparison, worse: float, better: float) -> MetricStatus:
    band = row.band or "ok"
    if row.mode == "threshold":
        return band
    if row.mode == "significant":
        if worse < row.alpha:
            return "regression"
        return "improvement" if better < row.alpha else "ok"
    if band == "regression":
        return "regression" if worse < row.alpha else "inconclusive"
    if band == "improvement":
        return "improvement" if better < row.alpha else "inconclusive"
    return "ok"


def _leans_worse(row: MetricComparison) -> bool:
    delta = row.delta_abs or 0.0
    return delta < 0 if row.direction == "higher" else delta > 0


def _threshold_abs(row: MetricComparison) -> float:
    """The threshold in the metric's unit: how far it may move before the band is left."""
    if row.threshold.abs is not None:
        return row.threshold.abs
    return (row.threshold.rel or 0.0) * abs(row.baseline or 0.0)


def gate_status(old: float, new: float, direction: Direction, threshold: Threshold) -> MetricStatus:
    """``regression``, ``improvement`` or ``ok`` for one move from ``old`` to ``new``
    by the threshold alone; a value exactly on the band's edge is ``ok``."""
    if not math.isfinite(new):
        return "regression"
    low, high = _band(old, threshold)
    worse, better = (new < low, new > high) if direction == "higher" else (new > high, new < low)
    if worse:
        return "regression"
    return "improvement" if better else "ok"


def _band(old: float, threshold: Threshold) -> tuple[float, float]:
    """The values ``new`` may take and still be ``ok``; the ends themselves are inside."""
    if threshold.abs is not None:
        return old - threshold.abs, old + threshold.abs
    t = threshold.rel if threshold.rel is not None else 0.0
    if old >= 0:
        return old * (1 - t), old * (1 + t)
    return old * (1 + t), old * (1 - t)


def counts(verdicts: Sequence[Verdict]) -> Mapping[str, int]:
    """How many metrics of a session have each status, for the reports' first line."""
    totals: dict[str, int] = {}
    for verdict in verdicts:
        for row in verdict.metrics:
            totals[row.status] = totals.get(row.status, 0) + 1
    return totals
