"""Turn the failures a ``promoter`` command can meet into one readable line and a documented exit code."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    SaslAuthenticationFailed,
)
from pydantic import ValidationError

from runtime.kafka_access import KafkaAccessRefused, check_kafka_access
from runtime.settings import KafkaSettings
from runtime.settings_errors import InvalidSettingsError, problems_of, settings_class_of
from runtime.topic_reading import MissingTopicError
from schemas.field_problems import field_problems

EXIT_REJECTED = 1
EXIT_TIMEOUT = 2
EXIT_INVALID = 3
EXIT_UNREACHABLE = 4
EXIT_BUG = 5
#: How long a failed command may spend finding out whether Kafka refused it or is unreachable.
REFUSAL_CHECK_TIMEOUT_S = 5.0

#: Kafka cannot be reached or refuses our credentials: what the PROMOTER_KAFKA_* settings fix. Anything else is a bug.
KAFKA_UNREACHABLE = (
    KafkaConnectionError,
    KafkaTimeoutError,
    RequestTimedOutError,
    NodeNotReadyError,
    AuthenticationFailedError,
    SaslAuthenticationFailed,
    OSError,
)


@contextmanager
def explained_failures() -> Iterator[None]:
    """Invalid input, a bad setting or a missing topic -> exit 3 naming the field or the environment variable;
    Kafka unreachable -> exit 4 with what to check."""
    try:
        yield
    except ValidationError as error:
        for problem in _problems(error):
            typer.echo(problem, err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except InvalidSettingsError as error:  # read by promoter_client, named by their variables already
        for setting in error.problems:
            typer.echo(str(setting), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except MissingTopicError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except TimeoutError:  # an OSError too, but "no answer in time" is the caller's to explain (exit 2)
        raise
    except KAFKA_UNREACHABLE as error:
        kafka = KafkaSettings()
        refusal = _refusal(kafka)
        if refusal is not None:  # aiokafka says "Unable to bootstrap" for a refused password too
            typer.echo(str(refusal), err=True)
            raise typer.Exit(EXIT_UNREACHABLE) from None
        exit_unreachable(f"cannot reach Kafka at {kafka.bootstrap_servers}", error)


def _problems(error: ValidationError) -> list[str]:
    """A bad setting is named by its environment variable, bad input by its field."""
    settings = settings_class_of(error)
    if settings is not None:
        return [str(problem) for problem in problems_of(settings, error)]
    return [str(problem) for problem in field_problems(error.errors(), root="input")]


def _refusal(kafka: KafkaSettings) -> KafkaAccessRefused | None:
    """Why Kafka refused us (credentials, mechanism, TLS), or None when it just cannot be reached."""
    try:
        asyncio.run(check_kafka_access(kafka, timeout_s=REFUSAL_CHECK_TIMEOUT_S))
    except KafkaAccessRefused as refusal:
        return refusal
    return None


def exit_unreachable(what: str, error: BaseException) -> NoReturn:
    """``what`` failed because of ``error``: say so and what to check, then exit 4."""
    typer.echo(f"{what}: {error}", err=True)
    typer.echo("check PROMOTER_KAFKA_BOOTSTRAP_SERVERS (and the PROMOTER_KAFKA_* security settings)", err=True)
    raise typer.Exit(EXIT_UNREACHABLE) from None
