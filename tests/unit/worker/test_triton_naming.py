from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.triton_naming import is_triton_model_name, triton_model_name


def test_names_are_readable_and_deterministic() -> None:
    name = triton_model_name("Fraud Model", 3)

    assert name.startswith("fraud-model--")
    assert name.endswith("--v3")
    assert triton_model_name("Fraud Model", 3) == name
    assert is_triton_model_name(name)


def test_names_with_the_same_slug_do_not_collide() -> None:
    names = {triton_model_name(n, 1) for n in ("Fraud Model", "fraud model", "fraud-model", "fraud_model ")}
    assert len(names) == 4


@given(st.text(min_size=1, max_size=300), st.integers(min_value=1, max_value=10**9))
def test_any_valid_mlflow_name_maps_to_a_safe_directory_name(registered: str, version: int) -> None:
    try:
        name = triton_model_name(registered, version)
    except ValueError:
        return
    assert is_triton_model_name(name)
    assert "/" not in name
    assert not name.startswith(".")


@pytest.mark.parametrize(
    ("registered", "version", "words"),
    [("a/b", 1, "must not contain '/'"), ("ok", 0, "positive integer"), ("..", 2, "resolve to the path")],
)
def test_invalid_inputs_are_refused(registered: str, version: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        triton_model_name(registered, version)
