"""The copy-paste example ``promoter-stack up`` prints: log a model, set an alias, call a gateway.

It is a shell script (bash) for a shell whose ``python`` has the project installed (its venv
activated): the integration test of ``promoter-stack up`` runs it as printed.
"""

from __future__ import annotations

from deploy.stack.services import Services

EXAMPLE_MODEL = "iris-clf"
FIRST_LINE = "# Try it: in another shell with the project's venv activated (. .venv/bin/activate), paste:"
# curl asks again while the promotion is under way (the gateway answers 404 until it serves the model).
CURL_RETRIES = 60


def example(tracking_uri: str, services: Services) -> str:
    """The example for this run's MLflow and gateways."""
    gateway_a, gateway_b = services.gateways[0], services.gateways[1]
    return f"""{FIRST_LINE}

# 1. Log a model with MLflow and point the alias `champion` at it: MLflow's webhook reaches the
#    ingress, the worker promotes the version into Triton, both gateways switch to it.
export MLFLOW_TRACKING_URI={tracking_uri}
python - <<'EOF'
import mlflow.sklearn
from mlflow import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True, as_frame=True)
with mlflow.start_run():
    info = mlflow.sklearn.log_model(
        LogisticRegression(max_iter=1000).fit(X, y), name="model",
        registered_model_name="{EXAMPLE_MODEL}", input_example=X.head(5),  # the example gives the signature
    )
MlflowClient().set_registered_model_alias("{EXAMPLE_MODEL}", "champion", info.registered_model_version)
print("registered version", info.registered_model_version, "as champion")
EOF

# 2. Call gateway A with curl (it answers 404 until the version is served, a few seconds; curl asks again).
curl -sS --fail --retry {CURL_RETRIES} --retry-delay 1 --retry-all-errors \\
  -H 'content-type: application/json' {gateway_a}/predict/{EXAMPLE_MODEL} \\
  -d '[{{"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}}]'
echo

# 3. Call gateway B with tritonclient (the Open Inference Protocol, by registered model name).
python - <<'EOF'
import numpy as np
import tritonclient.http as httpclient

client = httpclient.InferenceServerClient("{gateway_b.removeprefix("http://")}")
rows = np.array([[6.7, 3.0, 5.2, 2.3]])
tensor = httpclient.InferInput("input", list(rows.shape), "FP64")
tensor.set_data_from_numpy(rows)
result = client.infer("{EXAMPLE_MODEL}", [tensor])
print("tritonclient:", result.as_numpy("output").tolist(), "from version", result.get_response()["model_version"])
EOF

# What each gateway serves: curl {gateway_a}/models
"""
