"""``promoter-stack up``: run model-promoter on this machine in the foreground until Ctrl-C or SIGTERM.

The local stack (a Kafka broker, ``mlflow server``, ``tritonserver``) and, unless ``--stack-only``, our
services beside it: a worker, the webhook ingress registered in MLflow, and two gateways (``make up``).
Progress, the URLs, a copy-paste example and errors go to stderr; the client environment goes to
stdout as ``export NAME=value`` lines, so ``eval "$(promoter-stack up ...)"``-style tooling and tests
can read it.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError
from pydantic_settings import SettingsError

from deploy.stack.errors import StackError
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import StackPorts
from deploy.stack.services import GATEWAY_NAMES, Services, start_services
from deploy.stack.settings import StackSettings
from deploy.stack.try_it import example
from runtime.settings_errors import EXIT_INVALID_SETTINGS, invalid_settings

DEFAULT_RUN_ROOT = Path(".stack")


def _say(message: str) -> None:
    print(f"promoter-stack: {message}", file=sys.stderr, flush=True)


def _default_run_dir() -> Path:
    return DEFAULT_RUN_ROOT / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promoter-stack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up",
        help="start the whole system on 127.0.0.1: the stack, a worker, the ingress and two gateways",
        description="Start a Kafka broker, mlflow server and tritonserver, then a worker, the webhook ingress "
        "(registered in MLflow) and two gateways, all on 127.0.0.1; Ctrl-C stops every process.",
    )
    up.add_argument("--stack-only", action="store_true", help="only the Kafka broker, mlflow server and tritonserver")
    up.add_argument("--run-dir", type=Path, default=None, help="data and logs (default: new dir under .stack/)")
    up.add_argument("--kafka-port", type=int, default=None, help="default: a free port")
    up.add_argument("--mlflow-port", type=int, default=None, help="default: a free port")
    up.add_argument("--triton-http-port", type=int, default=None, help="default: a free port")
    up.add_argument("--triton-grpc-port", type=int, default=None, help="default: a free port")
    up.add_argument("--mlflow-workers", type=int, default=1, help="mlflow server workers (default: 1)")
    return parser


class _Stop(Exception):
    """Raised from the signal handler for SIGINT / SIGTERM."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _print_ready(stack: LocalStack, services: Services | None, began: float) -> None:
    info = stack.info()
    what = "stack" if services is None else "model-promoter"
    _say(f"{what} ready in {time.monotonic() - began:.1f} s (run dir {info.run_dir})")
    _say(f"  kafka          {info.kafka_bootstrap_servers} ({info.kafka_broker})")
    _say(f"  mlflow         {info.mlflow_tracking_uri}")
    _say(f"  triton http    {info.triton_http}")
    _say(f"  triton grpc    {info.triton_grpc}")
    _say(f"  triton metrics {info.triton_metrics_url}")
    if services is not None:
        _say(f"  worker         {services.worker} (/ready, /metrics)")
        _say(f"  ingress        {services.webhook_url} (MLflow's webhook)")
        for name, url, grpc in zip(GATEWAY_NAMES, services.gateways, services.gateway_grpc, strict=True):
            _say(f"  {name:<14} {url} (/predict, /v2, /models, /docs; gRPC {grpc})")
    _say(f"  model repo     {info.model_repository}")
    _say(f"  logs           {info.logs_dir}")
    for name, value in stack.client_env().items():
        print(f"export {name}={shlex.quote(value)}", flush=True)
    if services is not None:
        print(example(info.mlflow_tracking_uri, services), file=sys.stderr, flush=True)
    _say("press Ctrl-C to stop")


def up(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir or _default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    ports = StackPorts.allocate(
        kafka=args.kafka_port,
        mlflow=args.mlflow_port,
        triton_http=args.triton_http_port,
        triton_grpc=args.triton_grpc_port,
    )
    stack = LocalStack(run_dir, ports, mlflow_workers=args.mlflow_workers)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    began = time.monotonic()
    try:
        _say(f"starting {stack.kafka_broker}, mlflow server and tritonserver in {stack.run_dir}")
        stack.start()
        services = None
        if not args.stack_only:
            _say(f"stack ready in {stack.startup_s or 0.0:.1f} s; starting the worker, the ingress and two gateways")
            services = start_services(stack, secrets.token_hex(24))
        _print_ready(stack, services, began)
        stack.watch()
    except _Stop as stop:
        _say(f"{stop}: stopping")
    except StackError as error:
        _say(f"error: {error}")
        status = 1
    finally:
        # A second Ctrl-C must not cut the teardown short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say("stopped" if status == 0 else "stopped after a failure")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            return up(args)
    except StackError as error:
        _say(f"error: {error}")
        return 1
    except (ValidationError, SettingsError):
        problems = invalid_settings([StackSettings])
        if not problems:
            raise
        for problem in problems:  # the variable set, not pydantic's field name
            _say(f"invalid setting {problem}")
        return EXIT_INVALID_SETTINGS
    return 2


if __name__ == "__main__":
    sys.exit(main())
