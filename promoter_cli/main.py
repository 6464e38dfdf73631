"""``promoter``: the command line of model-promoter for people and DAGs.

    promoter promote iris-clf --alias champion --version 7 --reason "fixes drift" --wait 120
    promoter unserve iris-clf --alias challenger
    promoter webhook register --url http://ingress:8090/webhooks/mlflow

Connection settings come from the environment (``PROMOTER_KAFKA_*``, ``PROMOTER_TOPIC_*``,
``PROMOTER_MLFLOW_TRACKING_URI``, ``PROMOTER_INGRESS_WEBHOOK_SECRETS``): see the README table.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from ingress.settings import IngressSettings
from promoter_cli.errors import EXIT_REJECTED, EXIT_TIMEOUT, explained_failures
from promoter_cli.oncall_commands import register as register_oncall_commands
from promoter_cli.webhook_registration import DEFAULT_WEBHOOK_NAME, register_webhook
from promoter_client.promotion import Outcome, request_promotion
from promoter_client.routing import publish_routing
from runtime.settings import MLflowSettings

app = typer.Typer(
    help="model-promoter's command line: request promotions, manage the MLflow webhook.",
    no_args_is_help=True,
    add_completion=False,
)
webhook = typer.Typer(help="Manage the MLflow webhook that feeds the ingress.", no_args_is_help=True)
app.add_typer(webhook, name="webhook")
register_oncall_commands(app)


def _report(outcome: Outcome) -> None:
    if outcome.kind == "requested":
        typer.echo(f"requested (event {outcome.event_id}); not waiting for the outcome")
    elif outcome.kind == "served":
        typer.echo(f"served: version {outcome.version} as Triton model {outcome.triton_model_name}")
    elif outcome.kind == "stopped":
        typer.echo("the alias is no longer served")
    else:
        typer.echo(f"rejected ({outcome.reason_code}): {outcome.message}", err=True)
        typer.echo("see `promoter dlq show` for the dead letter, fix the cause, then replay it", err=True)
        raise typer.Exit(EXIT_REJECTED)


def _run(model: str, wait: float | None, **options: object) -> None:
    try:
        with explained_failures():
            outcome = request_promotion(model, origin="cli", wait_s=wait, **options)
    except TimeoutError as error:
        typer.echo(f"{error}; the request stays queued: check the worker's logs and `promoter dlq list`", err=True)
        raise typer.Exit(EXIT_TIMEOUT) from None
    _report(outcome)


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="Registered model name in MLflow.")],
    alias: Annotated[str, typer.Option(help="Alias to serve the version under.")] = "champion",
    version: Annotated[int | None, typer.Option(help="Version to serve; default: what the alias points at.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the people reading the events.")] = None,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for model.ready / model.rejected.")] = None,
) -> None:
    """Ask the workers to serve MODEL under ALIAS. Exit 1 rejected, 2 no answer in --wait, 3 bad input, 4 no Kafka.

    Example: promoter promote iris-clf --alias champion --version 7 --wait 120
    """
    _run(model, wait, alias=alias, version=version, reason=reason)


@app.command()
def unserve(
    model: Annotated[str, typer.Argument(help="Registered model name in MLflow.")],
    alias: Annotated[str, typer.Option(help="Alias the gateways should stop serving.")],
    reason: Annotated[str | None, typer.Option(help="Why, for the people reading the events.")] = None,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for the outcome.")] = None,
) -> None:
    """Ask the gateways to stop serving MODEL under ALIAS.

    Example: promoter unserve iris-clf --alias challenger --wait 30
    """
    _run(model, wait, alias=alias, action="unserve", reason=reason)


def _weights(spec: str) -> dict[str, int]:
    weights: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        alias, sep, percent = part.partition("=")
        if not sep or not percent.strip().isdigit():
            raise typer.BadParameter(f"{part!r} must look like alias=percent", param_hint="--weights")
        weights[alias.strip()] = int(percent)
    return weights


@app.command()
def route(
    model: Annotated[str, typer.Argument(help="Registered model name in MLflow.")],
    weights: Annotated[str, typer.Option(help="Percent per alias, summing to 100: champion=90,challenger=10.")],
    shadow: Annotated[str | None, typer.Option(help="Alias that receives copies of requests.")] = None,
    shadow_percent: Annotated[float, typer.Option(help="Share of requests copied to --shadow.")] = 0.0,
) -> None:
    """Set the traffic policy of MODEL at every gateway: A/B weights (sticky per client) and a shadow.

    Example: promoter route iris-clf --weights champion=90,challenger=10 --shadow candidate --shadow-percent 5
    """
    with explained_failures():
        event = asyncio.run(
            publish_routing(model, _weights(weights), shadow_alias=shadow, shadow_sample_percent=shadow_percent)
        )
    typer.echo(f"routing of {model} set: {event.data.weights} (generation {event.data.generation})")


@webhook.command("register")
def register(
    url: Annotated[str, typer.Option(help="The ingress URL MLflow calls, ending in /webhooks/mlflow.")],
    name: Annotated[str, typer.Option(help="Webhook name in MLflow (updated if it exists).")] = DEFAULT_WEBHOOK_NAME,
) -> None:
    """Create or update the MLflow webhook pointing at the ingress, signed with the first configured secret.

    Example: PROMOTER_INGRESS_WEBHOOK_SECRETS=... promoter webhook register --url http://ingress:8090/webhooks/mlflow
    """
    secrets = IngressSettings().webhook_secrets
    if not secrets:
        typer.echo("set PROMOTER_INGRESS_WEBHOOK_SECRETS to the secret the ingress verifies", err=True)
        raise typer.Exit(EXIT_REJECTED)
    tracking_uri = MLflowSettings().tracking_uri
    done = register_webhook(tracking_uri, url, secrets[0].get_secret_value(), name=name)
    verb = "created" if done.created else "updated"
    typer.echo(f"{verb} webhook {name} ({done.webhook_id}) in {tracking_uri} -> {url}")


def main() -> None:
    # The commands say what failed and why in one line; aiokafka's own retry chatter would only repeat it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    app()
