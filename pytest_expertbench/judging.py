"""Named targets that scorers may ask, through the same engine and cache as the run.

A ``judge`` scorer asks a second model to grade the answer of the model under test.
That second model deserves what the first one gets: bounded concurrency, retries
with backoff, and the response cache, so that a judgement once paid for is never
paid for again. :class:`TargetPool` gives each named target of the targets file
its own :class:`~pytest_expertbench.engine.Engine`, built the first time a scorer
asks it: a run (or an xdist controller) that judges nothing opens no connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.config import ConfigError, TargetsFile, TargetSpec
from pytest_expertbench.engine import Engine, EngineSettings
from pytest_expertbench.records import Completion, Request, TargetError
from pytest_expertbench.request_stats import BenchmarkCounters
from pytest_expertbench.secrets import Scrubber, target_secrets
from pytest_expertbench.targets import Target

__all__ = ["TargetPool"]

MAX_SCORING_THREADS = 256


class TargetPool:
    """Asks any target of a targets file by name (the scorers' :class:`Asker`).

    ``settings`` are the run's engine settings; a target's own ``concurrency``,
    ``timeout_s``, ``max_retries``, ``max_retry_after_s`` and ``requests_per_minute``
    override them, as they do for the model under test. The pool does not own
    ``cache``: whoever opened it closes it, after :meth:`close`.
    """

    def __init__(
        self,
        targets: TargetsFile,
        make_target: Callable[[TargetSpec], Target],
        settings: EngineSettings,
        open_cache: Callable[[], ResponseCache | None] = lambda: None,
    ) -> None:
        self._targets = targets
        self._make_target = make_target
        self._settings = settings
        self._open_cache = open_cache
        self._engines: dict[str, Engine] = {}
        self.reserved: set[str] = set()  # targets the scorers said they will ask
        self._lock = threading.Lock()
        self._closed = False
        # Every secret the targets file refers to, masked in every engine's outcomes.
        self.scrubber = Scrubber.for_targets(targets.targets.values())
        # The tokens of what scorers asked, per benchmark and target (see scoring()).
        self._usage: dict[str, dict[str, BenchmarkCounters]] = {}
        self._scoring = threading.local()

    @property
    def targets(self) -> TargetsFile:
        return self._targets

    def names(self) -> set[str]:
        return set(self._targets.targets)

    def reserve(self, target: str) -> None:
        self.reserved.add(target)

    def scoring_threads(self) -> int:
        """How many examples to score at once: enough to keep every reserved target
        (a judge) as busy as its concurrency allows, since each scoring thread waits
        on one of its answers; at least 4, for scorers that ask nothing."""
        wanted = [
            self._settings_for(spec).concurrency
            for name, spec in self._targets.targets.items()
            if name in self.reserved
        ]
        return min(MAX_SCORING_THREADS, max([4, *wanted]))

    def engine(self, target: str) -> Engine:
        """The engine of ``target``, built on first use (the plugin prefetches through it)."""
        return self._engine(target)

    def built(self, target: str) -> Engine | None:
        """The engine of ``target`` if one was built (for its request statistics)."""
        with self._lock:
            return self._engines.get(target)

    def ask(self, target: str, request: Request) -> Completion:
        """The answer of ``target``; raises TargetError when it cannot be had.

        A target that cannot be built (an unknown name, a bad option, an unset API
        key variable) raises TargetError too, so the caller reports one line on the
        item that needed it instead of stopping the run.
        """
        completion = self._engine(target).result(request)
        benchmark: str | None = getattr(self._scoring, "benchmark", None)
        if benchmark is not None:
            with self._lock:
                counters = self._usage.setdefault(benchmark, {})
                counters.setdefault(target, BenchmarkCounters()).add_usage(completion)
        return completion

    @contextlib.contextmanager
    def scoring(self, benchmark: str) -> Iterator[None]:
        """While this thread scores an example of ``benchmark``: the tokens of what its
        scorers ask (a judge's) are counted for it (the summary's token line)."""
        self._scoring.benchmark = benchmark
        try:
            yield
        finally:
            self._scoring.benchmark = None

    def usage(self) -> dict[str, dict[str, tuple[int, int, int]]]:
        """Per benchmark and asked target: prompt tokens, completion tokens, and how many
        answers reported them, of what scorers asked while scoring it."""
        with self._lock:
            return {
                benchmark: {
                    target: (c.prompt_tokens, c.completion_tokens, c.with_usage)
                    for target, c in targets.items()
                    if c.with_usage
                }
                for benchmark, targets in self._usage.items()
            }

    def close(self) -> None:
        """Stop every engine the pool started; idempotent."""
        with self._lock:
            self._closed = True
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()

    def __enter__(self) -> TargetPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _engine(self, name: str) -> Engine:
        with self._lock:
            if self._closed:
                raise RuntimeError("the target pool is closed")
            engine = self._engines.get(name)
            if engine is None:
                engine = self._engines[name] = self._build(name)
            return engine

    def _build(self, name: str) -> Engine:
        spec = self._targets.targets.get(name)
        if spec is None:
            known = ", ".join(sorted(self._targets.targets)) or "none"
            raise TargetError(f"unknown target {name!r} in {self._targets.path} (known: {known})")
        try:
            target = self._make_target(spec)
            identity = self._identity(spec, target)
        except ConfigError as exc:
            raise TargetError(f"cannot use the target {name!r}: {exc}") from None
        self.scrubber.add(target_secrets(target))
        return Engine(
            target,
            self._settings_for(spec),
            self._open_cache(),
            identity=identity,
            pinned=spec.revision is not None,
            scrubber=self.scrubber,
        )

    def _identity(self, spec: TargetSpec, target: Target) -> Mapping[str, Any]:
        """What the cache key knows of the target: its identity as the targets file wrote
        it, so that a managed server's ``{port}``, picked anew every run, leaves the key
        alone (the target is built a second time from the written options, only for
        this), plus the ``revision`` the user pinned."""
        if spec.written_options is not None:
            target = self._make_target(replace(spec, options=spec.written_options))
        identity = dict(target.identity())
        if spec.revision is not None:
            identity["revision"] = spec.revision
        return identity

    def _settings_for(self, spec: TargetSpec) -> EngineSettings:
        """The run's settings with the target's own; ``concurrency: auto`` (the target's, or
        the run's for a target without its own) goes up to the target's max_concurrency."""
        adaptive = spec.concurrency == "auto" or (
            spec.concurrency is None and self._settings.adaptive
        )
        if adaptive:
            concurrency = spec.max_concurrency
        elif isinstance(spec.concurrency, int):
            concurrency = spec.concurrency
        else:
            concurrency = self._settings.concurrency
        return replace(
            self._settings,
            concurrency=concurrency,
            adaptive=adaptive,
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            max_retry_after_s=spec.max_retry_after_s,
            requests_per_minute=spec.requests_per_minute,
        )
