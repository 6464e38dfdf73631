"""Endpoint rotation: round robin, ejection of a failing endpoint or (endpoint, Triton model) pair with a doubling
backoff, one trial at a time, re-admission, and the last resort when everything is ejected. A fake clock."""

from __future__ import annotations

from collections import Counter

import pytest
from structlog.testing import capture_logs

from gateway.endpoint_rotation import (
    ENDPOINT_SCOPE,
    FORGET_AFTER_S,
    MODEL_SCOPE,
    Backoff,
    Choice,
    EndpointRotation,
)
from gateway.metrics import GatewayMetrics

ENDPOINTS = ["triton-a:8000", "triton-b:8000", "triton-c:8000"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def rotation(clock: Clock, endpoints: list[str] | None = None) -> EndpointRotation:
    return EndpointRotation(endpoints or ENDPOINTS[:2], Backoff(initial_s=0.5, max_s=2.0), GatewayMetrics(), clock)


def sample(rotation: EndpointRotation, model: str, count: int) -> Counter[int]:
    """Where ``count`` first tries of ``model`` go (none of them reports back)."""
    chosen: Counter[int] = Counter()
    for _ in range(count):
        choice = rotation.choose(model)
        chosen[choice.index] += 1
    return chosen


def metric(rotation: EndpointRotation, name: str, **labels: str) -> float:
    value = rotation.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_without_ejections_it_is_round_robin_and_reuses_its_choices(clock: Clock) -> None:
    endpoints = rotation(clock, ENDPOINTS)
    picked = [endpoints.choose("m--v1") for _ in range(6)]
    assert [choice.index for choice in picked] == [0, 1, 2, 0, 1, 2]
    assert picked[0] is picked[3]  # nothing allocated per request on the hot path
    assert all(choice.trials == () for choice in picked)


def test_a_model_failure_ejects_only_that_pair(clock: Clock) -> None:
    endpoints = rotation(clock)
    endpoints.failed(Choice(0), "m--v1", scope=MODEL_SCOPE, reason="unknown_model")
    assert endpoints.ejected() == {("triton-a:8000", "m--v1"): "unknown_model"}
    assert sample(endpoints, "m--v1", 10) == {1: 10}
    assert sample(endpoints, "other--v1", 10) == {0: 5, 1: 5}
    assert metric(endpoints, "gateway_endpoint_ejections_total", endpoint="triton-a:8000", scope="model") == 1
    assert metric(endpoints, "gateway_ejected_upstreams", scope="model") == 1
    assert metric(endpoints, "gateway_ejected_upstreams", scope="endpoint") == 0


def test_an_unreachable_endpoint_is_ejected_for_every_model(clock: Clock) -> None:
    endpoints = rotation(clock, ENDPOINTS)
    endpoints.failed(Choice(1), "m--v1", scope=ENDPOINT_SCOPE, reason="unreachable")
    assert endpoints.ejected() == {("triton-b:8000", None): "unreachable"}
    for model in ("m--v1", "other--v1"):
        assert sample(endpoints, model, 10).keys() == {0, 2}
    assert metric(endpoints, "gateway_ejected_upstreams", scope="endpoint") == 1


def test_after_the_backoff_one_trial_at_a_time_and_an_answer_readmits(clock: Clock) -> None:
    endpoints = rotation(clock)
    endpoints.failed(Choice(0), "m--v1", scope=MODEL_SCOPE, reason="unknown_model")
    clock.now += 0.49
    assert sample(endpoints, "m--v1", 5) == {1: 5}
    clock.now += 0.02
    trial = endpoints.choose("m--v1")
    assert trial == Choice(0, ((0, "m--v1"),))
    assert sample(endpoints, "m--v1", 5) == {1: 5}  # the trial is in flight: nobody else goes there
    with capture_logs() as logs:
        endpoints.answered(trial, "m--v1")
    assert endpoints.ejected() == {}
    assert sample(endpoints, "m--v1", 4) == {0: 2, 1: 2}
    assert metric(endpoints, "gateway_endpoint_readmissions_total", endpoint="triton-a:8000", scope="model") == 1
    assert metric(endpoints, "gateway_ejected_upstreams", scope="model") == 0
    (line,) = logs
    assert line["event"] == "Triton endpoint back in rotation"
    assert (line["endpoint"], line["triton_model"], line["reason"]) == ("triton-a:8000", "m--v1", "unknown_model")


def test_a_failed_trial_doubles_the_backoff_up_to_the_cap(clock: Clock) -> None:
    endpoints = rotation(clock)
    with capture_logs() as logs:
        endpoints.failed(Choice(0), "m--v1", scope=MODEL_SCOPE, reason="unknown_model")
    assert [(line["event"], line["endpoint"], line["triton_model"], line["reason"]) for line in logs] == [
        ("Triton endpoint out of rotation", "triton-a:8000", "m--v1", "unknown_model")
    ]
    waits = []
    for _ in range(4):
        waited = 0.0
        while (choice := endpoints.choose("m--v1")).index != 0:
            clock.now += 0.25
            waited += 0.25
        endpoints.failed(choice, "m--v1", scope=MODEL_SCOPE, reason="unknown_model")
        waits.append(waited)
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert metric(endpoints, "gateway_endpoint_ejections_total", endpoint="triton-a:8000", scope="model") == 1


def test_a_trial_that_ended_without_an_answer_may_go_again_after_the_backoff(clock: Clock) -> None:
    endpoints = rotation(clock)
    endpoints.failed(Choice(0), "m--v1", scope=MODEL_SCOPE, reason="unknown_model")
    clock.now += 0.5
    trial = endpoints.choose("m--v1")
    assert trial.trials
    endpoints.released(trial)  # e.g. the caller's deadline passed
    assert endpoints.choose("m--v1").index == 1
    clock.now += 0.5
    assert endpoints.choose("m--v1").trials == ((0, "m--v1"),)


def test_an_answer_about_a_model_proves_the_endpoint_is_up(clock: Clock) -> None:
    endpoints = rotation(clock)
    endpoints.failed(Choice(0), "m--v1", scope=ENDPOINT_SCOPE, reason="unreachable")
    clock.now += 0.5
    trial = endpoints.choose("m--v1")
    assert trial.trials == ((0, None),)
    endpoints.failed(trial, "m--v1", scope=MODEL_SCOPE, reason="unknown_model")  # restarted empty
    assert endpoints.ejected() == {("triton-a:8000", "m--v1"): "unknown_model"}
    assert sample(endpoints, "other--v1", 4) == {0: 2, 1: 2}


def test_a_retry_avoids_the_failed_endpoint_and_any_trial(clock: Clock) -> None:
    endpoints = rotation(clock, ENDPOINTS)
    endpoints.failed(Choice(2), "m--v1", scope=MODEL_SCOPE, reason="unknown_model")
    clock.now += 1
    for _ in range(6):
        retry = endpoints.choose_other("m--v1", 0)
        assert retry == Choice(1)
    assert rotation(clock, ENDPOINTS[:1]).choose_other("m--v1", 0) is None


def test_when_every_endpoint_is_ejected_the_least_recently_failed_is_tried(clock: Clock) -> None:
    endpoints = rotation(clock)
    endpoints.failed(Choice(1), "m--v1", scope=MODEL_SCOPE, reason="unknown_model")
    clock.now += 0.1
    endpoints.failed(Choice(0), "m--v1", scope=ENDPOINT_SCOPE, reason="unreachable")
    assert endpoints.choose("m--v1") == Choice(1)
    assert endpoints.choose_other("m--v1", 1) == Choice(0)
    clock.now += 0.1
    endpoints.failed(Choice(1), "m--v1", scope=MODEL_SCOPE, reason="unknown_model")  # not a trial: no longer out
    assert endpoints.choose("m--v1") == Choice(0)


def test_an_ejection_nobody_tries_is_forgotten(clock: Clock) -> None:
    endpoints = rotation(clock)
    endpoints.failed(Choice(0), "gone--v1", scope=MODEL_SCOPE, reason="unknown_model")
    clock.now += 0.5 + FORGET_AFTER_S + 1
    with capture_logs() as logs:
        endpoints.choose("other--v1")
    assert endpoints.ejected() == {}
    assert metric(endpoints, "gateway_ejected_upstreams", scope="model") == 0
    assert "no request tried it" in logs[0]["why"]


def test_backoff_doubles_to_its_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=3.0)
    steps = [backoff.after(None)]
    for _ in range(4):
        steps.append(backoff.after(steps[-1]))
    assert steps == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_no_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one Triton endpoint"):
        EndpointRotation([], Backoff(), GatewayMetrics())
