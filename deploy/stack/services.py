"""model-promoter's own services beside a running local stack: the whole system on one machine.

A worker, the webhook ingress (registered in the stack's MLflow, so that setting an alias promotes)
and two gateway replicas, started as processes of the :class:`LocalStack` (watched with it, stopped
before it). Used by ``promoter-stack up`` (``make up``), ``make demo`` and the fault suite (``make chaos``),
which kills and restarts them through :func:`service_handles`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deploy.stack.app_processes import gateway_spec, ingress_spec, worker_spec
from deploy.stack.errors import StackError
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import LOOPBACK, free_ports
from deploy.stack.service_handle import ServiceHandle
from promoter_cli.webhook_registration import register_webhook

WORKER_NAME = "worker"
INGRESS_NAME = "ingress"
GATEWAY_NAMES = ("gateway-a", "gateway-b")
WEBHOOK_PATH = "/webhooks/mlflow"


@dataclass(frozen=True)
class Services:
    """Where the services answer; holds no secret, so it is safe to print."""

    worker: str
    ingress: str
    gateways: list[str]
    gateway_grpc: list[str]
    env: dict[str, str]  # what they run with: the stack's client environment and the overrides

    @property
    def webhook_url(self) -> str:
        return f"{self.ingress}{WEBHOOK_PATH}"


@dataclass(frozen=True)
class ServiceHandles:
    """The started services as handles to kill, stop and start again (same ports, same log files)."""

    worker: ServiceHandle
    ingress: ServiceHandle
    gateways: list[ServiceHandle]


def service_handles(stack: LocalStack) -> ServiceHandles:
    """The handles of the services :func:`start_services` started on ``stack``."""
    return ServiceHandles(
        worker=stack.service(WORKER_NAME),
        ingress=stack.service(INGRESS_NAME),
        gateways=[stack.service(name) for name in GATEWAY_NAMES],
    )


def start_services(
    stack: LocalStack,
    webhook_secret: str,
    *,
    env_overrides: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
) -> Services:
    """Start the worker, the ingress and the gateways on free ports, wait until all are ready, register the
    ingress as MLflow's webhook (signed with ``webhook_secret``). ``env_overrides`` go to every service,
    ``worker_env`` to the worker alone. A failure raises; :meth:`LocalStack.stop` stops whatever started."""
    env = {**stack.client_env(), **(env_overrides or {})}
    worker_port, ingress_port, *gateway_ports = free_ports(2 + 2 * len(GATEWAY_NAMES))
    http_ports, grpc_ports = gateway_ports[: len(GATEWAY_NAMES)], gateway_ports[len(GATEWAY_NAMES) :]
    run_dir = stack.run_dir
    ingress_env = {**env, "PROMOTER_INGRESS_WEBHOOK_SECRETS": webhook_secret}
    stack.add_services(
        [
            worker_spec({**env, **(worker_env or {})}, health_port=worker_port, run_dir=run_dir, name=WORKER_NAME),
            ingress_spec(ingress_env, port=ingress_port, run_dir=run_dir, name=INGRESS_NAME),
            *(
                gateway_spec(env, port=port, grpc_port=grpc_port, run_dir=run_dir, name=name)
                for name, port, grpc_port in zip(GATEWAY_NAMES, http_ports, grpc_ports, strict=True)
            ),
        ]
    )
    services = Services(
        worker=f"http://{LOOPBACK}:{worker_port}",
        ingress=f"http://{LOOPBACK}:{ingress_port}",
        gateways=[f"http://{LOOPBACK}:{port}" for port in http_ports],
        gateway_grpc=[f"{LOOPBACK}:{port}" for port in grpc_ports],
        env=env,
    )
    try:
        register_webhook(stack.mlflow_tracking_uri, services.webhook_url, webhook_secret)
    except Exception as error:  # MLflow's client raises its own and requests' exceptions
        raise StackError(f"could not register the ingress as MLflow's webhook: {error}") from error
    return services
