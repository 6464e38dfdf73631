"""A service of a running system that may be killed, stopped and started again, as a restarted pod would be.

Started again from the same :class:`ServiceSpec`: the same ports, the same data directory, the same log
file (appended). Used by the fault suite (``make chaos``) and the tests that kill a Kafka node; the
handles of a :class:`~deploy.stack.local_stack.LocalStack`'s services come from
:meth:`LocalStack.service <deploy.stack.local_stack.LocalStack.service>`, which keeps its stop and pids file
on the process running now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.stack.errors import StackError
from deploy.stack.process import ManagedProcess, ServiceSpec, poll_until, stop_all, wait_all_ready

KILL_DEADLINE_S = 10.0


def _nobody(old: ManagedProcess | None, new: ManagedProcess) -> None:
    return None


@dataclass
class ServiceHandle:
    """One service's spec and the process running it now; ``on_start`` hears of every new process."""

    spec: ServiceSpec
    log_path: Path
    process: ManagedProcess | None = None
    on_start: Callable[[ManagedProcess | None, ManagedProcess], None] = field(default=_nobody, repr=False)

    def start(self) -> None:
        """Start the process and wait until it is ready (:class:`StackError` at its deadline)."""
        wait_all_ready([self.start_in_background()])

    def start_in_background(self) -> ManagedProcess:
        """Start the process without waiting for it to be ready (several start side by side)."""
        old, self.process = self.process, ManagedProcess(self.spec, self.log_path)
        self.process.start()
        self.on_start(old, self.process)
        return self.process

    def kill(self) -> None:
        """SIGKILL the whole process group and wait until it is gone."""
        process = self.running()
        process.kill()
        if not poll_until(process.gone, KILL_DEADLINE_S):
            raise StackError(f"{process.name} survived SIGKILL for {KILL_DEADLINE_S:g} s")
        process.remove_leftovers()

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it after the spec's ``stop_timeout_s``."""
        stop_all([self.running()])

    def running(self) -> ManagedProcess:
        if self.process is None:
            raise StackError(f"{self.spec.name} was never started")
        return self.process
