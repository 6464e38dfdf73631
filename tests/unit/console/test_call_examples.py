"""The curl and tritonclient code the Try-a-model page shows, and the policy chart's rows."""

from __future__ import annotations

import ast
import shlex

from console.call_examples import curl_command, tritonclient_code
from console.charts import policy_rows
from schemas.model_ready import ModelReady
from schemas.routing_updated import RoutingUpdatedData
from tests.event_samples import all_events

RECORD = {"sepal length (cm)": 5.1, "petal width (cm)": 0.2}


def _ready() -> ModelReady:
    (ready,) = [e for e in all_events() if isinstance(e, ModelReady)]
    return ready


def test_curl_quotes_the_url_and_the_body() -> None:
    command = curl_command("http://127.0.0.1:8080", "iris clf", "champion", {"it's": 1.0})
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:4] == ["curl", "-sS", "-X", "POST"]
    assert words[4] == "http://127.0.0.1:8080/predict/iris%20clf?alias=champion"
    assert words[-2:] == ["-d", '{"it\'s": 1.0}']


def test_tritonclient_code_is_python_sending_the_features_in_signature_order() -> None:
    code = tritonclient_code("http://127.0.0.1:8080", _ready().data, "challenger", dict(reversed(RECORD.items())))
    assert code is not None
    ast.parse(code)
    assert "InferenceServerClient('127.0.0.1:8080')" in code
    assert "np.array([[5.1, 0.2]], dtype=np.float64)" in code
    assert "headers={'X-Model-Alias': 'challenger'}" in code
    assert "as_numpy('output')" in code


def test_no_tritonclient_code_for_a_tensor_signature() -> None:
    data = _ready().data
    tensor_only = data.model_copy(update={"signature": data.signature.model_copy(update={"columns": []})})
    assert tritonclient_code("http://gw:8080", tensor_only, "champion", {}) is None


def test_policy_rows_draw_the_weights_and_the_shadow_share() -> None:
    policy = RoutingUpdatedData(
        model_name="m", weights={"champion": 90, "challenger": 10}, shadow_alias="c", shadow_sample_percent=5.0,
        generation=1,
    )  # fmt: skip
    assert policy_rows(policy) == [
        {"row": "requests", "alias": "challenger", "percent": 10.0},
        {"row": "requests", "alias": "champion", "percent": 90.0},
        {"row": "shadow copies", "alias": "c", "percent": 5.0},
    ]
    assert [r["row"] for r in policy_rows(policy.model_copy(update={"shadow_alias": None}))] == ["requests"] * 2
