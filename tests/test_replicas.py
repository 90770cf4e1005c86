"""Replicas: a base_url list, the least busy replica asked, a refusing one set aside."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.config import ConfigError, TargetSpec
from pytest_expertbench.records import TargetError
from pytest_expertbench.replicas import ReplicaSet
from pytest_expertbench.targets import build_target
from pytest_expertbench.targets.ollama import OllamaTarget
from pytest_expertbench.targets.openai import OpenAITarget
from tests.helpers import Project
from tests.support.fake_openai import FakeOpenAI
from tests.support.simulated_server import Clock

OUT = "--expert-bench-report-dir=reports/out"
REFUSED = TargetError("cannot reach it: refused", retryable=True, connection_failed=True)


def closed_port() -> int:
    """A 127.0.0.1 port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spec(**options: Any) -> TargetSpec:
    return TargetSpec(name="t", kind="openai", options=options, source=Path("/x/targets.yaml"))


def request_line(output: str) -> str:
    """The run's request line, at its end: not a progress line (``… q0 has waited 5 s``)
    that a run slowed by retries prints before it."""
    lines = [line for line in output.splitlines() if line.startswith("requests mini:")]
    return lines[-1]


# ---------------------------------------------------------------------------- ReplicaSet


def test_each_request_goes_to_the_replica_with_the_fewest_in_flight() -> None:
    replicas = ReplicaSet(["a", "b", "c"])
    release = asyncio.Event()
    sent: list[str] = []

    async def send(url: str) -> str:
        sent.append(url)
        if len(sent) <= 4:  # the first four stay in flight: a, b, c, then a again
            await release.wait()
        return url

    async def scenario() -> None:
        held = [asyncio.create_task(replicas.call("m", send)) for _ in range(4)]
        await asyncio.sleep(0)
        assert sent == ["a", "b", "c", "a"]
        assert await replicas.call("m", send) == "b"  # b and c hold one each: b comes first
        release.set()
        await asyncio.gather(*held)

    asyncio.run(scenario())
    assert replicas.counts() == {"m": {"replica:a": 2.0, "replica:b": 2.0, "replica:c": 1.0}}


def test_a_refused_request_goes_to_another_replica_and_the_refuser_is_set_aside() -> None:
    clock = Clock()
    replicas = ReplicaSet(["dead", "live"], clock=clock)
    sent: list[str] = []

    async def send(url: str) -> str:
        sent.append(url)
        if url == "dead":
            raise REFUSED
        return "answer"

    assert asyncio.run(replicas.call("m", send)) == "answer"
    assert sent == ["dead", "live"]
    for _ in range(3):  # set aside for 2 s: not asked
        asyncio.run(replicas.call("m", send))
    assert sent == ["dead", "live", "live", "live", "live"]
    clock.now = 2.5  # back, refuses again: set aside twice as long
    asyncio.run(replicas.call("m", send))
    assert sent[-2:] == ["dead", "live"]
    clock.now = 5.5  # 2.5 + 4 s not over yet
    asyncio.run(replicas.call("m", send))
    assert sent[-1] == "live" and sent.count("dead") == 2
    assert replicas.counts()["m"] == {"replica_refused:dead": 2.0, "replica:live": 6.0}


def test_every_replica_refusing_raises_the_refusal_for_the_engine_to_retry() -> None:
    replicas = ReplicaSet(["a", "b"])
    sent: list[str] = []

    async def send(url: str) -> str:
        sent.append(url)
        raise REFUSED

    with pytest.raises(TargetError) as caught:
        asyncio.run(replicas.call("m", send))
    assert caught.value.connection_failed
    assert sent == ["a", "b"]  # each asked once
    with pytest.raises(TargetError):  # both set aside: the one free soonest is asked
        asyncio.run(replicas.call("m", send))
    assert sent == ["a", "b", "a"]


def test_an_error_from_a_replica_that_was_reached_is_not_sent_elsewhere() -> None:
    replicas = ReplicaSet(["a", "b"])
    sent: list[str] = []

    async def send(url: str) -> str:
        sent.append(url)
        raise TargetError("HTTP 500 from a", retryable=True, status=500)

    with pytest.raises(TargetError, match="HTTP 500"):
        asyncio.run(replicas.call("m", send))
    assert sent == ["a"]


# ---------------------------------------------------------------------------- targets


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_list_keeps_the_cache_key_of_its_first_url(kind: str) -> None:
    one = build_target(TargetSpec("t", kind, {"base_url": "http://a/v1", "model": "m"}, Path()))
    two = build_target(
        TargetSpec("t", kind, {"base_url": ["http://a/v1/", "http://b/v1"], "model": "m"}, Path())
    )
    assert one.identity() == two.identity()
    assert isinstance(two, OpenAITarget | OllamaTarget) and two.replicas is not None
    assert two.replicas.urls == ("http://a/v1", "http://b/v1")


@pytest.mark.parametrize(
    ("value", "message"),
    [([], "non-empty list"), (["http://a", 3], "non-empty list"), (["http://a"] * 2, "twice")],
)
def test_a_bad_base_url_list_names_the_key(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_target(spec(base_url=value, model="m"))
    assert caught.value.key == "targets.t.base_url"


# ---------------------------------------------------------------------------- runs


def test_both_replicas_answer_and_the_request_line_counts_each(project: Project) -> None:
    with FakeOpenAI(latency_s=0.05) as first, FakeOpenAI(latency_s=0.05) as second:
        urls = [first.base_url, second.base_url]
        project.targets({"live": {"kind": "openai", "base_url": urls, "model": "m"}}, "live")
        result = project.run("--expert-bench=quick", OUT)
        served = (first.total, second.total)
    result.assert_outcomes(passed=6, skipped=1)
    assert served == (3, 3)
    line = request_line(result.stdout.str())
    assert f"replicas: {first.base_url} 3, {second.base_url} 3" in line or (
        f"replicas: {second.base_url} 3, {first.base_url} 3" in line
    )


def test_a_dead_replica_is_set_aside_and_costs_no_retry(project: Project) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with FakeOpenAI() as live:
        urls = [dead, live.base_url]
        project.targets({"live": {"kind": "openai", "base_url": urls, "model": "m"}}, "live")
        result = project.run("--expert-bench=quick", OUT)
        served = live.total
    result.assert_outcomes(passed=6, skipped=1)
    assert served == 6
    line = request_line(result.stdout.str())
    assert "6 answered, 0 failed, 0 retries" in line
    refused = re.search(re.escape(dead) + r" 0 \(refused (\d+)\)", line)
    assert refused is not None and 1 <= int(refused.group(1)) < 6, line


def test_the_breaker_opens_only_when_every_replica_refuses(project: Project) -> None:
    urls = [f"http://127.0.0.1:{closed_port()}/v1" for _ in range(2)]
    project.targets({"live": {"kind": "openai", "base_url": urls, "model": "m"}}, "live")
    result = project.run("--expert-bench=quick", "--expert-bench-concurrency=2", OUT)
    result.assert_outcomes(errors=6, failed=1)
    assert "stopped asking: live is unreachable" in request_line(result.stdout.str())


def test_an_http_target_takes_a_url_list_as_written(project: Project) -> None:
    urls = ["http://a/x/", "http://b/x/"]
    one = build_target(TargetSpec("t", "http", {"url": urls[0], "response_path": "r"}, Path()))
    two = build_target(TargetSpec("t", "http", {"url": urls, "response_path": "r"}, Path()))
    assert one.identity() == two.identity() and one.identity()["url"] == "http://a/x/"
    dead = f"http://127.0.0.1:{closed_port()}/v1/chat/completions"
    with FakeOpenAI() as live:
        target = {
            "kind": "http",
            "url": [dead, live.base_url + "/chat/completions"],
            "body": {"model": "m", "messages": [{"role": "user", "content": "{prompt}"}]},
            "response_path": "choices.0.message.content",
        }
        project.targets({"live": target}, "live")
        result = project.run("--expert-bench=quick", OUT)
        served = live.total
    result.assert_outcomes(passed=6, skipped=1)
    assert served == 6
    assert "6 answered, 0 failed, 0 retries" in request_line(result.stdout.str())
