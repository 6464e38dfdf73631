"""pydantic's errors as ``field: message``: each caller's prefix and root, validator noise dropped."""

from __future__ import annotations

from typing import Self

import pytest
from pydantic import BaseModel, ValidationError, model_validator

from schemas.field_problems import describe, field_problems


class Weights(BaseModel):
    champion: int
    challenger: int

    @model_validator(mode="after")
    def _sum(self) -> Self:
        if self.champion + self.challenger != 100:
            raise ValueError(f"must sum to 100, got {self.champion + self.challenger}")
        return self


def errors(document: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Weights.model_validate(document)
    return caught.value


def test_fields_are_dotted_paths_behind_the_prefix() -> None:
    problems = field_problems(errors({"champion": "x"}).errors(), root="body", prefix="data")
    assert [str(p) for p in problems] == [
        "data.champion: Input should be a valid integer, unable to parse string as an integer",
        "data.challenger: Field required",
    ]


def test_an_error_about_the_whole_input_is_named_root_without_pydantics_value_error_prefix() -> None:
    (problem,) = field_problems(errors({"champion": 90, "challenger": 20}).errors(), root="input")
    assert (problem.field, problem.message) == ("input", "must sum to 100, got 110")


def test_describe_joins_and_cuts_after_the_limit() -> None:
    problems = field_problems(errors({}).errors(), root="(event)")
    assert describe(problems) == "champion: Field required; challenger: Field required"
    assert describe(problems, limit=1) == "champion: Field required; and 1 more"
