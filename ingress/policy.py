"""Which MLflow registry events become promotion requests (the documented mapping policy).

- ``model_version_alias.created``: serve that alias (the worker re-reads what it points at now).
- ``model_version_alias.deleted``: stop serving that alias.
- ``model_version.created``: with ``PROMOTER_INGRESS_PROMOTE_ON_VERSION_CREATED=<alias>``, serve
  the new version under that alias; else, when ``PROMOTER_INGRESS_PREPARE_ON_VERSION_CREATED``
  names the model (or is ``*``), prepare it: loaded and proved on every Triton, routed by no alias,
  so the alias move that follows swaps without a load.
- ``model_version_tag.set``: only when it sets ``PROMOTER_INGRESS_PROMOTE_ON_TAG`` (``key=value``),
  serve the version under ``PROMOTER_INGRESS_PROMOTE_ON_TAG_ALIAS``.
  Tags in the ``promoter.`` namespace are the worker's own write-back and never promote, whatever
  that setting says (no loop).
- anything else: acknowledged, logged and counted as ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ingress.settings import IngressSettings
from schemas.field_problems import describe, field_problems
from schemas.mlflow_webhook import MLflowWebhookPayload
from schemas.prepared_version import PrepareRequestedData
from schemas.promotion_requested import PromotionRequestedData


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


class UnusableEventError(ValueError):
    """The webhook is about a promotion, but its data cannot make a valid request; names the field."""


Request = PromotionRequestedData | PrepareRequestedData
Outcome = Request | Ignored
Rule = Callable[[dict[str, Any], dict[str, Any], IngressSettings], Outcome]


def _request(kind: type[Request] = PromotionRequestedData, **fields: Any) -> Request:
    try:
        return kind.model_validate(fields, strict=False)
    except ValidationError as error:
        raise UnusableEventError(describe(field_problems(error.errors(), root="data", prefix="data"))) from None


def _alias_created(data: dict[str, Any], common: dict[str, Any], _: IngressSettings) -> Outcome:
    return _request(**common, alias=data.get("alias"), reason=f"MLflow alias set to version {data.get('version')}")


def _alias_deleted(data: dict[str, Any], common: dict[str, Any], _: IngressSettings) -> Outcome:
    return _request(**common, alias=data.get("alias"), action="unserve", reason="MLflow alias deleted")


def _version_created(data: dict[str, Any], common: dict[str, Any], settings: IngressSettings) -> Outcome:
    alias = settings.promote_on_version_created
    if alias is not None:
        return _request(**common, alias=alias, version=data.get("version"), reason="new model version")
    if settings.prepares_new_versions_of(data.get("name")):
        return _request(PrepareRequestedData, **common, version=data.get("version"), reason="new model version")
    return Ignored(
        "new versions are neither auto-promoted (PROMOTER_INGRESS_PROMOTE_ON_VERSION_CREATED unset) "
        "nor prepared (PROMOTER_INGRESS_PREPARE_ON_VERSION_CREATED does not name this model)"
    )


#: Tags the worker writes back onto versions (worker/registry_writeback.py): never a promotion.
WORKER_TAG_PREFIX = "promoter."


def _tag_set(data: dict[str, Any], common: dict[str, Any], settings: IngressSettings) -> Outcome:
    if str(data.get("key", "")).startswith(WORKER_TAG_PREFIX):
        return Ignored(f"tag {data.get('key')} is written back by the promoter worker itself and never promotes")
    wanted = settings.promote_on_tag
    key, _, value = (wanted or "").partition("=")
    if wanted is None or data.get("key") != key or data.get("value") != value:
        return Ignored(f"tag {data.get('key')}={data.get('value')} does not promote")
    return _request(
        **common, alias=settings.promote_on_tag_alias, version=data.get("version"), reason=f"version tagged {wanted}"
    )


RULES: dict[str, Rule] = {
    "model_version_alias.created": _alias_created,
    "model_version_alias.deleted": _alias_deleted,
    "model_version.created": _version_created,
    "model_version_tag.set": _tag_set,
}


def to_request(payload: MLflowWebhookPayload, delivery_id: str, settings: IngressSettings) -> Outcome:
    """The promotion request this webhook asks for, or why it asks for none."""
    kind = f"{payload.entity}.{payload.action}"
    rule = RULES.get(kind)
    if rule is None:
        return Ignored(f"{kind} does not change what is served")
    common = {
        "origin": "mlflow_webhook",
        "requester": f"mlflow-webhook:{delivery_id}",
        "model_name": payload.data.get("name"),
    }
    return rule(payload.data, common, settings)
