"""A promotion's download started as soon as its version is known: once, only when needed, cleaned up after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from worker.early_download import EarlyDownload
from worker.errors import TransientFailure


class FakeRegistry:
    """Downloads one file per call; ``gate`` holds every download until it is set; ``failure`` fails them."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.downloads: list[tuple[str, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure = failure

    async def download(self, name: str, version: int, destination: Path) -> Path:
        self.downloads.append((name, version))
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        (destination / "MLmodel").write_text(f"{name} v{version}")
        return destination


def early(registry: FakeRegistry, tmp_path: Path, *, staged: set[int] | None = None) -> EarlyDownload:
    return EarlyDownload(
        registry,  # type: ignore[arg-type]
        "iris",
        tmp_path / "downloads",
        wanted=lambda version: version not in (staged or set()),
    )


async def test_a_download_starts_once_and_its_directory_goes_when_the_promotion_ends(tmp_path: Path) -> None:
    registry = FakeRegistry()
    async with early(registry, tmp_path) as download:
        download.start(3)
        download.start(3)  # the alias request's version read, after the pinned start
        model_dir = await download.model_dir(3)
        assert (model_dir / "MLmodel").read_text() == "iris v3"
    assert registry.downloads == [("iris", 3)]
    assert list((tmp_path / "downloads").iterdir()) == []


async def test_a_staged_version_is_not_downloaded_early_but_is_when_it_must_be_staged_again(tmp_path: Path) -> None:
    registry = FakeRegistry()
    async with early(registry, tmp_path, staged={3}) as download:
        download.start(3)
        assert registry.downloads == []
        assert (await download.model_dir(3)).is_dir()  # its staged directory was not what was staged
    assert registry.downloads == [("iris", 3)]


async def test_an_unused_download_is_waited_out_its_failure_dropped_and_its_directory_removed(tmp_path: Path) -> None:
    registry = FakeRegistry(failure=TransientFailure("MLflow down"))
    registry.gate.clear()

    async def refused_by_policy() -> None:
        async with early(registry, tmp_path) as download:
            download.start(5)
            asyncio.get_running_loop().call_soon(registry.gate.set)  # the download ends after the refusal
            raise RuntimeError("refused by policy")

    with pytest.raises(RuntimeError, match="refused by policy"):
        await refused_by_policy()
    assert registry.downloads == [("iris", 5)]
    assert list((tmp_path / "downloads").iterdir()) == []


async def test_asking_for_another_version_than_the_one_downloading_is_a_bug(tmp_path: Path) -> None:
    async with early(FakeRegistry(), tmp_path) as download:
        download.start(3)
        with pytest.raises(RuntimeError, match="downloaded v3, v4 asked for"):
            await download.model_dir(4)
