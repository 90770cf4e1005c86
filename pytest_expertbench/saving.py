"""When a run may become the baseline: only when that leaves the baseline better informed.

A baseline is the reference every later run is held to, so losing a good one to a
bad run (a server that died halfway, a ``-k`` run of three examples, a run where
every request failed) switches the gate off without a word. A run is saved only
when it asked and scored every example of its suite and limit, without a failed
gate unless forced; the baseline it replaces is kept beside it, in ``.prev/``, so
that ``expertbench baseline restore`` can undo a mistaken save.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pytest_expertbench import baseline as baselines
from pytest_expertbench.baseline import Snapshot
from pytest_expertbench.files import atomic_write_text
from pytest_expertbench.gate import Verdict
from pytest_expertbench.records import ExampleResult

SaveMode = Literal["off", "on", "force"]


def refusal(
    mode: SaveMode,
    planned: int,
    ran: Sequence[ExampleResult],
    verdict: Verdict,
    *,
    interrupted: bool,
) -> str | None:
    """Why this run must not become the baseline, or None when it may."""
    if interrupted:
        return "not saved: the run was interrupted"
    if len(ran) < planned:
        return (
            f"not saved: {len(ran)} of {planned} examples ran (-k, -x, --lf or a stop left "
            "the rest out); a baseline needs every example"
        )
    errored = sum(1 for example in ran if example.error is not None)
    if errored:
        return (
            f"not saved: {errored} of {len(ran)} examples errored; a baseline needs every "
            "example scored"
        )
    if verdict.failed and mode != "force":
        failing = ", ".join(
            f"{m.name} {m.status}" for m in verdict.having("regression", "incomplete")
        )
        return (
            f"not saved: the gate failed ({failing}); --expert-bench-save-baseline=force "
            "saves it anyway"
        )
    return None


def save(path: Path, snapshot: Snapshot, shown: Path) -> str:
    """Write ``snapshot`` to ``path``, keeping the file it replaces in ``.prev/``.

    A baseline of other examples is replaced only by a run of at least as many (a
    changed or grown dataset), never by a smaller sample (``--expert-bench-limit``).
    """
    try:
        existing = baselines.load(path)
    except baselines.BaselineError as exc:
        return f"not saved: the existing file is unreadable ({exc}); move it away first"
    note = f"saved to {shown}"
    if existing is not None:
        if (
            existing.dataset.fingerprint != snapshot.dataset.fingerprint
            and existing.dataset.n > snapshot.dataset.n
        ):
            return (
                f"not saved: {shown} holds a baseline of more examples "
                f"(n={existing.dataset.n}, this run n={snapshot.dataset.n}); "
                "delete it to replace it"
            )
        previous = baselines.previous_path(path)
        atomic_write_text(previous, path.read_text(encoding="utf-8"))
        note += f" (the one it replaced is in {shown.parent / previous.parent.name})"
    baselines.save(path, snapshot)
    return note
