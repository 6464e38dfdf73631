"""Identifier types validated by the rules the MLflow model registry itself applies.

Mirrors ``mlflow.utils.validation`` (MLflow 3.17): a registered model name is non-blank, has no
``/`` or ``:`` and does not change under path normalisation; an alias is 1-255 characters of
``[A-Za-z0-9_-]``, not ``latest`` (reserved) and not ``v<digits>`` (reserved for versions);
a version is a positive integer.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator, Field

MAX_MODEL_NAME_LENGTH = 256  # registered_models.name is VARCHAR(256) in MLflow's SQL store
MAX_ALIAS_LENGTH = 255
# MLflow's pattern (Unicode word characters), anchored with \Z: MLflow's ``$`` also lets a
# trailing newline through ("\n" alone is a valid alias there), which we refuse on purpose.
_ALIAS_PATTERN = re.compile(r"^[\w\-]+\Z")
_VERSION_ALIAS_PATTERN = re.compile(r"^[vV]\d+$")


def check_model_name(name: str) -> str:
    """Return ``name`` if MLflow would accept it as a registered model name, else raise ValueError."""
    if not name.strip():
        raise ValueError("registered model name must not be blank")
    if "/" in name or ":" in name:
        raise ValueError(f"registered model name {name!r} must not contain '/' or ':'")
    normalised = posixpath.normpath(name)
    if normalised != name or normalised == "." or normalised.startswith(".."):
        raise ValueError(f"registered model name {name!r} would resolve to the path {normalised!r}")
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if MLflow would accept it as a registered model alias, else raise ValueError."""
    if not _ALIAS_PATTERN.match(alias):
        raise ValueError(f"alias {alias!r} may only contain letters, digits, underscores (_) and dashes (-)")
    if alias.lower() == "latest":
        raise ValueError("alias 'latest' is reserved by MLflow")
    if _VERSION_ALIAS_PATTERN.match(alias):
        raise ValueError(f"alias {alias!r} is reserved by MLflow for version references")
    return alias


RegisteredModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_MODEL_NAME_LENGTH,
        description="MLflow registered model name.",
        examples=["iris-clf"],
    ),
    AfterValidator(check_model_name),
]
Alias = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ALIAS_LENGTH,
        description="MLflow registered model alias.",
        examples=["champion"],
    ),
    AfterValidator(check_alias),
]
ModelVersion = Annotated[int, Field(ge=1, description="MLflow model version number.", examples=[3])]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256.")]
NonEmptyStr = Annotated[str, Field(min_length=1, max_length=1024)]
