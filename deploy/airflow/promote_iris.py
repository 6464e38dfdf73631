"""Example Airflow DAG: train an iris classifier, register it in MLflow, request its promotion.

Copy into your Airflow ``dags/`` folder. The workers need model-promoter installed
(``pip install model-promoter``) and the ``PROMOTER_*`` variables of the README, e.g. from an
Airflow connection or the worker pod's environment. Registering alone never serves a model: the
last task asks for a promotion and fails when it is rejected, with the worker's reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.decorators import dag, task

MODEL_NAME = "iris-clf"


@dag(
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["model-promoter"],
)
def promote_iris() -> None:
    @task
    def train_and_register() -> int:
        import mlflow
        import mlflow.sklearn
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        features, target = load_iris(return_X_y=True, as_frame=True)
        model = LogisticRegression(max_iter=1000).fit(features, target)
        with mlflow.start_run():
            mlflow.log_metric("accuracy", float(model.score(features, target)))
            info = mlflow.sklearn.log_model(
                model, name="model", registered_model_name=MODEL_NAME, input_example=features.head(5)
            )
        return int(info.registered_model_version)

    @task
    def request_promotion(version: int) -> str:
        from promoter_client import request_promotion

        outcome = request_promotion(
            MODEL_NAME,
            alias="champion",
            version=version,
            reason="weekly retrain",
            origin="dag",
            requester="airflow:promote_iris",
            wait_s=600,
        )
        outcome.raise_for_rejection()  # the task fails with the reason code and message
        return f"{MODEL_NAME} v{outcome.version} served as {outcome.triton_model_name}"

    request_promotion(train_and_register())

    # Without model-promoter on the workers, Airflow's Kafka provider (librdkafka, which a test
    # publishes with too: tests/integration/worker/test_foreign_publishers.py) can send the request:
    #
    #   from airflow.providers.apache.kafka.operators.produce import ProduceToTopicOperator
    #   ProduceToTopicOperator(
    #       task_id="request_promotion_via_kafka",
    #       kafka_config_id="model_promoter_kafka",  # bootstrap.servers, acks=all, enable.idempotence=true
    #       topic="model.promotion.requested",
    #       producer_function="my_dags.promotion_records",  # yields (model name, PromotionRequested JSON)
    #   )
    #
    # It only publishes: it cannot wait for model.ready or fail on a rejection as request_promotion does.


promote_iris()
