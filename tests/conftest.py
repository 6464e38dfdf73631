"""Session-wide fixtures. ``local_stack`` starts the real stack once, for integration tests only."""

from __future__ import annotations

import signal
from collections.abc import Generator, Iterator
from types import FrameType

import pytest

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import started_processes, stop_all, surviving_processes


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # A SIGTERMed session then unwinds like Ctrl-C: fixture teardown stops the stack.
    raise KeyboardInterrupt


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """tansu + mlflow server + tritonserver on 127.0.0.1, shared by the whole session."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    stack = LocalStack(tmp_path_factory.mktemp("stack"))
    try:
        stack.start()
        print(f"\nlocal stack ready in {stack.startup_s:.1f} s: {stack.info()}")
        yield stack
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
    """After every fixture is torn down: fail the run if a process the stack started is still alive."""
    result = yield
    survivors = surviving_processes()
    if survivors:
        stop_all(started_processes())
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"processes started by the local stack survived teardown: {survivors}"
        if reporter is not None:
            reporter.write_line(f"ERROR: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result
