"""The blocking promotion client has the async one's parameters, spelled out (what DAG authors and mypy see)."""

from __future__ import annotations

import inspect

from promoter_client.promotion import request_promotion, request_promotion_async


def test_the_blocking_client_takes_exactly_the_async_clients_parameters() -> None:
    blocking = inspect.signature(request_promotion, eval_str=True)
    awaited = inspect.signature(request_promotion_async, eval_str=True)

    assert list(blocking.parameters.values()) == list(awaited.parameters.values())
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in blocking.parameters.values())
    assert blocking.return_annotation == awaited.return_annotation
