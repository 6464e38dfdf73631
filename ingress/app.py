"""The ingress process: FastAPI around :class:`WebhookReceiver`, with a Kafka producer and probes.

``POST /webhooks/mlflow`` is the URL to register in MLflow (``promoter webhook register``).
The producer connects in the background: until Kafka answers, deliveries get 503 with
``Retry-After`` and MLflow retries them. A broker that refuses the credentials or the TLS settings
at start-up is fatal instead (``runtime/kafka_access.py``): the process exits non-zero saying which.
``/health``, ``/ready`` (connected to Kafka) and ``/metrics`` are for Kubernetes and Prometheus.
Every error is answered as ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic_settings import BaseSettings

from ingress.receiver import WebhookReceiver
from ingress.settings import IngressSettings
from runtime.http_errors import answer_errors_in_one_shape, error_response
from runtime.kafka_access import require_kafka_access
from runtime.kafka_topics import TopicsError, ensure_service_topics
from runtime.logging import configure_logging, get_logger
from runtime.metrics import METRICS_CONTENT_TYPE, new_registry, render
from runtime.service_help import parse_service_args, valid_settings
from runtime.settings import KafkaSettings, LogSettings, TopicSettings
from schemas.envelope import KAFKA_HEADERS
from schemas.prepared_version import PrepareRequested
from schemas.promotion_requested import PromotionRequested

log = get_logger(__name__)

RETRY_AFTER_S = "5"
RECONNECT_S = 1.0
TOPIC_RECHECK_S = 5.0


class KafkaLink:
    """A producer that connects in the background and publishes with a deadline.

    Connected means the broker answers and the requests topic exists (created when
    ``PROMOTER_KAFKA_CREATE_TOPICS`` allows it); until then ``not_ready`` says why.
    """

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, timeout_s: float) -> None:
        self.kafka = kafka
        self._topics = topics
        self._topic = topics.promotion_requested
        self._timeout_s = timeout_s
        self.producer: AIOKafkaProducer | None = None
        self.not_ready = "not connected to Kafka yet"

    async def connect(self) -> None:
        while True:
            producer = AIOKafkaProducer(**self.kafka.producer_kwargs())
            try:
                await producer.start()
                await ensure_service_topics(self.kafka, self._topics, {self._topic}, log_refusal=False)
            except TopicsError as error:
                await producer.stop()
                if str(error) != self.not_ready:  # once per reason, not at every re-check
                    log.error("not ready: topics", error=str(error), recheck_s=TOPIC_RECHECK_S)  # noqa: TRY400
                self.not_ready = str(error)
                await asyncio.sleep(TOPIC_RECHECK_S)  # until the topic exists
                continue
            except Exception as error:
                await producer.stop()
                log.warning("Kafka unavailable, retrying", error=str(error))
                await asyncio.sleep(RECONNECT_S)  # reconnect backoff
                continue
            self.producer = producer
            log.info("connected to Kafka", bootstrap_servers=self.kafka.bootstrap_servers)
            return

    async def publish(self, event: PromotionRequested | PrepareRequested) -> None:
        if self.producer is None:
            raise ConnectionError("not connected to Kafka yet")
        await asyncio.wait_for(
            self.producer.send_and_wait(
                self._topic,
                value=event.to_json_bytes(),
                key=event.data.model_name.encode(),
                headers=KAFKA_HEADERS,
            ),
            self._timeout_s,
        )

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


def create_app(
    settings: IngressSettings | None = None,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    settings = settings or IngressSettings()
    link = KafkaLink(kafka or KafkaSettings(), topics or TopicSettings(), settings.publish_timeout_s)
    registry = new_registry()
    receiver = WebhookReceiver(settings, link.publish, registry, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await require_kafka_access(link.kafka)  # refused credentials or TLS: exit now, not retry forever
        connecting = asyncio.create_task(link.connect())
        try:
            yield
        finally:
            connecting.cancel()
            with suppress(asyncio.CancelledError):
                await connecting
            await link.close()

    app = FastAPI(
        title="model-promoter ingress",
        description="Receives MLflow model-registry webhooks and publishes promotion requests to Kafka.",
        version="0.1.0",
        lifespan=lifespan,
    )
    answer_errors_in_one_shape(app)

    @app.post(
        "/webhooks/mlflow",
        status_code=202,
        responses={
            200: {"description": "duplicate or ignored delivery"},
            401: {"description": "unsigned, badly signed or stale delivery"},
            422: {"description": "signed, but not a usable registry event (names the field)"},
            503: {"description": "Kafka is unavailable: retry later"},
        },
    )
    async def mlflow_webhook(request: Request) -> JSONResponse:
        """One MLflow model-registry webhook delivery, signed with ``X-MLflow-Signature``."""
        answer = await receiver.receive(request.headers, await request.body())
        headers = {"Retry-After": RETRY_AFTER_S} if answer.status == 503 else None
        return JSONResponse(answer.body, status_code=answer.status, headers=headers)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if link.producer is not None:
            return JSONResponse({"status": "ready"})
        return error_response(503, link.not_ready)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(render(registry), media_type=METRICS_CONTENT_TYPE)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    settings_classes: list[type[BaseSettings]] = [IngressSettings, KafkaSettings, TopicSettings, LogSettings]
    parse_service_args(
        "promoter-ingress",
        "model-promoter's webhook ingress: verifies signed MLflow model-registry webhooks "
        "(POST /webhooks/mlflow) and publishes them as promotion requests to Kafka.",
        settings_classes,
        argv,
    )
    import uvicorn  # noqa: PLC0415

    with valid_settings("ingress", settings_classes):
        configure_logging("ingress", LogSettings())
        settings, kafka, topics = IngressSettings(), KafkaSettings(), TopicSettings()
    uvicorn.run(create_app(settings, kafka, topics), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
