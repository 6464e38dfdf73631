"""Turn the failures a ``promoter`` command can meet into one readable line and a documented exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from runtime.settings import KafkaSettings
from schemas.field_problems import field_problems

EXIT_REJECTED = 1
EXIT_TIMEOUT = 2
EXIT_INVALID = 3
EXIT_UNREACHABLE = 4


@contextmanager
def explained_failures() -> Iterator[None]:
    """Invalid input -> exit 3 naming the field; Kafka unreachable -> exit 4 with what to check."""
    try:
        yield
    except ValidationError as error:
        for problem in field_problems(error.errors(), root="input"):
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except (KafkaError, OSError) as error:
        exit_unreachable(f"cannot reach Kafka at {KafkaSettings().bootstrap_servers}", error)


def exit_unreachable(what: str, error: BaseException) -> NoReturn:
    """``what`` failed because of ``error``: say so and what to check, then exit 4."""
    typer.echo(f"{what}: {error}", err=True)
    typer.echo("check PROMOTER_KAFKA_BOOTSTRAP_SERVERS (and the PROMOTER_KAFKA_* security settings)", err=True)
    raise typer.Exit(EXIT_UNREACHABLE) from None
