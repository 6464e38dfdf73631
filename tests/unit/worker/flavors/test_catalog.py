"""Every flavor module is found, in today's detection order, and picks the models it serves."""

from __future__ import annotations

import pytest

from worker.flavors import catalog


def test_flavors_are_found_in_detection_order() -> None:
    assert [flavor.name for flavor in catalog.FLAVORS] == ["onnx", "sklearn", "python_function"]
    assert [flavor.backend for flavor in catalog.FLAVORS] == ["onnxruntime", "python", "python"]


@pytest.mark.parametrize(
    ("mlmodel_flavors", "served_by"),
    [
        ({"onnx": {}, "python_function": {}}, "onnx"),
        ({"sklearn": {}, "python_function": {}}, "sklearn"),
        ({"python_function": {}}, "python_function"),
        ({"python_function": {}, "sklearn": {}, "onnx": {}}, "onnx"),
    ],
)
def test_the_first_flavor_in_detection_order_serves_the_model(
    mlmodel_flavors: dict[str, dict[str, str]], served_by: str
) -> None:
    flavor = catalog.detect(mlmodel_flavors)

    assert flavor is not None
    assert flavor.name == served_by


def test_no_served_flavor_is_none_and_the_supported_ones_are_named() -> None:
    assert catalog.detect({"keras": {}}) is None
    assert (
        catalog.supported() == "onnx (onnxruntime backend), sklearn (python backend), python_function (python backend)"
    )
