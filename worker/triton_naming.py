"""One immutable Triton model per MLflow (registered name, version), named deterministically.

MLflow names allow almost anything (spaces, Unicode, dots); Triton model names are directory
names in the model repository. The name keeps a readable slug of the registered name and adds a
short hash of the exact name, so two names with the same slug never collide:
``"Fraud Model", 3 -> "fraud-model--1f0c2a9b--v3"``.
"""

from __future__ import annotations

import hashlib
import re

from schemas.names import check_model_name

_SLUG_UNSAFE = re.compile(r"[^a-z0-9_-]+")
MAX_SLUG_LENGTH = 48
_NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,48}--[0-9a-f]{8}--v[1-9][0-9]*\Z")


def triton_model_name(registered_name: str, version: int) -> str:
    """The Triton model name of ``registered_name`` version ``version``."""
    check_model_name(registered_name)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    slug = _SLUG_UNSAFE.sub("-", registered_name.lower()).strip("-")[:MAX_SLUG_LENGTH] or "model"
    digest = hashlib.sha256(registered_name.encode()).hexdigest()[:8]
    return f"{slug}--{digest}--v{version}"


def is_triton_model_name(name: str) -> bool:
    """True for names :func:`triton_model_name` can produce (used to recognise our own models)."""
    return bool(_NAME_PATTERN.match(name))
