"""``promoter-gateway``: start a gateway replica, the replay of the serving-state log first.

A new replica is ready once it replayed the log and serves HTTP and gRPC. Most of that time is Python's own
start-up work (imports), and the replay's share waits on the network: so the replay side (``gateway.replica``:
the Kafka client, the event schemas) is imported and started first, and the serving side (``gateway.app``: the
gRPC stack and the Triton clients, uvicorn) is imported in a worker thread while the replay runs on the event loop.
Then uvicorn serves the app on that loop; its lifespan waits for the replay's start and opens the gRPC API.

The garbage collector is off during the start-up: imports and the replay allocate objects that live on, so
collections would walk them all and free nothing. Once the replay is over they are frozen out of the collector's
way (``gc.freeze``) and it runs as usual.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtime.package_modules import package_init_skipped

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings
    from uvicorn.config import Config
    from uvicorn.server import Server

    from gateway.replica import GatewayReplica
    from gateway.settings import GatewayConfig

STARTUP_FAILURE = 3  # uvicorn's exit code for a failed start-up
SERVING_MODULES = ("gateway.app",)
"""Imported in a worker thread while the replay runs (after uvicorn's parts: :func:`uvicorn_parts`)."""
UVICORN_PROTOCOLS = ("uvicorn.protocols.http.httptools_impl", "uvicorn.lifespan.on")
"""What ``uvicorn.Config.load`` imports for ``http="httptools"``, ``lifespan="on"`` (and ``ws="none"``)."""


def main(argv: Sequence[str] | None = None) -> None:
    gc.disable()  # the start-up's objects live on; collected again once the replay is over (_collect_again)
    from gateway.settings import GatewayConfig
    from runtime.logging import configure_logging
    from runtime.service_help import parse_service_args, settings_classes_of, valid_settings
    from runtime.settings import LogSettings

    settings_classes: list[type[BaseSettings]] = [*settings_classes_of(GatewayConfig), LogSettings]
    parse_service_args(
        "promoter-gateway",
        "A model-promoter gateway replica: serves predictions (HTTP /predict and the Open Inference Protocol, "
        "HTTP and gRPC) from the model versions announced on model.ready, through Triton.",
        settings_classes,
        argv,
    )
    with valid_settings("gateway", settings_classes):
        configure_logging("gateway", LogSettings())
        config = GatewayConfig.from_env()
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config))


async def serve(config: GatewayConfig) -> None:
    """Start the replay, import the serving side meanwhile, then serve until a signal stops uvicorn."""
    from gateway.replica import GatewayReplica

    replica = GatewayReplica(config)
    replica.start()
    collect = asyncio.create_task(_collect_again(replica), name="garbage collection back on")
    try:
        try:
            parts = await asyncio.to_thread(uvicorn_parts)
            for module in SERVING_MODULES:
                await asyncio.to_thread(importlib.import_module, module)
            server = _server(config, replica, *parts)
        except BaseException:  # before uvicorn's lifespan owns the replica
            await replica.stop()
            raise
        await server.serve()
    finally:
        collect.cancel()
        gc.enable()
    if not server.started:  # as uvicorn.run: a start-up that failed (e.g. Kafka refused us) exits 3
        sys.exit(STARTUP_FAILURE)


def uvicorn_parts() -> tuple[type[Config], type[Server]]:
    """uvicorn's ``Config`` and ``Server`` and the protocols they load, without uvicorn's package ``__init__``: that
    imports its command line (click) and its process supervisors (multiprocessing, watchfiles), none of which a
    server started from code uses (:mod:`runtime.package_modules`)."""
    with package_init_skipped("uvicorn") as package:
        config = importlib.import_module("uvicorn.config")
        setattr(package, "Config", config.Config)  # noqa: B010 - uvicorn.lifespan.on reads it from the package
        for module in UVICORN_PROTOCOLS:
            importlib.import_module(module)
        server = importlib.import_module("uvicorn.server")
    return config.Config, server.Server


def _server(
    config: GatewayConfig, replica: GatewayReplica, config_class: type[Config], server_class: type[Server]
) -> Server:
    from gateway.app import build_app

    settings = config.gateway
    uvicorn_config = config_class(
        build_app(config, replica),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="none",  # this loop (uvloop)
        http="httptools",
        ws="none",  # no WebSocket route: not importing a WebSocket implementation saves ~20 ms of the start
        interface="asgi3",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return server_class(uvicorn_config)


async def _collect_again(replica: GatewayReplica) -> None:
    await replica.replay_over()
    gc.freeze()
    gc.enable()


if __name__ == "__main__":
    main()
