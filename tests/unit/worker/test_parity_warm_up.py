"""The worker's start-up warm-up leaves nothing for the first promotions to build at once."""

from __future__ import annotations

from worker.model_environment import installed_versions
from worker.parity import warm_up_model_libraries


def test_the_warm_up_reads_the_installed_versions_once() -> None:
    # Read lazily, every promotion that started while the first read ran would read them too.
    installed_versions.cache_clear()
    warm_up_model_libraries()
    assert installed_versions.cache_info().currsize == 1
    assert "scikit-learn" in installed_versions()
