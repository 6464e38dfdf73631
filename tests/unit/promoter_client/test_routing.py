"""A routing change keeps what it does not name: weights, shadow and share come from the current policy."""

from __future__ import annotations

import pytest

from promoter_client.routing import RoutingChange, RoutingChangeError
from schemas.routing_updated import RoutingUpdatedData

AB = {"champion": 90, "challenger": 10}


def policy(shadow: str | None = None, share: float = 0.0) -> RoutingUpdatedData:
    return RoutingUpdatedData(
        model_name="iris", weights=AB, shadow_alias=shadow, shadow_sample_percent=share, generation=7
    )


def test_setting_a_shadow_keeps_the_weights() -> None:
    change = RoutingChange(shadow_alias="candidate", shadow_sample_percent=5)

    assert not change.replaces_everything
    assert change.applied_to("iris", policy()) == (AB, "candidate", 5)


def test_a_new_shadow_keeps_the_share_of_the_old_one_and_weights_keep_the_shadow() -> None:
    assert RoutingChange(shadow_alias="other").applied_to("iris", policy("candidate", 5)) == (AB, "other", 5)
    assert RoutingChange(shadow_sample_percent=20).applied_to("iris", policy("candidate", 5)) == (AB, "candidate", 20)
    assert RoutingChange(weights={"champion": 100}).applied_to("iris", policy("candidate", 5)) == (
        {"champion": 100},
        "candidate",
        5,
    )


def test_clearing_the_shadow_keeps_the_weights() -> None:
    assert RoutingChange(clear_shadow=True).applied_to("iris", policy("candidate", 5)) == (AB, None, 0.0)


def test_a_complete_change_needs_no_current_policy() -> None:
    change = RoutingChange(weights={"champion": 100}, clear_shadow=True)

    assert change.replaces_everything
    assert change.applied_to("iris", None) == ({"champion": 100}, None, 0.0)


@pytest.mark.parametrize(
    ("change", "current", "words"),
    [
        (RoutingChange(shadow_alias="candidate", shadow_sample_percent=5), None, "weights: iris has no routing policy"),
        (RoutingChange(shadow_alias="candidate"), policy(), "shadow_sample_percent: give the share"),
        (RoutingChange(shadow_sample_percent=5), policy(), "shadow_alias: iris has no shadow"),
    ],
)
def test_what_cannot_be_kept_is_asked_for(
    change: RoutingChange, current: RoutingUpdatedData | None, words: str
) -> None:
    with pytest.raises(RoutingChangeError, match=words):
        change.applied_to("iris", current)


def test_contradictions_and_empty_changes_are_refused_up_front() -> None:
    with pytest.raises(RoutingChangeError, match="exclusive"):
        RoutingChange(shadow_alias="candidate", clear_shadow=True)
    with pytest.raises(RoutingChangeError, match="nothing to change"):
        RoutingChange()
