"""``model.ready``: a version is served. The serving-state log the gateways replay."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

from pydantic import Field

from schemas.envelope import CloudEvent, EventData
from schemas.names import Alias, ModelVersion, NonEmptyStr, RegisteredModelName, Sha256Hex

MODEL_READY_V1: Final = "io.modelpromoter.model.ready.v1"
SERVING_STOPPED_V1: Final = "io.modelpromoter.serving.stopped.v1"

#: Triton / KServe v2 tensor datatypes a signature maps to.
TensorDatatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class TensorSpec(EventData):
    """One named input or output of the model, as Triton sees it (batch dimension excluded)."""

    name: NonEmptyStr
    datatype: TensorDatatype
    shape: list[int] = Field(description="Dimensions without the batch dimension; -1 is variable.")


#: MLflow column types (``mlflow.types.DataType``) a tabular signature may use.
ColumnType = Literal["boolean", "integer", "long", "float", "double", "string", "binary", "datetime"]


class ColumnSpec(EventData):
    """One named feature of a tabular (column-based) MLflow signature."""

    name: str = Field(min_length=1, max_length=1024)
    type: ColumnType
    required: bool = True


class SignatureSummary(EventData):
    """The MLflow model signature, reduced to what a client needs to build a request."""

    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    columns: list[ColumnSpec] = Field(
        default_factory=list,
        description=(
            "For tabular models: the feature columns, in the order they are packed into the "
            "single input tensor. Empty for tensor-based signatures."
        ),
    )


class ServableVersionData(EventData):
    """A version staged, loaded on every Triton endpoint and proved: what ``model.ready`` and
    ``model.prepared`` (:mod:`schemas.prepared_version`) both say about it."""

    model_name: RegisteredModelName
    version: ModelVersion
    triton_model_name: NonEmptyStr = Field(description="Immutable Triton model for this exact version.")
    artifact_sha256: Sha256Hex = Field(description="Digest of the whole MLflow artifact tree.")
    mlflow_run_id: str | None = None
    flavor: NonEmptyStr = Field(description="MLflow flavor served, e.g. sklearn, python_function.")
    signature: SignatureSummary
    max_batch_size: int | None = Field(
        None,
        ge=0,
        description=(
            "Triton's max_batch_size for this model: the most rows one inference may carry (0: the "
            "model has no batch dimension; absent: unknown). Gateways split larger requests and merge "
            "concurrent small ones within it."
        ),
    )
    stage_seconds: dict[str, float] = Field(
        default_factory=dict, description="Time spent per promotion stage (resolve, stage, load, ...)."
    )
    request_event_id: str | None = Field(None, description="The request this answers.")


class ModelReadyData(ServableVersionData):
    alias: Alias
    generation: int = Field(
        ge=0,
        description=(
            "Drawn from one counter per registered model: every decision about any alias of the model "
            "(promotion, rollback, unserve) gets a greater one. A reader applies the event only when its "
            "generation is greater than the one it applied for the same model and alias."
        ),
    )
    pinned: bool | None = Field(
        None,
        description=(
            "True: served because a request pinned this version (a DAG, `promoter promote --version`, an "
            "ingress policy) while the MLflow alias pointed elsewhere or did not exist; the registry "
            "reconcile keeps it until the alias moves in MLflow. False: the version the MLflow alias "
            "pointed at. Absent: announced by an older worker."
        ),
    )
    registry_version: int | None = Field(
        None,
        ge=1,
        description="The version the MLflow alias pointed at when this was served; absent if the alias did not exist.",
    )


class ModelReady(CloudEvent):
    event_type: ClassVar[str] = MODEL_READY_V1
    type: Literal["io.modelpromoter.model.ready.v1"] = MODEL_READY_V1
    data: ModelReadyData


class ServingStoppedData(EventData):
    """The alias is no longer served (its MLflow alias was deleted, or an operator retired it)."""

    model_name: RegisteredModelName
    alias: Alias
    generation: int = Field(
        ge=0,
        description=(
            "Same counter and ordering as ModelReadyData.generation; the stopped alias keeps it, so an "
            "older model.ready cannot serve the alias again."
        ),
    )
    reason: str | None = Field(None, max_length=2000)
    request_event_id: str | None = None


class ServingStopped(CloudEvent):
    event_type: ClassVar[str] = SERVING_STOPPED_V1
    type: Literal["io.modelpromoter.serving.stopped.v1"] = SERVING_STOPPED_V1
    data: ServingStoppedData
