"""A bad setting, told by the environment variable an operator set, never by the field pydantic names.

pydantic reports ``port: Input should be a valid integer``; the operator set ``PROMOTER_GATEWAY_PORT=abc``.
The variable is derived from the settings class itself (:mod:`runtime.settings_env`, as ``--help`` and the README
name it: a field's alias when it has one, else the class's ``env_prefix`` and the field's name). A nested
error (an entry of a JSON setting) is reported on the variable that holds it, with the path inside it. The value
given is repeated only for a field that is not a secret (a ``SecretStr``, or a name with password, token,
secret, key, sasl ... in it).

A service (:func:`runtime.service_help.valid_settings`) logs one ``"invalid setting"`` line per bad variable and
exits 2 without a traceback; it imports this module only then, so its start imports nothing more. The ``promoter``
command (exit 3), ``promoter-stack`` (exit 2) and the console's pages show the same problems as
``VARIABLE: problem (given 'value')``; a library caller (``promoter_client`` in an Airflow task) gets
:class:`InvalidSettingsError` saying the same (:func:`from_environment`).
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import SecretBytes, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsError

from runtime.logging import configure_logging, get_logger, names_a_secret
from runtime.settings import LogSettings
from runtime.settings_env import alias_names, env_name, environ_value

EXIT_INVALID_SETTINGS = 2
"""A service's exit status for a bad setting (argparse's for a bad argument: the operator's to fix)."""
_SETTING_SECRET_PARTS = ("key", "sasl", "credential")
"""A setting named so holds a secret, beyond the names log redaction knows (``runtime.logging.names_a_secret``):
a setting's ``*key*`` is a key file or an API key, where a log line's ``partition_key`` is not."""
_SETTINGS_ERROR_FIELD = re.compile(r'field "([^"]+)"')
SettingsT = TypeVar("SettingsT", bound=BaseSettings)


@dataclass(frozen=True, slots=True)
class InvalidSetting:
    """One environment variable with a value its setting refuses (or a required one that is not set)."""

    variable: str
    problem: str
    value: str | None = None
    """What was given; None for a secret (never repeated) or a variable that is not set."""

    def fields(self) -> dict[str, str]:
        """The log line's fields."""
        shown = {"variable": self.variable, "problem": self.problem}
        return shown if self.value is None else {**shown, "value": self.value}

    def __str__(self) -> str:
        given = "" if self.value is None else f" (given {self.value!r})"
        return f"{self.variable}: {self.problem}{given}"


def _names_a_secret(annotation: object) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(_names_a_secret(arg) for arg in typing.get_args(annotation))


def is_secret(cls: type[BaseSettings], field_name: str) -> bool:
    """True when the field's value must never be repeated: a secret type, or a name (or alias) that says so."""
    name = " ".join([field_name, *alias_names(cls.model_fields[field_name].validation_alias)]).lower()
    annotation = cls.model_fields[field_name].annotation
    return _names_a_secret(annotation) or names_a_secret(name) or any(part in name for part in _SETTING_SECRET_PARTS)


def _field_of(cls: type[BaseSettings], key: object) -> str | None:
    """The field an error's first location names (pydantic names a field by its alias when it has one)."""
    for name, field in cls.model_fields.items():
        if key == name or key in alias_names(field.validation_alias) or key == field.alias:
            return name
    return None


def _value_given(cls: type[BaseSettings], field_name: str, error: dict[str, Any]) -> str | None:
    if is_secret(cls, field_name) or error.get("type") == "missing":
        return None
    raw = environ_value(cls, env_name(cls, field_name))
    if raw is not None:
        return raw
    given = error.get("input")
    return given if isinstance(given, str) else None


def _problem(error: dict[str, Any]) -> str:
    inner = ".".join(str(part) for part in error.get("loc", ())[1:])
    if error.get("type") == "missing":
        message = "required, but not set"
    else:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{inner}: {message}" if inner else message


def problems_of(cls: type[BaseSettings], error: ValidationError | SettingsError) -> list[InvalidSetting]:
    """One :class:`InvalidSetting` per variable ``error`` (raised by ``cls()``) is about, in pydantic's order."""
    if isinstance(error, SettingsError):  # a complex value (JSON) that does not even parse
        return [_unparsed(cls, error)]
    by_variable: dict[str, InvalidSetting] = {}
    for details in error.errors():
        loc = details.get("loc", ())
        field_name = _field_of(cls, loc[0]) if loc else None
        if field_name is None:  # about the settings as a whole (a model validator): its message names them
            variable, value = _all_of(cls), None
        else:
            variable, value = env_name(cls, field_name), _value_given(cls, field_name, dict(details))
        problem = _problem(dict(details))
        earlier = by_variable.get(variable)
        if earlier is not None:
            problem = f"{earlier.problem}; {problem}"
        by_variable[variable] = InvalidSetting(variable, problem, value)
    return list(by_variable.values())


def _unparsed(cls: type[BaseSettings], error: SettingsError) -> InvalidSetting:
    match = _SETTINGS_ERROR_FIELD.search(str(error))
    if match is None or match.group(1) not in cls.model_fields:
        return InvalidSetting(_all_of(cls), str(error))
    field_name = match.group(1)
    cause = error.__cause__
    problem = f"not valid JSON: {cause}" if isinstance(cause, json.JSONDecodeError) else str(cause or error)
    value = None if is_secret(cls, field_name) else environ_value(cls, env_name(cls, field_name))
    return InvalidSetting(env_name(cls, field_name), problem, value)


def _all_of(cls: type[BaseSettings]) -> str:
    """How an error about the settings as a whole (a model validator's, naming the variables) is filed."""
    return f"{cls.model_config.get('env_prefix', '')}*".upper()


def invalid_settings(classes: Iterable[type[BaseSettings]]) -> list[InvalidSetting]:
    """Every bad variable of these settings classes, each class read from the environment once more."""
    problems: list[InvalidSetting] = []
    for cls in classes:
        try:
            cls()
        except (ValidationError, SettingsError) as error:
            problems.extend(problems_of(cls, error))
    return problems


class InvalidSettingsError(ValueError):
    """Settings whose environment variables hold values they refuse; the message names every such variable."""

    def __init__(self, problems: Sequence[InvalidSetting]) -> None:
        self.problems = list(problems)
        super().__init__("invalid settings: " + "; ".join(str(problem) for problem in self.problems))


def from_environment(cls: type[SettingsT]) -> SettingsT:
    """``cls()`` read from the environment, or :class:`InvalidSettingsError` naming each bad variable (not
    pydantic's field names: what a DAG author reads in a task's log and sets)."""
    try:
        return cls()
    except (ValidationError, SettingsError) as error:
        raise InvalidSettingsError(problems_of(cls, error)) from None


def settings_class_of(error: ValidationError) -> type[BaseSettings] | None:
    """The settings class a ValidationError is about (pydantic titles it with the class name), if it is one."""
    pending: list[type[BaseSettings]] = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls.__name__ == error.title:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def exit_if_invalid(service: str, classes: Sequence[type[BaseSettings]]) -> None:
    """Log one ``"invalid setting"`` error line per bad variable of ``classes`` on stderr and exit 2; return
    when they are all valid (the error at hand was not about them)."""
    problems = invalid_settings(classes)
    if not problems:
        return
    try:
        log_settings = LogSettings()
    except (ValidationError, SettingsError):  # the lines must get out, in the default format (JSON)
        log_settings = LogSettings.model_construct()
    configure_logging(service, log_settings)
    log = get_logger(__name__)
    for problem in problems:
        log.error("invalid setting", **problem.fields())
    raise SystemExit(EXIT_INVALID_SETTINGS)
