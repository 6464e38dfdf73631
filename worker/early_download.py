"""A promotion's artifact download, started as soon as the version number is known.

A pinned request names its version, and an alias request learns it from the registry's first
answer: from then on the download (where the artifacts are stored, their listing, the files) runs
beside the rest of the resolve and the policy check instead of after them, which took one to three
MLflow round trips off a cold promotion's path. Nothing is downloaded for a version this worker has
staged already (a reuse, or what is served already). A download the promotion does not use in the
end (the resolve or the policy refused it) is waited out and its scratch directory removed: the
thread downloading into it cannot be stopped half-way.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from worker.registry import Registry


class EarlyDownload:
    """One promotion's download of ``model_name``: started once, by :meth:`start`, used by :meth:`model_dir`."""

    def __init__(
        self, registry: Registry, model_name: str, download_dir: Path, *, wanted: Callable[[int], bool]
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        self.download_dir = download_dir
        self.wanted = wanted  # False for a version that needs no download (staged already)
        self._version: int | None = None
        self._scratch: Path | None = None
        self._task: asyncio.Task[Path] | None = None

    def start(self, version: int) -> None:
        """Start downloading ``version`` unless a download was started already or it needs none."""
        if self._task is None and self.wanted(version):
            self._begin(version)

    def _begin(self, version: int) -> None:
        self.download_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{self.model_name}-v{version}-", dir=self.download_dir))
        self._version, self._scratch = version, scratch
        self._task = asyncio.create_task(self.registry.download(self.model_name, version, scratch))

    async def model_dir(self, version: int) -> Path:
        """The downloaded model directory of ``version`` (waits for the download, starting it if need be).

        Started here whatever ``wanted`` says: a version known as staged whose directory is not what was
        staged is downloaded and staged again.
        """
        if self._task is None:
            self._begin(version)
        if self._task is None or self._version != version:
            raise RuntimeError(f"{self.model_name}: downloaded v{self._version}, v{version} asked for")
        return await self._task

    async def __aenter__(self) -> EarlyDownload:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._task is not None:
            await asyncio.wait([self._task])  # its thread cannot be stopped: the directory goes after it
            if not self._task.cancelled():
                self._task.exception()  # retrieved: a download nobody used fails nothing
        if self._scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self._scratch, True)
