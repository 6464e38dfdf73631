"""The promoter command: bad input, an unreachable Kafka, a bug and routing changes, told apart (no broker)."""

from __future__ import annotations

import json
import logging
import socket
import sys

import pytest
from aiokafka.errors import SaslAuthenticationFailed
from typer.testing import CliRunner

from promoter_cli import dead_letter_log
from promoter_cli.errors import EXIT_BUG, EXIT_INVALID, EXIT_TIMEOUT, EXIT_UNREACHABLE
from promoter_cli.main import app, main
from promoter_client import promotion, routing
from runtime import kafka_access
from runtime.logging import configure_command_line_logging, get_logger
from runtime.topic_reading import MissingTopicError
from schemas.routing_updated import RoutingUpdated, RoutingUpdatedData


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_an_invalid_model_name_names_the_field() -> None:
    code, output = run("promote", "team/model")

    assert code == EXIT_INVALID
    assert "model_name: registered model name 'team/model' must not contain '/' or ':'" in output


def test_bad_weights_are_explained() -> None:
    code, output = run("route", "iris", "--weights", "champion=90,challenger=20")
    assert code == EXIT_INVALID
    assert "must sum to 100, got 110" in output

    code, output = run("route", "iris", "--weights", "champion")
    assert code == 2
    assert "must look like alias=percent" in output


def test_a_bad_setting_is_named_by_its_environment_variable() -> None:
    code, output = run("dlq", "list", env={"PROMOTER_KAFKA_FETCH_MAX_WAIT_MS": "0"})
    register_env = {"PROMOTER_MLFLOW_REQUEST_TIMEOUT_S": "-1"}
    register_code, register_output = run("webhook", "register", "--url", "http://i/webhooks/mlflow", env=register_env)

    assert code == EXIT_INVALID
    assert output == "PROMOTER_KAFKA_FETCH_MAX_WAIT_MS: Input should be greater than or equal to 1 (given '0')\n"
    assert register_code == EXIT_INVALID
    assert "PROMOTER_MLFLOW_REQUEST_TIMEOUT_S: Input should be greater than 0 (given '-1')" in register_output


def test_unreachable_kafka_says_what_to_check() -> None:
    env = {"PROMOTER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}"}

    code, output = run("promote", "iris", "--version", "1", env=env)

    assert code == EXIT_UNREACHABLE
    assert "cannot reach Kafka at 127.0.0.1:" in output
    assert "check PROMOTER_KAFKA_BOOTSTRAP_SERVERS" in output


def test_refused_credentials_are_told_apart_from_an_unreachable_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(host: str, port: int, **kwargs: object) -> object:
        raise SaslAuthenticationFailed("Authentication failed during authentication due to invalid credentials")

    monkeypatch.setattr(kafka_access, "create_conn", refused)  # the broker's answer; the command's own fails too
    env = {
        "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}",
        "PROMOTER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PROMOTER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PROMOTER_KAFKA_SASL_USERNAME": "promoter-oncall",
        "PROMOTER_KAFKA_SASL_PASSWORD": "wrong-password-123",
    }

    code, output = run("promote", "iris", "--version", "1", env=env)

    assert code == EXIT_UNREACHABLE
    assert "refused the credentials of SASL user 'promoter-oncall' (SCRAM-SHA-512)" in output
    assert "check PROMOTER_KAFKA_SASL_USERNAME and PROMOTER_KAFKA_SASL_PASSWORD" in output
    assert "cannot reach Kafka" not in output
    assert "wrong-password-123" not in output


@pytest.mark.parametrize("command", [["status"], ["dlq", "list"]])
def test_on_call_commands_say_kafka_is_unreachable_without_library_noise(command: list[str]) -> None:
    env = {"PROMOTER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}"}

    code, output = run(*command, env=env)

    assert code == EXIT_UNREACHABLE
    assert "check PROMOTER_KAFKA_BOOTSTRAP_SERVERS" in " ".join(output.split())  # rich wraps long lines


def test_every_command_documents_an_example() -> None:
    for command in (
        ["promote"],
        ["unserve"],
        ["route"],
        ["status"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "replay"],
    ):
        code, output = run(*command, "--help")
        assert code == 0
        assert "Example:" in output, command


class FakeRoutingTopic:
    """routing.updated in memory: the current policy it holds, and what the command published."""

    def __init__(self, current: RoutingUpdatedData | None) -> None:
        self.current = current
        self.published: list[RoutingUpdated] = []
        self.reads = 0

    async def current_routing(self, model: str, **_: object) -> RoutingUpdatedData | None:
        self.reads += 1
        return self.current if self.current and self.current.model_name == model else None

    async def publish_event(self, kafka: object, topic: str, event: RoutingUpdated, *, key: str) -> None:
        assert key == event.data.model_name
        self.published.append(event)


@pytest.fixture
def routing_topic(monkeypatch: pytest.MonkeyPatch) -> FakeRoutingTopic:
    current = RoutingUpdatedData(
        model_name="iris", weights={"champion": 90, "challenger": 10}, generation=4_000_000_000_000
    )
    topic = FakeRoutingTopic(current)
    monkeypatch.setattr(routing, "current_routing", topic.current_routing)
    monkeypatch.setattr(routing, "publish_event", topic.publish_event)
    return topic


def test_route_sets_a_shadow_alone_and_keeps_the_weights(routing_topic: FakeRoutingTopic) -> None:
    code, output = run("route", "iris", "--shadow", "candidate", "--shadow-percent", "5", "--json")

    assert code == 0, output
    (event,) = routing_topic.published
    assert (event.data.weights, event.data.shadow_alias, event.data.shadow_sample_percent) == (
        {"champion": 90, "challenger": 10},
        "candidate",
        5.0,
    )
    assert event.data.generation > 4_000_000_000_000, "later than the current one, even with a clock behind"
    assert json.loads(output) == event.data.model_dump(mode="json")


def test_route_clears_the_shadow_and_keeps_the_weights(routing_topic: FakeRoutingTopic) -> None:
    assert routing_topic.current is not None
    routing_topic.current = routing_topic.current.model_copy(
        update={"shadow_alias": "candidate", "shadow_sample_percent": 5.0}
    )

    code, output = run("route", "iris", "--no-shadow")

    assert code == 0, output
    (event,) = routing_topic.published
    assert (event.data.weights, event.data.shadow_alias) == ({"champion": 90, "challenger": 10}, None)
    assert "no shadow" in output


def test_route_with_the_whole_policy_does_not_read_the_current_one(routing_topic: FakeRoutingTopic) -> None:
    code, _ = run("route", "iris", "--weights", "champion=100", "--no-shadow")

    assert code == 0
    assert routing_topic.reads == 0
    assert routing_topic.published[0].data.weights == {"champion": 100}


def test_route_says_what_to_give_when_there_is_no_policy_to_keep(routing_topic: FakeRoutingTopic) -> None:
    code, output = run("route", "fraud", "--shadow", "candidate", "--shadow-percent", "5")
    both_code, both = run("route", "iris", "--shadow", "candidate", "--no-shadow")

    assert code == EXIT_INVALID
    assert "weights: fraud has no routing policy yet" in output
    assert both_code == EXIT_INVALID
    assert "exclusive" in both
    assert routing_topic.published == []


def test_no_answer_in_time_exits_2_not_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_answer(model: str, **_: object) -> object:
        raise TimeoutError(f"no outcome for promotion request evt-1 within 0.1 s (model {model})")

    monkeypatch.setattr(promotion, "request_promotion", no_answer)

    code, output = run("promote", "iris", "--version", "1", "--wait", "0.1")

    assert code == EXIT_TIMEOUT
    assert "the request stays queued" in output


def test_a_bug_while_reading_letters_is_not_reported_as_kafka_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_: object) -> list[object]:
        raise KeyError("x-dlq-reason")

    monkeypatch.setattr(dead_letter_log, "read_dead_letters", broken)

    result = CliRunner().invoke(app, ["dlq", "list"])

    assert result.exit_code != EXIT_UNREACHABLE
    assert isinstance(result.exception, KeyError)
    assert "Kafka" not in result.output


def test_the_promoter_script_exits_5_with_the_traceback_on_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken(*_: object) -> list[object]:
        raise KeyError("x-dlq-reason")

    monkeypatch.setattr(dead_letter_log, "read_dead_letters", broken)
    monkeypatch.setattr(sys, "argv", ["promoter", "dlq", "list"])

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == EXIT_BUG
    errors = capsys.readouterr().err
    assert "Traceback" in errors
    assert "KeyError: 'x-dlq-reason'" in errors
    assert "bug in promoter" in errors


def test_a_missing_topic_is_named_not_called_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def missing(*_: object) -> list[object]:
        raise MissingTopicError("topic 'model.promotion.dlq' does not exist (check PROMOTER_TOPIC_PROMOTION_DLQ)")

    monkeypatch.setattr(dead_letter_log, "read_dead_letters", missing)

    code, output = run("dlq", "list")

    assert code == EXIT_INVALID
    assert "check PROMOTER_TOPIC_PROMOTION_DLQ" in output


def test_commands_log_nothing_unless_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    log = get_logger("promoter_cli.test")

    configure_command_line_logging(verbose=False)
    log.info("replay caught up")
    logging.getLogger("aiokafka").error("Unable to connect")
    quiet = capsys.readouterr()
    configure_command_line_logging(verbose=True)
    log.info("replay caught up")
    logging.getLogger("aiokafka").warning("Unable to connect")
    verbose = capsys.readouterr()

    assert (quiet.out, quiet.err) == ("", "")
    assert verbose.out == ""
    assert "replay caught up" in verbose.err
    assert "Unable to connect" in verbose.err


def test_route_says_when_the_current_policy_could_not_be_read(
    routing_topic: FakeRoutingTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow(model: str, **_: object) -> RoutingUpdatedData | None:
        raise TimeoutError("replay of ['routing.updated'] not caught up within 60 s")

    monkeypatch.setattr(routing, "current_routing", slow)

    code, output = run("route", "iris", "--no-shadow")

    assert code == EXIT_TIMEOUT
    assert "cannot read the current policy" in output
    assert routing_topic.published == []
