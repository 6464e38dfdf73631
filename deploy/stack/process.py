"""One managed service process: start it in its own process group, wait until it is ready, tear it down.

Waiting is always "poll a condition every ~50 ms until a deadline": nothing sleeps a fixed time.
Every service starts a new session (``start_new_session=True``), so its process group holds the
workers and stubs it spawns, and teardown signals the whole group: SIGTERM, then SIGKILL.
Process facts come straight from ``/proc`` (Linux, like the stack's binaries): psutil gave the
same answers at the same speed in as many lines, plus a compiled dependency (issue 11).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.stack.errors import StackError

POLL_INTERVAL_S = 0.05
TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024


def poll_until(condition: Callable[[], bool], timeout_s: float | None, interval_s: float = POLL_INTERVAL_S) -> bool:
    """Call ``condition`` every ``interval_s`` until it is true (-> True) or ``timeout_s`` passed (-> False).

    ``timeout_s=None`` waits without a deadline. The only place the stack waits on time.
    """
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval_s, remaining))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``, from ``/proc``.

    The kernel is asked each pid's group (a system call) and only members' stat files are read:
    reading every process's stat file made one call take ~20 times longer on a busy machine.
    """
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getpgid(pid) != pgid:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        if pid_alive(pid):
            members.append(pid)
    return sorted(members)


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time used so far by ``pids`` (live ones), from ``/proc``."""
    ticks = 0
    for pid in pids:
        stat = _stat_fields(pid)
        if stat is not None:
            ticks += int(stat[11]) + int(stat[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def command_line(pid: int) -> str | None:
    """The process's arguments joined by spaces; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None


def child_pid(parent: int, matches: Callable[[str], bool]) -> int | None:
    """The first child process of ``parent`` whose command line (arguments joined by spaces) ``matches``."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        command = command_line(int(child))
        if command is not None and matches(command):
            return int(child)
    return None


_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_TCP_LISTEN = "0A"


def listening_socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on TCP ``port`` (any address), from ``/proc/net/tcp`` and ``tcp6``."""
    inodes: set[str] = set()
    for table in _TCP_TABLES:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            # "sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ..."
            columns = row.split()
            if columns[3] == _TCP_LISTEN and int(columns[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(columns[9])
    return inodes


def socket_inodes(pids: Iterable[int]) -> set[str]:
    """Inodes of the sockets ``pids`` have open (their ``/proc/<pid>/fd`` links ``socket:[inode]``)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    return inodes


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    stat = _stat_fields(pid)
    return stat is not None and stat[0] != "Z"


_PR_SET_PDEATHSIG = 1
_PARENT_DEATH_SIGNAL = signal.SIGTERM  # what a service gets when the process that started it dies


def _terminate_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the process that started it dies (even by SIGKILL)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, _PARENT_DEATH_SIGNAL)


def launch_argv(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> tuple[list[str], Callable[[], None] | None]:
    """``argv`` as started, and what runs in the child before exec: the service is SIGTERMed when the process
    that started it dies (even by SIGKILL), set by util-linux's ``setpriv`` (it execs ``argv``: same pid).

    With ``setpriv`` nothing of Python runs in the child: with a ``preexec_fn`` the child ran the at-fork
    handlers libraries registered in this process, and gRPC's (a test process holds channels) wrote
    "Epoll1Poller ... epoll_wait error: Bad file descriptor" into the service's log before its exec.
    Where ``setpriv`` is missing, the ``prctl`` runs as a ``preexec_fn`` (Linux) or not at all.
    """
    if sys.platform != "linux":
        return list(argv), None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return list(argv), _terminate_with_parent
    program = argv[0]
    if os.sep in program and not os.path.isabs(program):  # as Popen finds it: from the service's directory
        program = os.path.join(cwd, program)
    executable = shutil.which(program, path=env.get("PATH", os.defpath))
    if executable is None:  # refused here, as Popen refused it before: setpriv would only exit 127
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", argv[0])
    return [setpriv, "--pdeathsig", _PARENT_DEATH_SIGNAL.name, "--", executable, *argv[1:]], None


ReadyCheck = Callable[["ManagedProcess"], bool]
LeftoverFinder = Callable[[Sequence[int]], list[Path]]


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    ready: ReadyCheck
    ready_timeout_s: float
    stop_timeout_s: float = 15.0
    # Called with the group's pids just before a SIGKILL: files they leave behind, removed afterwards.
    leftovers_after_kill: LeftoverFinder | None = None
    endpoints: Mapping[str, str] = field(default_factory=dict)
    # TCP ports the service's own process group must be listening on before ``ready`` counts: a probe
    # answered by another program that took the port (a test in another pytest process) is not ours.
    ports: Sequence[int] = ()


_STARTED: list[ManagedProcess] = []


def started_processes() -> list[ManagedProcess]:
    """Every process this interpreter started through :class:`ManagedProcess`."""
    return list(_STARTED)


def surviving_processes() -> dict[str, list[int]]:
    """Service name -> pids still alive in the process groups this interpreter started."""
    alive: dict[str, list[int]] = {}
    for process in _STARTED:
        members = process.group_pids()
        if members:
            alive.setdefault(process.name, []).extend(members)
    return alive


class ManagedProcess:
    """A service running in its own process group with stdout+stderr in ``log_path``."""

    def __init__(self, spec: ServiceSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._leftover_files: list[Path] = []
        self.killed = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._popen.pid

    @property
    def pgid(self) -> int:
        # start_new_session makes the child a session and group leader: pgid == pid.
        return self.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                argv, before_exec = launch_argv(self.spec.argv, self.spec.env, self.spec.cwd)
                self._popen = subprocess.Popen(
                    argv,
                    env=dict(self.spec.env),
                    cwd=self.spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=before_exec,  # noqa: PLW1509 - None wherever setpriv sets the parent-death signal
                )
            except OSError as error:
                raise StackError(f"{self.name} could not start: {error}") from error
        _STARTED.append(self)

    def returncode(self) -> int | None:
        """The leader's exit code once it has exited (reaping it), else None."""
        return None if self._popen is None else self._popen.poll()

    def alive(self) -> bool:
        return self._popen is not None and self.returncode() is None

    def group_pids(self) -> list[int]:
        if self._popen is None:
            return []
        self.returncode()  # reap the leader so it does not linger as a zombie
        return group_members(self.pgid)

    def gone(self) -> bool:
        """True once the leader has exited and no process of its group is left."""
        return not self.alive() and not self.group_pids()

    def log_text(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(0, size - _TAIL_BYTES))
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def is_ready(self) -> bool:
        """Alive, answering, and listening on its ``ports`` itself; :class:`StackError` if it has exited."""
        if not self.alive():
            raise StackError(f"{self.name} exited (code {self.returncode()}): {self.tail()}")
        return self.spec.ready(self) and self.listens_on(self.spec.ports)

    def listens_on(self, ports: Sequence[int]) -> bool:
        """True when this process group holds a listening socket on every one of ``ports``."""
        if not ports:
            return True
        held = socket_inodes(self.group_pids())
        return all(listening_socket_inodes(port) & held for port in ports)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def terminate(self) -> None:
        if self._popen is not None and not self.gone():
            self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        if self._popen is None or self.gone():
            return
        if not self.killed and self.spec.leftovers_after_kill is not None:
            # Read before the kill: once the group is gone nobody can tell whose files they were.
            self._leftover_files = self.spec.leftovers_after_kill(self.group_pids())
        self.killed = True
        self._signal_group(signal.SIGKILL)

    def remove_leftovers(self) -> list[Path]:
        """Delete the files a SIGKILLed group left behind (call once it is gone)."""
        removed: list[Path] = []
        for path in self._leftover_files:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
        self._leftover_files = []
        return removed


def wait_all_ready(processes: Iterable[ManagedProcess], started_at: float | None = None) -> None:
    """Wait until every process is ready, each within its own ``ready_timeout_s``.

    Polls all of them in one loop, so a service that dies is reported as soon as it dies.
    """
    origin = time.monotonic() if started_at is None else started_at
    pending = list(processes)

    def all_ready() -> bool:
        for process in list(pending):
            if process.is_ready():
                pending.remove(process)
            elif time.monotonic() - origin > process.spec.ready_timeout_s:
                raise StackError(
                    f"{process.name} did not become ready within {process.spec.ready_timeout_s:g} s: {process.tail()}"
                )
        return not pending

    poll_until(all_ready, None)


def stop_all(processes: Iterable[ManagedProcess]) -> None:
    """SIGTERM every group, wait for all of them, SIGKILL what is left after its ``stop_timeout_s``."""
    running = [process for process in processes if not process.gone()]
    for process in running:
        process.terminate()
    started = time.monotonic()

    def settled() -> bool:
        for process in running:
            if not process.gone() and time.monotonic() - started > process.spec.stop_timeout_s:
                process.kill()
        return all(process.gone() for process in running)

    kill_grace_s = 10.0
    limit = max((process.spec.stop_timeout_s for process in running), default=0.0) + kill_grace_s
    finished = poll_until(settled, limit)
    for process in running:
        if process.gone():
            process.remove_leftovers()
    if not finished:
        survivors = {process.name: process.group_pids() for process in running if not process.gone()}
        raise StackError(f"processes survived SIGKILL: {survivors}")
