"""What gives a metric its meaning, recorded with every snapshot, and when two differ.

A drop in accuracy after someone changed the temperature, a scorer's options or the
prompt is not the model getting worse; a latency p95 measured at concurrency 8 is not
comparable with one measured at 1, nor on another machine. The snapshot keeps a
``context`` of these facts (never a secret: target options are reduced to kind,
model and revision), and :func:`differences` says which comparisons they rule out.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_expertbench.config import Benchmark, TargetSpec
from pytest_expertbench.streaming import STREAM_SCORES

# Scores that measure the setup (server, load, machine) as much as the model.
TIMING_SCORES = frozenset({"latency_ms", "tokens_per_s", *STREAM_SCORES})
TIMING_UNITS = frozenset({"ms", "s", "tokens/s"})
MEANING_DEFAULTS = {"repeats": 1}


@dataclass(frozen=True)
class Differences:
    """Why a baseline cannot be compared: ``meaning`` rules out every metric, ``setup``
    only the timing ones (latency, throughput)."""

    meaning: str | None = None
    setup: str | None = None


def run_context(benchmark: Benchmark, target: TargetSpec, concurrency: int | str) -> dict[str, Any]:
    """The facts behind this run's numbers, as plain JSON. A recording (``replay``) keeps
    the latencies it recorded, so neither load nor machine is part of its context."""
    recorded = target.kind == "replay"
    scorers = [
        _scorer(spec.kind, spec.name, spec.options, spec.function) for spec in benchmark.scorers
    ]
    return {
        "generation": dict(benchmark.generation),
        "repeats": benchmark.times,
        "scorers": _digest(scorers),
        "prompt": _digest([benchmark.prompt, benchmark.system, list(benchmark.tools)]),
        "target": {
            "kind": target.kind,
            "model": (target.written_options or target.options).get("model"),
            "revision": target.revision,
        },
        "concurrency": None if recorded else target.concurrency or concurrency,
        "hardware": None if recorded else _hardware(),
    }


def _scorer(kind: str, name: str, options: Mapping[str, Any], function: object) -> dict[str, Any]:
    """What a scorer's scores depend on: its options, and the ``version`` its function
    carries when its rule changed (same options, other scores: not comparable)."""
    doc: dict[str, Any] = {"kind": kind, "name": name, "options": dict(options)}
    version = getattr(function, "version", None)
    if version is not None:
        doc["version"] = version
    return doc


def _hardware() -> dict[str, Any]:
    return {
        "platform": f"{sys.platform}-{platform.machine()}",
        "cpus": os.cpu_count(),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or None,
    }


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> Differences:
    """What changed between two contexts; a baseline without one (older, or imported) is
    taken as it is."""
    if not old or not new:
        return Differences()
    was = {**MEANING_DEFAULTS, **old}  # a context written before a key existed
    meaning = [
        _said(key, was.get(key), new.get(key))
        for key in ("generation", "repeats", "scorers", "prompt")
        if was.get(key) != new.get(key)
    ]
    setup = [
        _said(key, old.get(key), new.get(key))
        for key in ("concurrency", "hardware")
        if old.get(key) != new.get(key)
    ]
    return Differences(
        meaning="; ".join(meaning) + ": not comparable" if meaning else None,
        setup="; ".join(setup) + ": timing not comparable" if setup else None,
    )


def _said(key: str, old: Any, new: Any) -> str:
    if key in ("scorers", "prompt"):
        return f"{key} changed"
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        moved = [
            f"{name} {old.get(name)!r} → {new.get(name)!r}"
            for name in sorted(set(old) | set(new))
            if old.get(name) != new.get(name)
        ]
        return f"{key}: " + ", ".join(moved)
    return f"{key} {old!r} → {new!r}"


def is_timing(of: object, unit: str) -> bool:
    """Does this metric measure the setup (latency, throughput) rather than the answers?"""
    return of in TIMING_SCORES or unit in TIMING_UNITS
