"""How often the gate cries wolf, and how often it catches a real drop, by simulation.

Every simulated run goes through the project's own code: scores are aggregated by
``metrics.aggregate`` into snapshots and judged by ``gate.compare`` / ``gate.decide``,
exactly as at the end of a pytest run. Two gates are measured side by side: the
shipped rule (``both``: beyond the threshold AND significant, Holm over the session)
and the plain threshold rule it replaced (``threshold``).

The noise model: of n examples, a share 2f is unstable (right with probability 1/2
in every run) and the rest are stably right or wrong, so an unchanged model's answers
differ between two runs on a share f of the examples (the flip rate) while its
expected accuracy stays at 0.6. A relative drop d turns stably right examples
wrong until the expected accuracy is 0.6 (1 - d). Latency: each example has its own
typical latency (log-normal around 300 ms) and each run multiplies it by log-normal
noise (sigma 0.25); p95 is held to its shipped 25 % threshold.

    python bench/verdicts.py                # the full table (a few minutes)
    python bench/verdicts.py --quick        # fewer repetitions, for a look
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_expertbench.baseline import DatasetInfo, Snapshot
from pytest_expertbench.config import MetricSpec
from pytest_expertbench.gate import GateRule, Verdict, compare, decide
from pytest_expertbench.metrics import aggregate
from pytest_expertbench.records import Threshold

ACCURACY = MetricSpec("accuracy", "correct", "mean", "higher", "ratio")
LATENCY = MetricSpec("latency_p95_ms", "latency_ms", "p95", "lower", "ms", Threshold(rel=0.25))
BASE_ACCURACY = 0.6
NS = (25, 100, 500, 1319, 5000)
FLIPS = (0.05, 0.10, 0.15)
DROPS = (0.02, 0.05, 0.10, 0.25)
RULES = {"both": GateRule(), "threshold": GateRule(mode="threshold")}  # --alpha changes both


@dataclass(frozen=True)
class Model:
    """Per-example chances of a right answer, and typical latencies."""

    right: np.ndarray
    latency: np.ndarray

    @staticmethod
    def make(n: int, flip: float, rng: np.random.Generator) -> Model:
        unstable = 2 * flip
        kinds = rng.permutation(n)
        right = np.zeros(n)
        right[kinds < round(unstable * n)] = 0.5
        stable_right = round((BASE_ACCURACY - unstable / 2) * n)
        cut = round(unstable * n)
        right[(kinds >= cut) & (kinds < cut + stable_right)] = 1.0
        return Model(right, rng.lognormal(math.log(300), 0.5, size=n))

    def dropped(self, drop: float) -> Model:
        """The same model, worse by ``drop`` of its accuracy (stably right ones go wrong)."""
        right = self.right.copy()
        lose = round(drop * float(np.sum(self.right)))
        for i in np.flatnonzero(right == 1.0)[:lose]:
            right[i] = 0.0
        return Model(right, self.latency)

    def run(self, rng: np.random.Generator, name: str, specs: Sequence[MetricSpec]) -> Snapshot:
        correct = (rng.random(self.right.size) < self.right).astype(float)
        latency = self.latency * rng.lognormal(0.0, 0.25, size=self.right.size)
        return snapshot(name, correct, latency, specs)


def snapshot(
    name: str, correct: np.ndarray, latency: np.ndarray, specs: Sequence[MetricSpec]
) -> Snapshot:
    metrics = {}
    for spec in specs:
        values = correct if spec is ACCURACY else latency
        metric = aggregate(spec, name, list(values))
        assert metric is not None
        metrics[spec.name] = metric
    examples = {
        str(i): {"correct": float(c), "latency_ms": float(t)}
        for i, (c, t) in enumerate(zip(correct, latency, strict=True))
    }
    return Snapshot(
        benchmark=name,
        suite="sim",
        target="sim",
        captured_at="",
        git_sha=None,
        plugin_version="",
        dataset=DatasetInfo("sim", "sha256:" + "0" * 64, correct.size),
        environment={},
        metrics=metrics,
        examples=examples,
        thresholds={LATENCY.name: LATENCY.threshold} if LATENCY.threshold else {},
    )


def flagged(verdicts: Sequence[Verdict], metric: str | None) -> bool:
    """Did the gate fail on ``metric`` (any metric when None)?"""
    return any(
        row.status == "regression" and (metric is None or row.name == metric)
        for verdict in verdicts
        for row in verdict.metrics
    )


def judged(
    olds: Sequence[Model],
    news: Sequence[Model],
    rng: np.random.Generator,
    specs: Sequence[MetricSpec] = (ACCURACY,),
) -> dict[str, list[Verdict]]:
    """One simulated session (a baseline run and a new run per benchmark), under each rule."""
    pairs = [
        (old.run(rng, f"b{i}", specs), new.run(rng, f"b{i}", specs))
        for i, (old, new) in enumerate(zip(olds, news, strict=True))
    ]
    return {
        name: decide([compare(before, after, rule) for before, after in pairs])
        for name, rule in RULES.items()
    }


def rate(hits: int, reps: int) -> str:
    return f"{100 * hits / reps:5.1f} %"


def wilson_high(hits: int, reps: int) -> float:
    z, p = 1.96, hits / reps
    centre = (p + z * z / (2 * reps)) / (1 + z * z / reps)
    half = z * math.sqrt(p * (1 - p) / reps + z * z / (4 * reps * reps)) / (1 + z * z / reps)
    return centre + half


def false_alarms(reps: int, seed: int) -> None:
    print("False alarms of an unchanged model (share of runs failing the gate on the metric)")
    print(f"{'metric':<16}{'flip':>6}{'n':>7}  {'both':>8}  {'threshold':>9}  ratio")
    for metric, flips in (("accuracy", FLIPS), ("latency_p95_ms", (0.10,))):
        for flip in flips:
            for n in NS:
                counts = dict.fromkeys(RULES, 0)
                rng = np.random.default_rng(seed)
                runs = reps if metric == "accuracy" else max(reps // 5, 50)
                for _ in range(runs):
                    model = Model.make(n, flip, rng)
                    specs = (ACCURACY,) if metric == "accuracy" else (LATENCY,)
                    for name, verdicts in judged([model], [model], rng, specs).items():
                        counts[name] += flagged(verdicts, metric)
                both, plain = counts["both"], counts["threshold"]
                ratio = f"{plain / both:5.1f}x fewer" if both else "   none"
                print(
                    f"{metric:<16}{flip:>6.0%}{n:>7}  {rate(both, runs)}  {rate(plain, runs):>9}"
                    f"  {ratio}  (95 % upper bound {100 * wilson_high(both, runs):.1f} %)"
                )


def detections(reps: int, seed: int) -> None:
    print("\nDetection of a real relative drop in accuracy (flip rate 10 %)")
    print(f"{'drop':>6}{'n':>7}  {'both':>8}  {'threshold':>9}")
    for drop in DROPS:
        for n in NS:
            counts = dict.fromkeys(RULES, 0)
            rng = np.random.default_rng(seed)
            for _ in range(reps):
                model = Model.make(n, 0.10, rng)
                worse = model.dropped(drop)
                for name, verdicts in judged([model], [worse], rng).items():
                    counts[name] += flagged(verdicts, "accuracy")
            both, plain = rate(counts["both"], reps), rate(counts["threshold"], reps)
            print(f"{drop:>6.0%}{n:>7}  {both}  {plain:>9}")


def sessions(reps: int, seed: int) -> None:
    print("\nA 7-benchmark session of an unchanged model (10 % of answers change)")
    print(f"{'metrics':<22}{'n':>5}  {'both':>8}  {'threshold':>9}")
    for label, specs in (
        ("accuracy", (ACCURACY,)),
        ("accuracy + latency p95", (ACCURACY, LATENCY)),
    ):
        for n in (25, 100, 500):
            counts = dict.fromkeys(RULES, 0)
            rng = np.random.default_rng(seed)
            for _ in range(reps):
                models = [Model.make(n, 0.10, rng) for _ in range(7)]
                for name, verdicts in judged(models, models, rng, specs).items():
                    counts[name] += flagged(verdicts, None)
            both = counts["both"]
            print(
                f"{label:<22}{n:>5}  {rate(both, reps)}  {rate(counts['threshold'], reps):>9}"
                f"  (95 % upper bound {100 * wilson_high(both, reps):.1f} %)"
            )


def identical(seed: int) -> None:
    rng = np.random.default_rng(seed)
    fails = 0
    for n in NS:
        model = Model.make(n, 0.10, rng)
        run = model.run(rng, "same", (ACCURACY, LATENCY))
        fails += flagged(decide([compare(run, run, GateRule())]), None)
    print(f"\nIdentical answers (temperature 0, the same run twice): {fails} of {len(NS)} fail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1000, help="runs per cell (default 1000)")
    parser.add_argument("--quick", action="store_true", help="200 runs per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05, help="the gate's alpha (0.05)")
    parser.add_argument(
        "--only", choices=("alarms", "detection", "sessions"), help="one table of the three"
    )
    args = parser.parse_args()
    RULES.update(both=GateRule(alpha=args.alpha), threshold=GateRule(mode="threshold"))
    reps = 200 if args.quick else args.reps
    started = time.perf_counter()
    if args.only in (None, "alarms"):
        false_alarms(reps, args.seed)
    if args.only in (None, "detection"):
        detections(max(reps // 2, 100), args.seed)
    if args.only in (None, "sessions"):
        sessions(max(reps // 2, 100), args.seed)
    identical(args.seed)
    print(f"\n({reps} runs per false-alarm cell; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
