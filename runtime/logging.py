"""Structured JSON logs with structlog: one line per event, context bound per promotion.

``configure_logging`` routes the standard library's loggers (aiokafka, uvicorn, faststream)
through the same processors, so every line a service prints is JSON. A library that gives a logger of
its own a handler and stops it propagating (FastStream does at import: a plain-text ``faststream``
logger, parent of the app's and the brokers') is taken back with :func:`through_root`. The ``promoter`` command
logs nothing unless asked (``configure_command_line_logging``). ``bind_event`` binds the
event id, model and version for everything logged inside it. Values of keys that look like
secrets are redacted before rendering.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from runtime.settings import LogSettings


def _import_structlog_without_rich() -> None:
    """Import structlog with ``rich`` out of its sight. When rich is installed (it comes with typer, for the
    ``promoter`` command), structlog imports it at its own import, for pretty console tracebacks and the reprs of
    locals in tracebacks: most of structlog's import, in every service's start (a tenth of a new gateway's CPU
    before its replay starts), for lines these JSON logs never write. Without it structlog formats tracebacks with
    the standard library's ``traceback``, as ``format_exc_info`` does for the JSON lines anyway. A process that
    imported structlog or rich before keeps them as they are."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes ``import rich`` raise ImportError
    try:
        importlib.import_module("structlog")
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402 - imported above, without rich
from structlog.typing import EventDict, Processor, WrappedLogger  # noqa: E402

_SECRET_KEY_PARTS = ("secret", "password", "token", "authorization", "signature", "api_key", "fernet")
REDACTED = "[redacted]"
SILENT = logging.CRITICAL + 1  # a root level no record reaches


@functools.lru_cache(maxsize=4096)
def names_a_secret(key: str) -> bool:
    """True when a log key looks like it holds a secret; remembered per key (a log line's keys repeat, and this
    check was a third of the cost of a gateway's "routing changed" line)."""
    lowered = key.lower()
    return any(part in lowered for part in _SECRET_KEY_PARTS)


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any key that names a secret, at any depth of dicts."""

    def scrub(mapping: MutableMapping[str, Any]) -> None:
        for key, value in mapping.items():
            if isinstance(key, str) and names_a_secret(key):
                mapping[key] = REDACTED
            elif isinstance(value, dict):
                scrub(value)

    scrub(event_dict)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def configure_logging(service: str, settings: LogSettings | None = None) -> None:
    """Configure structlog and the standard library for ``service`` (bound on every line)."""
    settings = settings or LogSettings()
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (logger.handlers or not logger.propagate):
            through_root(name)  # configured at a library's import, before this
    root.setLevel(settings.level)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def through_root(name: str) -> logging.Logger:
    """The standard library's logger ``name``, without handlers of its own and propagating: its records
    reach the root handler (:func:`configure_logging`'s JSON lines) and nothing else."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    return logger


def configure_command_line_logging(*, verbose: bool) -> None:
    """The ``promoter`` command: no log line at all (its output is what it prints), or with ``verbose``
    readable lines on stderr from our code and the libraries (level from ``PROMOTER_LOG_LEVEL``)."""
    configure_logging("promoter", LogSettings(format="console"))
    if not verbose:
        root = logging.getLogger()
        root.setLevel(SILENT)
        for handler in root.handlers:  # also for loggers with a level of their own
            handler.setLevel(SILENT)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


@contextmanager
def bind_event(
    event_id: str | None, model: str | None = None, version: int | None = None, **extra: Any
) -> Iterator[None]:
    """Bind the event's identity to every log line written inside the block (task-local)."""
    context: dict[str, Any] = {"event_id": event_id, "model": model, "version": version, **extra}
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in context.items() if v is not None}):
        yield
