"""Which environment variable sets a setting: what help, the README and error messages name.

pydantic-settings reads a field from its alias when it has one (the ``env_prefix`` applied as
``env_prefix_target`` says), else from ``env_prefix`` + the field's name; a field with several aliases from the
first one set. One derivation here, for ``--help`` (:mod:`runtime.service_help`), the README's settings table (a
test compares them) and the "invalid setting" lines (:mod:`runtime.settings_errors`).
"""

from __future__ import annotations

import os

from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings


def alias_names(alias: str | AliasPath | AliasChoices | None) -> list[str]:
    """The environment variable names an alias stands for, in pydantic's order (a path: its first key)."""
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasPath):
        return [str(alias.path[0])]
    if isinstance(alias, AliasChoices):
        return [name for choice in alias.choices for name in alias_names(choice)]
    return []


def case_sensitive(cls: type[BaseSettings]) -> bool:
    return bool(cls.model_config.get("case_sensitive", False))


def environ_value(cls: type[BaseSettings], name: str) -> str | None:
    """The variable's value in this process's environment (as pydantic-settings reads it), or None."""
    if case_sensitive(cls):
        return os.environ.get(name)
    wanted = name.lower()
    return next((value for key, value in os.environ.items() if key.lower() == wanted), None)


def env_names(cls: type[BaseSettings], field_name: str) -> list[str]:
    """Every variable pydantic-settings reads ``field_name`` from, in its order (as it spells them)."""
    config = cls.model_config
    prefix = str(config.get("env_prefix", ""))
    target = config.get("env_prefix_target", "variable")
    by_alias = config.get("validate_by_alias") is not False
    aliases = alias_names(cls.model_fields[field_name].validation_alias) if by_alias else []
    names = [(prefix if target in ("alias", "all") else "") + alias for alias in aliases]
    if not names or config.get("validate_by_name") or config.get("populate_by_name"):
        names.append((prefix if target in ("variable", "all") else "") + field_name)
    return names


def documented_name(cls: type[BaseSettings], field_name: str) -> str:
    """The environment variable ``--help`` and the README give for ``field_name``: the first pydantic-settings
    reads (its alias when it has one, else ``env_prefix`` + its name), spelled as an operator sets it."""
    return _as_operators_spell_it(cls, env_names(cls, field_name)[0])


def env_name(cls: type[BaseSettings], field_name: str) -> str:
    """The environment variable that sets ``field_name`` of ``cls``: its alias when it has one (the prefix applied
    as ``env_prefix_target`` says), else ``env_prefix`` + its name; of several, the one that is set."""
    names = env_names(cls, field_name)
    return _as_operators_spell_it(cls, next((name for name in names if environ_value(cls, name) is not None), names[0]))


def _as_operators_spell_it(cls: type[BaseSettings], name: str) -> str:
    """Upper case, unless ``cls`` reads its environment case-sensitively (then exactly as pydantic reads it)."""
    return name if case_sensitive(cls) else name.upper()
