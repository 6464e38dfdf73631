"""What a service's start does with its settings before anything connects: ``--help``, and refusing bad ones.

A service takes no arguments besides ``--help``; its configuration is the environment (pydantic-settings).
The help is built from the settings classes themselves (the variable, default, description: ``runtime.settings_env``),
so it cannot drift from what the service reads. Nothing is connected or read from the environment.
A bad setting stops the service with a line naming its environment variable (:func:`valid_settings`).
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, get_args, get_origin

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsError

from runtime.settings_env import documented_name

WIDTH = 100
INDENT = " " * 6


def settings_classes_of(config: type[Any]) -> list[type[BaseSettings]]:
    """The settings classes a service's config dataclass holds, in field order."""
    hints = typing.get_type_hints(config)
    return [hints[field.name] for field in dataclasses.fields(config) if _is_settings(hints[field.name])]


def _is_settings(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseSettings)


def _choices(annotation: object) -> list[str]:
    """The values a ``Literal`` (possibly ``| None``) allows."""
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    return [choice for arg in get_args(annotation) for choice in _choices(arg)]


def _shown(value: object) -> str:
    if value is None or value in ([], {}):
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return _shown(field.default_factory())  # type: ignore[call-arg]
    return _shown(field.default)


def settings_help(classes: Sequence[type[BaseSettings]]) -> str:
    """One block per settings class: each variable with its default, allowed values and description."""
    blocks: list[str] = []
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines = [f"{prefix}*" + (f": {summary}" if summary else "")]
        for name, field in cls.model_fields.items():
            choices = _choices(field.annotation)
            allowed = f"; one of {', '.join(choices)}" if choices else ""
            lines.append(f"  {documented_name(cls, name)}  (default: {_default(field)}{allowed})")
            if field.description:
                lines.append(textwrap.fill(field.description, WIDTH, initial_indent=INDENT, subsequent_indent=INDENT))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def parse_service_args(
    prog: str, description: str, classes: Sequence[type[BaseSettings]], argv: Sequence[str] | None
) -> None:
    """Answer ``--help`` (print and exit 0) or refuse unknown arguments (exit 2); otherwise return."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Configured only through these environment variables (README, Settings):\n\n" + settings_help(classes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)


@contextmanager
def valid_settings(service: str, classes: Sequence[type[BaseSettings]]) -> Iterator[None]:
    """Read the settings inside this block: a bad one logs an ``"invalid setting"`` line per bad variable of
    ``classes`` (its environment variable, the problem, the value unless a secret) and exits 2, no traceback."""
    try:
        yield
    except (ValidationError, SettingsError):
        from runtime.settings_errors import exit_if_invalid  # noqa: PLC0415 - the error path only

        exit_if_invalid(service, classes)
        raise
