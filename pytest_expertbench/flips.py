"""The examples that got worse since the baseline, for the reports to name.

A metric's move says how much; the flipped examples say where to look. Only the
scores behind ``higher`` metrics are watched (a latency that went up is not a
flip), and ids sort naturally, so q2 comes before q10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_expertbench.baseline import Snapshot


@dataclass(frozen=True)
class Flip:
    """An example whose score went down since the baseline (right → wrong, fast → slow)."""

    example_id: str
    score: str
    old: float
    new: float


def flips_since(baseline: Snapshot, current: Snapshot) -> tuple[Flip, ...]:
    """The examples whose watched scores went down, in natural order of their ids."""
    scores = _scores_to_watch(current)
    flips = []
    for example_id, new_scores in current.examples.items():
        old_scores = baseline.examples.get(example_id)
        if old_scores is None:
            continue
        for score in sorted(set(new_scores) & set(old_scores)):
            if (scores is None or score in scores) and old_scores[score] > new_scores[score]:
                flips.append(Flip(example_id, score, old_scores[score], new_scores[score]))
    flips.sort(key=lambda flip: (natural_key(flip.example_id), flip.score))
    return tuple(flips)


def _scores_to_watch(current: Snapshot) -> set[str] | None:
    """The scores behind ``higher`` metrics; None (every score) when a metric does not say."""
    watched: set[str] = set()
    for metric in current.metrics.values():
        if metric.direction != "higher":
            continue
        of = metric.meta.get("of")
        if not isinstance(of, str):
            return None
        watched.add(of)
    return watched


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key putting "2" before "10" and "q2" before "q10"."""
    parts = re.split(r"(\d+)", text)
    key = [(1, int(part), part) if index % 2 else (0, 0, part) for index, part in enumerate(parts)]
    return (*key, (2, 0, text))
