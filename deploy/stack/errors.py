"""The one error type of the local stack: its message is meant for people, shown without a traceback."""

from __future__ import annotations


class StackError(Exception):
    """A stack that cannot start or keep running; ``str(error)`` says why and what to do."""
