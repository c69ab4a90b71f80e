"""The circuit breaker's states on a hand-driven clock: closed → open after N failures → one
half-open trial after the cool-down → closed on success, open again on failure."""

from __future__ import annotations

import pytest

from alize.engines.breaker import CircuitBreaker
from alize.errors import EngineUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_s=10, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # not consecutive any more
    breaker.failure()
    breaker.failure()
    breaker.check()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and breaker.opened == 1
    clock.now += 4
    with pytest.raises(EngineUnavailableError) as refused:
        breaker.check()
    assert refused.value.code == "circuit_open" and refused.value.status_code == 503
    assert refused.value.headers["Retry-After"] == "6"


def test_half_open_lets_one_trial_through_then_closes_or_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=5, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.state == "half_open"
    breaker.check()  # the trial
    with pytest.raises(EngineUnavailableError):
        breaker.check()  # a second caller while the trial runs
    breaker.failure()  # the trial failed: open again, for a whole cool-down
    assert breaker.state == "open" and breaker.opened == 2
    clock.now += 4.9
    with pytest.raises(EngineUnavailableError):
        breaker.check()
    clock.now += 0.1
    breaker.check()
    breaker.success()
    assert breaker.state == "closed"
    breaker.check()
    breaker.check()


def test_an_abandoned_trial_is_replaced_after_another_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=2, clock=clock)
    breaker.failure()
    clock.now += 2
    breaker.check()  # a trial whose caller went away: neither success nor failure comes
    clock.now += 1
    with pytest.raises(EngineUnavailableError):
        breaker.check()
    clock.now += 1
    breaker.check()  # a new trial
