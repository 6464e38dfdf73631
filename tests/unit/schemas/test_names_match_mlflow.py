"""Our identifier rules accept exactly what MLflow's own validators accept."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.utils import validation as mlflow_validation

from schemas.names import check_alias, check_model_name


def _accepts(check: Callable[[str], object], value: str) -> bool:
    try:
        check(value)
    except (ValueError, MlflowException):
        return False
    return True


def _mlflow_accepts_alias(alias: str) -> bool:
    return _accepts(mlflow_validation._validate_model_alias_name, alias) and _accepts(
        mlflow_validation._validate_model_alias_name_reserved, alias
    )


names = st.text(alphabet=st.sampled_from("ab-_./: \t\nZ9é"), max_size=8)


@settings(max_examples=1000)
@given(names)
@example("latest")
@example("LATEST")
@example("v12")
@example("V1")
@example("v1a")
@example("champion")
@example("é")
@example("\n")
@example("champion\n")
def test_alias_rules_match_mlflow(alias: str) -> None:
    if alias.endswith("\n"):
        # MLflow's regex ends in `$`, which matches before a trailing newline; we refuse those.
        assert not _accepts(check_alias, alias)
    else:
        assert _accepts(check_alias, alias) == _mlflow_accepts_alias(alias)


@settings(max_examples=1000)
@given(names)
@example("..")
@example(".")
@example("a/../b")
@example("./a")
@example("iris-clf")
@example(" padded ")
def test_model_name_rules_match_mlflow(name: str) -> None:
    assert _accepts(check_model_name, name) == _accepts(mlflow_validation._validate_model_name, name)


@pytest.mark.parametrize("name", ["iris-clf", "Fraud Model 2", "team.model_v2", "ünïcode"])
def test_realistic_model_names_are_accepted(name: str) -> None:
    assert check_model_name(name) == name
