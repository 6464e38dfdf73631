"""A bad setting is named by its environment variable, one JSON line each, exit 2; a secret is never repeated."""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import Callable, Iterator, Sequence

import pytest
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from gateway import start as gateway_start
from gateway.settings import GatewaySettings
from ingress import app as ingress_app
from runtime.service_help import valid_settings
from runtime.settings import KafkaSettings, TritonSettings
from runtime.settings_env import documented_name, env_name
from runtime.settings_errors import (
    EXIT_INVALID_SETTINGS,
    InvalidSetting,
    invalid_settings,
    is_secret,
    problems_of,
)
from tests.unit.runtime.test_settings_documented import _all_settings_classes, _readme_table_names
from worker import app as worker_app
from worker.settings import WorkerSettings

SECRET = "s3cr3t-do-not-print"


class Aliased(BaseSettings):
    """Aliases take the place of the prefixed name: pydantic-settings reads MY_ALIAS, not T_ALIASED_RENAMED."""

    model_config = SettingsConfigDict(env_prefix="T_ALIASED_")

    plain: int = 1
    renamed: int = Field(1, alias="MY_ALIAS")
    either: int = Field(1, validation_alias=AliasChoices("FIRST_CHOICE", "SECOND_CHOICE"))


class PrefixedAliases(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="T_PREFIXED_", env_prefix_target="all")

    renamed: int = Field(1, alias="ALIAS")


class Secretive(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="T_SECRETIVE_")

    api_key: int = 0  # the name says it is a secret
    signing: SecretStr | None = None  # the type says so
    count: int = 0
    needed: str

    @field_validator("signing")
    @classmethod
    def _long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value


def _read_by_pydantic_settings(cls: type[BaseSettings], field_name: str) -> list[str]:
    """The variables pydantic-settings itself looks up for a field (its env source's own list)."""
    source = EnvSettingsSource(cls)
    return [name.upper() for _, name, _ in source._extract_field_info(cls.model_fields[field_name], field_name)]


def _problems(cls: type[BaseSettings]) -> list[InvalidSetting]:
    with pytest.raises(ValidationError) as raised:
        cls()
    return problems_of(cls, raised.value)


def _lines(err: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_every_field_of_every_settings_class_maps_to_a_documented_variable_pydantic_settings_reads() -> None:
    documented = _readme_table_names()
    classes = _all_settings_classes()
    assert {KafkaSettings, GatewaySettings, WorkerSettings} <= classes
    for cls in classes:
        for field_name in cls.model_fields:
            variable = env_name(cls, field_name)
            assert variable in documented, f"{cls.__name__}.{field_name} -> {variable}"
            assert variable in _read_by_pydantic_settings(cls, field_name), f"{cls.__name__}.{field_name}"


def test_an_alias_is_the_variable_without_the_prefix_unless_the_prefix_targets_aliases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert env_name(Aliased, "plain") == "T_ALIASED_PLAIN"
    assert env_name(Aliased, "renamed") == "MY_ALIAS"
    assert env_name(Aliased, "either") == "FIRST_CHOICE"
    assert env_name(PrefixedAliases, "renamed") == "T_PREFIXED_ALIAS"
    aliased: list[tuple[type[BaseSettings], str]] = [
        (Aliased, "renamed"),
        (Aliased, "either"),
        (PrefixedAliases, "renamed"),
    ]
    for cls, field_name in aliased:
        assert env_name(cls, field_name) in _read_by_pydantic_settings(cls, field_name)
        assert documented_name(cls, field_name) == env_name(cls, field_name), "what --help and the README give"

    monkeypatch.setenv("MY_ALIAS", "many")
    monkeypatch.setenv("second_choice", "lots")  # the choice that is set, in any case (not case-sensitive)
    monkeypatch.setenv("T_ALIASED_PLAIN", "few")

    problems = {problem.variable: problem for problem in _problems(Aliased)}

    assert set(problems) == {"T_ALIASED_PLAIN", "MY_ALIAS", "SECOND_CHOICE"}
    assert problems["SECOND_CHOICE"].value == "lots"
    assert problems["MY_ALIAS"] == InvalidSetting(
        "MY_ALIAS", "Input should be a valid integer, unable to parse string as an integer", "many"
    )


def test_secrets_are_known_by_type_or_name() -> None:
    assert is_secret(KafkaSettings, "sasl_password")
    assert is_secret(KafkaSettings, "sasl_username")
    assert is_secret(KafkaSettings, "ssl_keyfile")
    assert is_secret(TritonSettings, "admin_token")
    assert is_secret(Secretive, "signing")
    assert is_secret(Secretive, "api_key")
    assert not is_secret(KafkaSettings, "bootstrap_servers")
    assert not is_secret(GatewaySettings, "port")
    assert not is_secret(Secretive, "count")


def test_a_secret_value_is_never_repeated_an_ordinary_one_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_SECRETIVE_API_KEY", SECRET)
    monkeypatch.setenv("T_SECRETIVE_SIGNING", SECRET)
    monkeypatch.setenv("T_SECRETIVE_COUNT", "several")

    problems = _problems(Secretive)

    assert [problem.variable for problem in problems] == [
        "T_SECRETIVE_API_KEY",
        "T_SECRETIVE_SIGNING",
        "T_SECRETIVE_COUNT",
        "T_SECRETIVE_NEEDED",
    ]
    api_key, signing, count, needed = problems
    assert (api_key.value, signing.value) == (None, None)
    assert signing.problem == "must be at least 32 characters"
    assert count.value == "several"
    assert needed == InvalidSetting("T_SECRETIVE_NEEDED", "required, but not set")
    assert SECRET not in repr(problems)
    assert SECRET not in " ".join(str(problem) for problem in problems)
    assert "value" not in api_key.fields()


def test_a_nested_error_is_on_the_variable_holding_it_with_the_path_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    given = '{"iris": {"entity_key": "", "features": {}}}'
    monkeypatch.setenv("PROMOTER_GATEWAY_FEAST_MODELS", given)
    monkeypatch.setenv("PROMOTER_GATEWAY_FEAST_SERVER_URL", "http://feast:6566")

    (problem,) = _problems(GatewaySettings)

    assert problem.variable == "PROMOTER_GATEWAY_FEAST_MODELS"
    assert problem.problem.startswith("iris.entity_key: String should have at least 1 character; iris.features: ")
    assert problem.value == given


def test_json_that_does_not_parse_and_an_error_about_the_whole_class_name_their_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMOTER_GATEWAY_FEAST_MODELS", "{iris")
    assert invalid_settings([GatewaySettings]) == [
        InvalidSetting(
            "PROMOTER_GATEWAY_FEAST_MODELS",
            "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            "{iris",
        )
    ]

    monkeypatch.setenv("PROMOTER_GATEWAY_FEAST_MODELS", '{"iris": {"entity_key": "id", "features": {"x": "v:x"}}}')
    (whole,) = invalid_settings([GatewaySettings])
    assert whole.variable == "PROMOTER_GATEWAY_*"
    assert whole.problem == "PROMOTER_GATEWAY_FEAST_MODELS needs PROMOTER_GATEWAY_FEAST_SERVER_URL"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a service with a bad setting tried to connect")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def collector_back_on() -> Iterator[None]:
    yield
    gc.enable()  # the gateway's start turns it off until its replay is over


Main = Callable[[Sequence[str] | None], None]
SERVICES: dict[str, tuple[Main, str]] = {
    "gateway": (gateway_start.main, "PROMOTER_GATEWAY_PORT"),
    "worker": (worker_app.main, "PROMOTER_WORKER_CONCURRENCY"),
    "ingress": (ingress_app.main, "PROMOTER_INGRESS_PORT"),
}


@pytest.mark.parametrize("service", sorted(SERVICES))
@pytest.mark.usefixtures("no_network", "collector_back_on")
def test_every_service_stops_with_a_line_per_bad_variable_before_connecting(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main, own_variable = SERVICES[service]
    monkeypatch.setenv(own_variable, "-1.5")
    monkeypatch.setenv("PROMOTER_KAFKA_SESSION_TIMEOUT_MS", "10")
    monkeypatch.setenv("PROMOTER_KAFKA_SASL_PASSWORD", SECRET)  # valid: not mentioned at all
    monkeypatch.setenv("PROMOTER_LOG_LEVEL", "LOUD")  # the lines still get out, as JSON

    with pytest.raises(SystemExit) as exited:
        main([])

    assert exited.value.code == EXIT_INVALID_SETTINGS
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "Traceback" not in err
    lines = {line["variable"]: line for line in _lines(err)}
    assert set(lines) == {own_variable, "PROMOTER_KAFKA_SESSION_TIMEOUT_MS", "PROMOTER_LOG_LEVEL"}
    kafka = lines["PROMOTER_KAFKA_SESSION_TIMEOUT_MS"]
    assert (kafka["event"], kafka["level"], kafka["service"]) == ("invalid setting", "error", service)
    assert kafka["problem"] == "Input should be greater than or equal to 1000"
    assert kafka["value"] == "10"
    assert lines[own_variable]["value"] == "-1.5"


@pytest.mark.usefixtures("no_network")
def test_a_secret_setting_is_named_without_its_value_in_the_log_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMOTER_TRITON_ADMIN_TOKEN", "   ")

    with pytest.raises(SystemExit) as exited, valid_settings("worker", [KafkaSettings, TritonSettings]):
        TritonSettings()

    assert exited.value.code == EXIT_INVALID_SETTINGS
    (line,) = _lines(capsys.readouterr().err)
    assert line["variable"] == "PROMOTER_TRITON_ADMIN_TOKEN"
    assert line["problem"].startswith("is set but empty")
    assert "value" not in line


def test_an_error_that_is_not_about_these_settings_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError), valid_settings("gateway", [GatewaySettings]):
        GatewaySettings(port="not a port")  # from code, not the environment: a bug, not a setting

    assert capsys.readouterr().err == ""
