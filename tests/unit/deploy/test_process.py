"""Unit tests of the managed-process layer with tiny Python children (never the stack's services)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deploy.stack.errors import StackError
from deploy.stack.process import (
    ManagedProcess,
    ServiceSpec,
    group_members,
    pid_alive,
    poll_until,
    stop_all,
    wait_all_ready,
)


def _spec(
    tmp_path: Path,
    code: str,
    *,
    ready_file: str = "ready",
    ready_timeout_s: float = 10.0,
    stop_s: float = 5.0,
) -> ServiceSpec:
    return ServiceSpec(
        name="child",
        argv=[sys.executable, "-c", textwrap.dedent(code)],
        env=dict(os.environ),
        cwd=tmp_path,
        ready=lambda process: (tmp_path / ready_file).exists(),
        ready_timeout_s=ready_timeout_s,
        stop_timeout_s=stop_s,
    )


# A parent and a grandchild, both ignoring SIGTERM and both in the service's group.
STUBBORN = """
    import pathlib, signal, subprocess, sys, threading
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, threading; signal.signal(signal.SIGTERM, signal.SIG_IGN); threading.Event().wait()"])
    print("child", child.pid, flush=True)
    pathlib.Path("ready").touch()
    threading.Event().wait()
"""

POLITE = """
    import pathlib, subprocess, sys, threading
    child = subprocess.Popen([sys.executable, "-c", "import threading; threading.Event().wait()"])
    pathlib.Path("ready").touch()
    threading.Event().wait()
"""


def test_poll_until_returns_true_as_soon_as_the_condition_holds() -> None:
    calls: list[int] = []

    def third_call() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert poll_until(third_call, 5, interval_s=0.01)
    assert len(calls) == 3


def test_poll_until_gives_up_at_the_deadline() -> None:
    began = time.monotonic()
    assert not poll_until(lambda: False, 0.2, interval_s=0.05)
    assert 0.19 <= time.monotonic() - began < 2


def test_ready_then_sigterm_stops_the_whole_group(tmp_path: Path) -> None:
    process = ManagedProcess(_spec(tmp_path, POLITE), tmp_path / "logs" / "child.log")
    process.start()
    try:
        wait_all_ready([process])
        assert poll_until(lambda: len(process.group_pids()) == 2, 5)
    finally:
        stop_all([process])
    assert process.gone()
    assert not process.killed
    assert group_members(process.pgid) == []


def test_sigkill_after_the_stop_deadline_and_leftovers_are_removed(tmp_path: Path) -> None:
    leftover = tmp_path / "shm-region"
    leftover.write_text("x")
    seen: list[list[int]] = []

    def leftovers(pids: list[int]) -> list[Path]:
        seen.append(list(pids))
        return [leftover]

    spec = _spec(tmp_path, STUBBORN, stop_s=0.3)
    spec = ServiceSpec(**{**spec.__dict__, "leftovers_after_kill": leftovers})
    process = ManagedProcess(spec, tmp_path / "child.log")
    process.start()
    try:
        wait_all_ready([process])
        assert poll_until(lambda: len(process.group_pids()) == 2, 5)
        members = process.group_pids()
    finally:
        stop_all([process])
    assert process.killed
    assert seen == [members]
    assert not leftover.exists()
    assert not any(pid_alive(pid) for pid in members)


def test_a_child_that_exits_is_reported_with_its_last_log_lines(tmp_path: Path) -> None:
    process = ManagedProcess(
        _spec(tmp_path, "import sys; print('line one'); print('bad config', flush=True); sys.exit(3)"),
        tmp_path / "child.log",
    )
    process.start()
    with pytest.raises(StackError, match=r"child exited \(code 3\): line one\nbad config"):
        wait_all_ready([process])
    stop_all([process])


def test_a_child_that_never_gets_ready_times_out_with_its_log(tmp_path: Path) -> None:
    code = "import threading; print('still booting', flush=True); threading.Event().wait()"
    process = ManagedProcess(_spec(tmp_path, code, ready_timeout_s=0.5), tmp_path / "child.log")
    process.start()
    try:
        with pytest.raises(StackError, match=r"did not become ready within 0.5 s: still booting"):
            wait_all_ready([process])
    finally:
        stop_all([process])
    assert process.gone()


_FORK_MARKER: list[Path] = []  # read in the forked child: only this test's starts leave a marker


def _mark_fork_in_child() -> None:
    for marker in _FORK_MARKER:
        marker.touch()


os.register_at_fork(after_in_child=_mark_fork_in_child)  # as gRPC registers its own (C-level too)


def test_no_fork_handler_of_the_starting_process_runs_in_the_service(tmp_path: Path) -> None:
    """With a ``preexec_fn`` the child ran this process's at-fork handlers before its exec: gRPC's started a
    poller there that once wrote an epoll error into a service's log. Started by ``setpriv``, none runs."""
    code = """
        import pathlib, threading
        print("booted", flush=True)
        pathlib.Path("ready").touch()
        threading.Event().wait()
    """
    process = ManagedProcess(_spec(tmp_path, code), tmp_path / "child.log")
    _FORK_MARKER.append(tmp_path / "a fork handler ran in the child")
    try:
        process.start()
    finally:
        _FORK_MARKER.clear()
    try:
        wait_all_ready([process])
    finally:
        stop_all([process])
    assert not (tmp_path / "a fork handler ran in the child").exists()
    assert process.log_text() == "booted\n"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_service_carries_sigterm_as_its_parent_death_signal(tmp_path: Path) -> None:
    """What stops it when the process that started it dies, even by SIGKILL (tests/integration/deploy/test_cli.py)."""
    code = """
        import ctypes, pathlib, threading
        signal = ctypes.c_int()
        ctypes.CDLL(None).prctl(2, ctypes.byref(signal))  # PR_GET_PDEATHSIG
        pathlib.Path("ready").write_text(str(signal.value))
        threading.Event().wait()
    """
    process = ManagedProcess(_spec(tmp_path, code), tmp_path / "child.log")
    process.start()
    try:
        wait_all_ready([process])
    finally:
        stop_all([process])
    assert (tmp_path / "ready").read_text() == str(int(signal.SIGTERM))


def test_a_missing_executable_is_a_stack_error(tmp_path: Path) -> None:
    spec = ServiceSpec(
        name="ghost",
        argv=[str(tmp_path / "no-such-binary")],
        env={},
        cwd=tmp_path,
        ready=lambda process: True,
        ready_timeout_s=1,
    )
    with pytest.raises(StackError, match="ghost could not start"):
        ManagedProcess(spec, tmp_path / "ghost.log").start()


def test_a_relative_executable_is_found_from_the_services_directory(tmp_path: Path) -> None:
    """``./run`` names a file in the service's ``cwd``, as Popen resolves it, not in the starting process's."""
    service_dir = tmp_path / "service"
    service_dir.mkdir()
    script = service_dir / "run"
    body = "import pathlib, threading\npathlib.Path('ready').touch()\nthreading.Event().wait()\n"
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(0o755)
    spec = ServiceSpec(
        name="relative",
        argv=["./run"],
        env=dict(os.environ),
        cwd=service_dir,
        ready=lambda process: (service_dir / "ready").exists(),
        ready_timeout_s=30,
    )
    process = ManagedProcess(spec, tmp_path / "relative.log")
    process.start()
    try:
        wait_all_ready([process])
    finally:
        stop_all([process])
    assert (service_dir / "ready").exists()
