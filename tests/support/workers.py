"""Functions run in child processes (multiprocessing "spawn" imports them by name)."""

from __future__ import annotations

from pathlib import Path

from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.engine import Engine, EngineSettings
from pytest_expertbench.records import Request
from pytest_expertbench.targets.openai import OpenAITarget


def answer_all(base_url: str, cache_dir: str, prompts: list[str]) -> list[str]:
    """Ask every prompt through an engine sharing ``cache_dir``; the answers, in order."""
    cache = ResponseCache(Path(cache_dir))
    target = OpenAITarget(name="fake", base_url=base_url, model="m")
    requests = [Request("shared", str(i), prompt) for i, prompt in enumerate(prompts)]
    with Engine(target, EngineSettings(concurrency=4), cache) as engine:
        engine.prefetch(requests)
        answers = [engine.result(request).text for request in requests]
    cache.close()
    return answers
