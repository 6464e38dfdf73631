"""A console page with bad settings names each bad variable instead of reading anything."""

from __future__ import annotations

import pytest

from tests.console_harness import console_page, texts


def test_a_page_names_every_bad_variable_and_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_CONSOLE_READ_TIMEOUT_S", "-1")
    monkeypatch.setenv("PROMOTER_KAFKA_SESSION_TIMEOUT_MS", "5")
    monkeypatch.setenv("PROMOTER_KAFKA_SASL_PASSWORD", "s3cr3t-do-not-print")

    at = console_page("serving").run()

    assert [error.value for error in at.error] == [
        "PROMOTER_CONSOLE_READ_TIMEOUT_S: Input should be greater than 0 (given '-1')",
        "PROMOTER_KAFKA_SESSION_TIMEOUT_MS: Input should be greater than or equal to 1000 (given '5')",
    ]
    assert not at.exception
    assert "s3cr3t-do-not-print" not in texts(at)
