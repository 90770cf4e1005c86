"""The plugin's options: every ``--expert-bench-*`` flag, its ini twin, one way to read them.

A value comes from the command line, else from the ini file, and is checked once, here,
with an error that names the flag; everything downstream gets typed :class:`Settings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_expertbench.state import RUN_ID_KEY

if TYPE_CHECKING:
    from pytest_expertbench.run import Settings
    from pytest_expertbench.saving import SaveMode


@dataclass(frozen=True)
class _Option:
    name: str  # the part after --expert-bench-; "" for --expert-bench itself
    help: str
    kind: str = "string"  # string | path | int | seconds | bool | switch (a flag with a word)
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--expert-bench" + (f"-{self.name}" if self.name else "")

    @property
    def ini(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS = (
    _Option(
        "",
        "run the benchmarks of these suites (comma-separated); off when absent",
        metavar="SUITES",
    ),
    _Option("dir", "where benchmark YAML files live [benchmarks_suites]", "path"),
    _Option("targets", "the targets file [<dir>/targets.yaml]", "path"),
    _Option("target", "the model under test, by name [the targets file's default]", metavar="NAME"),
    _Option("baseline-dir", "where baselines live [baselines]", "path"),
    _Option("baseline", "compare against this baseline label [the target's name]", metavar="LABEL"),
    _Option(
        "save-baseline",
        "write this run as the target's baseline when it ran every example without error "
        "and without a regression; =force: even with a regression",
        "switch",
        "force",
    ),
    _Option("threshold", "relative threshold of metrics without their own [0.05]", metavar="T"),
    _Option(
        "gate",
        "a regression is beyond the threshold, significant, or both [both]",
        metavar="threshold|significant|both",
    ),
    _Option("alpha", "significance level of the gate's paired tests [0.05]", metavar="A"),
    _Option(
        "coverage",
        "a metric scored on fewer than this share of the examples run is incomplete [0.9]",
        metavar="F",
    ),
    _Option(
        "report-dir", "where results.jsonl and summary.md go [reports/expertbench/<run-id>]", "path"
    ),
    _Option(
        "concurrency",
        "model requests in flight per process, or auto: found while the run goes [16]",
        "int-or-auto",
        "N|auto",
    ),
    _Option("limit", "at most N examples per benchmark", "int", "N"),
    _Option("seed", "sampling and bootstrap seed [0]", "int", "N"),
    _Option(
        "repeats",
        "ask each example N times (seeds s..s+N-1), for benchmarks without their own repeats [1]",
        "int",
        "N",
    ),
    _Option("cache", "response cache: resume, reuse, refresh or off [resume]", metavar="MODE"),
    _Option("cache-dir", "where the response cache lives [.expertbench/cache]", "path"),
    _Option("record", "write this run's answers as a replay file", "path"),
    _Option(
        "progress",
        "after an item waits this long for the model, a progress line; 0: never [5]",
        "seconds",
        "SECONDS",
    ),
)


def option_value(config: pytest.Config, name: str) -> Any:
    """An option's command-line value, else its ini twin, else None."""
    option = next(o for o in OPTIONS if o.name == name)
    value = config.getoption(option.ini)
    from_cli = value is not None
    if not from_cli:
        value = config.getini(option.ini)
        if value in ("", None, False):
            return None
    if option.kind == "path":
        base = config.invocation_params.dir if from_cli else _ini_dir(config)
        return (base / str(value)).resolve()
    if option.kind == "int-or-auto" and str(value).strip().lower() == "auto":
        return "auto"
    if option.kind in ("int", "int-or-auto"):
        try:
            number = int(value)
        except ValueError:
            raise pytest.UsageError(
                f"{option.flag}: expected a whole number, got {value!r}"
            ) from None
        if number < (1 if name in ("concurrency", "limit", "repeats") else 0):
            raise pytest.UsageError(f"{option.flag}: {number} is too small")
        return number
    if option.kind == "seconds":
        return _seconds(option.flag, value)
    return value


def _seconds(flag: str, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise pytest.UsageError(f"{flag}: expected seconds (0 or more), got {text!r}")
    return seconds


def _ini_dir(config: pytest.Config) -> Path:
    return config.inipath.parent if config.inipath else config.rootpath


def settings_from(config: pytest.Config, suites: str) -> Settings:
    from pytest_expertbench.config import DEFAULT_MAX_CONCURRENCY, ConfigError
    from pytest_expertbench.records import GATE_MODES
    from pytest_expertbench.run import CacheMode, Settings, run_id
    from pytest_expertbench.thresholds import parse_threshold

    root = _ini_dir(config)
    bench_dir = option_value(config, "dir") or root / "benchmarks_suites"
    threshold_text = option_value(config, "threshold") or "0.05"
    cache = option_value(config, "cache") or "resume"
    cache = {"on": "resume"}.get(cache, cache)  # "on", the mode before there were four
    progress = option_value(config, "progress")
    if cache not in ("resume", "reuse", "refresh", "off"):
        raise pytest.UsageError(
            f"--expert-bench-cache: expected resume, reuse, refresh or off, got {cache!r}"
        )
    # Every process of a run shares the controller's id: answers one worker stored are
    # this run's own for the others.
    this_run = getattr(config, "workerinput", {}).get(RUN_ID_KEY) or run_id()
    try:
        threshold = parse_threshold(_number_or_text(threshold_text), "--expert-bench-threshold", "")
    except ConfigError as exc:
        raise pytest.UsageError(f"--expert-bench-threshold: {exc.message}") from None
    gate = option_value(config, "gate") or "both"
    if gate not in GATE_MODES:
        raise pytest.UsageError(
            f"--expert-bench-gate: expected threshold, significant or both, got {gate!r}"
        )
    baseline_dir = option_value(config, "baseline-dir")
    concurrency = option_value(config, "concurrency")
    return Settings(
        suites=tuple(s.strip() for s in suites.split(",") if s.strip()),
        bench_dir=bench_dir,
        targets_path=option_value(config, "targets") or bench_dir / "targets.yaml",
        target=option_value(config, "target"),
        baseline_dir=baseline_dir or root / "baselines",
        baseline_dir_given=baseline_dir is not None,
        baseline_label=option_value(config, "baseline"),
        save_baseline=_save_mode(option_value(config, "save-baseline")),
        threshold=threshold,
        gate=gate,
        alpha=_fraction_option(config, "alpha", 0.05, inclusive=False),
        coverage=_fraction_option(config, "coverage", 0.9, inclusive=True),
        report_dir=option_value(config, "report-dir")
        or root / "reports" / "expertbench" / this_run,
        concurrency=DEFAULT_MAX_CONCURRENCY if concurrency == "auto" else concurrency or 16,
        adaptive=concurrency == "auto",
        limit=option_value(config, "limit"),
        seed=option_value(config, "seed") or 0,
        repeats=option_value(config, "repeats") or 1,  # a benchmark's own repeats win
        cache=cast(CacheMode, cache),
        cache_dir=option_value(config, "cache-dir") or root / ".expertbench" / "cache",
        run_id=this_run,
        record=option_value(config, "record"),
        progress_s=5.0 if progress is None else progress,  # 0 is a value: never
    )


def _save_mode(value: str | None) -> SaveMode:
    """``--expert-bench-save-baseline``: off, on (the bare flag, or true in an ini) or force."""
    word = (value or "off").strip().lower()
    modes: dict[str, SaveMode] = {
        "off": "off", "false": "off", "no": "off", "0": "off",
        "on": "on", "true": "on", "yes": "on", "1": "on", "force": "force",
    }  # fmt: skip
    if word not in modes:
        raise pytest.UsageError(
            f"--expert-bench-save-baseline: expected no value or =force, got {value!r} "
            "(a path after the flag is taken as its value: put paths first)"
        )
    return modes[word]


def _fraction_option(config: pytest.Config, name: str, default: float, *, inclusive: bool) -> float:
    """A number in (0, 1) (``alpha``) or [0, 1] (``coverage``), refused with its flag's name."""
    text = option_value(config, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    inside = 0 <= value <= 1 if inclusive else 0 < value < 1
    if not inside:
        span = "from 0 to 1" if inclusive else "between 0 and 1 (exclusive)"
        raise pytest.UsageError(f"--expert-bench-{name}: expected a number {span}, got {text!r}")
    return value


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def add_options(parser: pytest.Parser) -> None:
    """Every option as a flag in the ``expertbench`` group and as an ini key."""
    group = parser.getgroup("expertbench", "model benchmarks (pytest-expertbench)")
    for option in OPTIONS:
        dest = option.ini
        if option.kind == "bool":
            group.addoption(
                option.flag, action="store_true", default=None, dest=dest, help=option.help
            )
            parser.addini(option.ini, option.help, type="bool", default=False)
        elif option.kind == "switch":  # a flag that may take one word: --x or --x=force
            group.addoption(
                option.flag,
                nargs="?",
                const="on",
                default=None,
                dest=dest,
                metavar=option.metavar,
                help=option.help,
            )
            parser.addini(option.ini, option.help, default="")
        else:
            group.addoption(
                option.flag, default=None, dest=dest, metavar=option.metavar, help=option.help
            )
            parser.addini(option.ini, option.help, default="")
