"""Pydantic validation errors as ``field: message`` lines, the one way every package reports bad input.

A field is the dotted path pydantic reports (``data.version``), behind the caller's ``prefix``
(the ingress validates a webhook's ``data`` object on its own, so it prefixes ``data``); an error
about the whole input, with no path, is named ``root`` (``(event)``, ``body``, ``input``).
pydantic's ``Value error, `` prefix of messages raised by validators is dropped: it tells a reader
nothing. Callers pass ``error.errors()`` of a pydantic ``ValidationError`` or of FastAPI's
``RequestValidationError`` (same shape).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid field: its dotted path and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def field_problems(errors: Iterable[Mapping[str, Any]], *, root: str, prefix: str = "") -> list[FieldProblem]:
    """One :class:`FieldProblem` per pydantic error, in pydantic's order."""
    problems: list[FieldProblem] = []
    for error in errors:
        path = [prefix] if prefix else []
        path.extend(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(FieldProblem(".".join(path) or root, message))
    return problems


def describe(problems: Sequence[FieldProblem], *, limit: int | None = None) -> str:
    """``field: message`` joined with ``; `` (past ``limit`` problems: ``; and N more``)."""
    shown = problems if limit is None else problems[:limit]
    text = "; ".join(str(problem) for problem in shown)
    if len(problems) > len(shown):
        text += f"; and {len(problems) - len(shown)} more"
    return text
