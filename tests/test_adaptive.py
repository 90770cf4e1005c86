"""The adaptive concurrency limit against simulated servers (tests/support/simulated_server.py)."""

from __future__ import annotations

import pytest

from pytest_expertbench.adaptive import AdaptiveLimit, FixedLimit, limit_for
from pytest_expertbench.records import TargetError
from tests.support.simulated_server import Clock, Simulation


def test_a_queueing_server_gets_its_capacity_and_no_more() -> None:
    simulation = Simulation("queue", capacity=32, service_s=0.2)
    simulation.run(60)
    assert simulation.limit.settled == 32
    assert simulation.answered / 60 >= 0.97 * 32 / 0.2
    assert simulation.limit.peak > 32  # it looked past the capacity and came back


def test_it_reaches_the_capacity_within_a_second() -> None:
    simulation = Simulation("queue", capacity=32, service_s=0.2)
    simulation.run(1319 * 0.2 / 32)  # the time 1319 answers take at the capacity
    assert simulation.answered >= 0.95 * 1319


@pytest.mark.parametrize("capacity", [5, 24, 100])
def test_it_settles_near_any_capacity(capacity: int) -> None:
    simulation = Simulation("queue", capacity=capacity, service_s=0.1)
    simulation.run(60)
    # Without a 429 or 503 it never goes below where it starts (8): nothing to compare.
    assert min(capacity, 8) <= simulation.limit.settled <= max(8, 1.5 * capacity)


def test_429_past_the_capacity_makes_it_back_off() -> None:
    simulation = Simulation("reject", capacity=32, service_s=0.2)
    simulation.run(60)
    assert simulation.limit.limit <= 32
    assert simulation.rejected < 0.05 * simulation.answered
    assert simulation.answered / 60 >= 0.7 * 32 / 0.2


def test_a_batching_server_is_given_more_while_throughput_grows() -> None:
    simulation = Simulation("batch", capacity=64, service_s=0.2)
    simulation.run(60)
    assert simulation.limit.settled >= 64


def test_never_above_the_maximum() -> None:
    simulation = Simulation("batch", capacity=1000, service_s=0.2, maximum=20)
    simulation.run(30)
    assert simulation.limit.peak == 20
    assert simulation.limit.settled == 20


def test_it_is_raised_only_when_requests_waited_for_a_slot() -> None:
    clock = Clock()
    limit = AdaptiveLimit(256, clock=clock)
    for _ in range(100):  # one request at a time: the limit of 8 is never reached
        assert limit.may_start(0)
        clock.now += 0.1
        limit.heard(0.1, None)
    assert limit.limit == 8


def test_an_overload_answer_to_an_old_request_does_not_cut_twice() -> None:
    clock = Clock(now=10.0)
    limit = AdaptiveLimit(256, clock=clock)
    clock.now += 1.0
    limit.heard(0.5, TargetError("HTTP 503", status=503))  # sent at 10.5
    assert limit.limit == 6
    clock.now += 0.1
    limit.heard(0.5, TargetError("HTTP 429", status=429))  # sent before the first cut
    assert limit.limit == 6
    limit.heard(0.5, TargetError("HTTP 500", status=500))  # not an overload
    assert limit.limit == 6


def test_a_fixed_limit_is_the_number() -> None:
    fixed = limit_for(3, adaptive=False)
    assert isinstance(fixed, FixedLimit)
    assert [fixed.may_start(n) for n in range(5)] == [True, True, True, False, False]
    assert fixed.figures() == (0, 0)
    assert isinstance(limit_for(3, adaptive=True), AdaptiveLimit)
