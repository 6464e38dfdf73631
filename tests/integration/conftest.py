"""Fixtures shared by the worker's integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.stack.local_stack import LocalStack
from tests.worker_harness import WorkerHandle, running_worker


@pytest.fixture(scope="module")
def worker(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerHandle]:
    """A ``promoter-worker`` process on its own topics, shared by the tests of one module."""
    with running_worker(local_stack, tmp_path_factory.mktemp("worker")) as handle:
        yield handle
