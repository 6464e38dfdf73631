"""``promoter``: the command line of model-promoter for people and DAGs.

    promoter promote iris-clf --alias champion --version 7 --reason "fixes drift" --wait 120
    promoter unserve iris-clf --alias challenger
    promoter prepare iris-clf --version 8 --wait 600
    promoter route iris-clf --shadow candidate --shadow-percent 5
    promoter webhook register --url http://ingress:8090/webhooks/mlflow
    promoter console --allow-replay

Connection settings come from the environment (``PROMOTER_KAFKA_*``, ``PROMOTER_TOPIC_*``,
``PROMOTER_MLFLOW_TRACKING_URI``, ``PROMOTER_INGRESS_WEBHOOK_SECRETS``): see the README table.

Start-up stays fast (``promoter --help`` loads typer only): each command imports the clients it
needs (aiokafka, pydantic settings, MLflow) when it runs. A command prints its result and nothing
else; ``-v`` adds log lines on stderr.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from promoter_cli.console_command import register as register_console_command
from promoter_cli.oncall_commands import register as register_oncall_commands
from promoter_cli.output import JsonOpt
from promoter_cli.webhook_registration import DEFAULT_WEBHOOK_NAME, register_webhook

if TYPE_CHECKING:
    from collections.abc import Callable

    from promoter_client.promotion import Outcome

app = typer.Typer(
    help="model-promoter's command line: request promotions, set traffic policies, manage the MLflow webhook.",
    no_args_is_help=True,
    add_completion=False,
)
webhook = typer.Typer(help="Manage the MLflow webhook that feeds the ingress.", no_args_is_help=True)
app.add_typer(webhook, name="webhook")
register_oncall_commands(app)
register_console_command(app)


@app.callback()
def configure(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log what happens (aiokafka included) to stderr.")
    ] = False,
) -> None:
    from runtime.logging import configure_command_line_logging

    configure_command_line_logging(verbose=verbose)


def _report(outcome: Outcome, as_json: bool) -> None:
    from promoter_cli.errors import EXIT_REJECTED

    if as_json:
        typer.echo(json.dumps(asdict(outcome)))
    elif outcome.kind == "requested":
        typer.echo(f"requested (event {outcome.event_id}); not waiting for the outcome")
    elif outcome.kind == "served":
        typer.echo(f"served: version {outcome.version} as Triton model {outcome.triton_model_name}")
    elif outcome.kind == "prepared":
        typer.echo(
            f"prepared: version {outcome.version} loaded and proved as Triton model {outcome.triton_model_name}, "
            "routed by no alias; moving an alias to it now swaps without a load"
        )
    elif outcome.kind == "stopped":
        typer.echo("the alias is no longer served")
    if outcome.kind == "rejected":
        typer.echo(f"rejected ({outcome.reason_code}): {outcome.message}", err=True)
        typer.echo("see `promoter dlq show` for the dead letter, fix the cause, then replay it", err=True)
        raise typer.Exit(EXIT_REJECTED)


def _request(
    model: str,
    *,
    alias: str,
    action: Literal["promote", "unserve"],
    version: int | None,
    reason: str | None,
    wait: float | None,
    as_json: bool,
) -> None:
    from promoter_client.promotion import request_promotion

    _send_and_report(
        lambda: request_promotion(
            model, alias=alias, version=version, reason=reason, action=action, origin="cli", wait_s=wait
        ),
        as_json,
    )


def _send_and_report(send: Callable[[], Outcome], as_json: bool) -> None:
    from promoter_cli.errors import EXIT_TIMEOUT, explained_failures

    try:
        with explained_failures():
            outcome = send()
    except TimeoutError as error:
        typer.echo(f"{error}; the request stays queued: check the worker's logs and `promoter dlq list`", err=True)
        raise typer.Exit(EXIT_TIMEOUT) from None
    _report(outcome, as_json)


ModelArg = Annotated[str, typer.Argument(help="Registered model name in MLflow.")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why, for the people reading the events.")]


@app.command()
def promote(
    model: ModelArg,
    alias: Annotated[str, typer.Option(help="Alias to serve the version under.")] = "champion",
    version: Annotated[int | None, typer.Option(help="Version to serve; default: what the alias points at.")] = None,
    reason: ReasonOpt = None,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for model.ready / model.rejected.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the workers to serve MODEL under ALIAS. Exit 1 rejected, 2 no answer in --wait, 3 bad input, 4 no Kafka.

    Example: promoter promote iris-clf --alias champion --version 7 --wait 120
    """
    _request(model, alias=alias, action="promote", version=version, reason=reason, wait=wait, as_json=as_json)


@app.command()
def unserve(
    model: ModelArg,
    alias: Annotated[str, typer.Option(help="Alias the gateways should stop serving.")],
    reason: ReasonOpt = None,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for the outcome.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the gateways to stop serving MODEL under ALIAS.

    Example: promoter unserve iris-clf --alias challenger --wait 30
    """
    _request(model, alias=alias, action="unserve", version=None, reason=reason, wait=wait, as_json=as_json)


@app.command()
def prepare(
    model: ModelArg,
    version: Annotated[int, typer.Option(help="Version to load and prove on every Triton, without routing it.")],
    reason: ReasonOpt = None,
    wait: Annotated[float | None, typer.Option(help="Seconds to wait for model.prepared / model.rejected.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Prepare VERSION of MODEL: staged, loaded and proved on every Triton, routed by no alias until one moves to it.

    Unloaded after PROMOTER_WORKER_PREPARED_TTL_S if no alias takes it. Exit codes as for promote.

    Example: promoter prepare iris-clf --version 8 --wait 600
    """
    from promoter_client.promotion import request_preparation

    _send_and_report(
        lambda: request_preparation(model, version=version, reason=reason, origin="cli", wait_s=wait), as_json
    )


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
    model: ModelArg,
    weights: Annotated[
        str | None, typer.Option(help="Percent per alias, summing to 100: champion=90,challenger=10. Default: kept.")
    ] = None,
    shadow: Annotated[str | None, typer.Option(help="Alias that receives copies of requests.")] = None,
    shadow_percent: Annotated[
        float | None, typer.Option(help="Share of requests copied to the shadow. Default: kept.")
    ] = None,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Stop copying requests to a shadow.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set the traffic policy of MODEL at every gateway: A/B weights (sticky per client), a shadow, or both.

    What is not given is kept from the current policy (the newest on routing.updated).

    Example: promoter route iris-clf --weights champion=90,challenger=10 --shadow candidate --shadow-percent 5
    """
    import asyncio

    from promoter_cli.errors import EXIT_INVALID, EXIT_TIMEOUT, explained_failures
    from promoter_client.routing import RoutingChange, RoutingChangeError, update_routing

    try:
        change = RoutingChange(
            weights=_weights(weights) if weights is not None else None,
            shadow_alias=shadow,
            shadow_sample_percent=shadow_percent,
            clear_shadow=no_shadow,
        )
        with explained_failures():
            event = asyncio.run(update_routing(model, change))
    except RoutingChangeError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except TimeoutError as error:
        typer.echo(f"cannot read the current policy: {error}; nothing was published", err=True)
        raise typer.Exit(EXIT_TIMEOUT) from None
    policy = event.data
    if as_json:
        typer.echo(policy.model_dump_json())
        return
    shadowed = (
        f"shadow {policy.shadow_alias} at {policy.shadow_sample_percent:g}%" if policy.shadow_alias else "no shadow"
    )
    typer.echo(f"routing of {model} set: {policy.weights}, {shadowed} (generation {policy.generation})")


@webhook.command("register")
def register(
    url: Annotated[str, typer.Option(help="The ingress URL MLflow calls, ending in /webhooks/mlflow.")],
    name: Annotated[str, typer.Option(help="Webhook name in MLflow (updated if it exists).")] = DEFAULT_WEBHOOK_NAME,
) -> None:
    """Create or update the MLflow webhook pointing at the ingress, signed with the first configured secret.

    Example: PROMOTER_INGRESS_WEBHOOK_SECRETS=... promoter webhook register --url http://ingress:8090/webhooks/mlflow
    """
    from ingress.settings import IngressSettings
    from promoter_cli.errors import EXIT_REJECTED, explained_failures
    from runtime.settings import MLflowSettings

    with explained_failures():
        secrets, tracking_uri = IngressSettings().webhook_secrets, MLflowSettings().tracking_uri
    if not secrets:
        typer.echo("set PROMOTER_INGRESS_WEBHOOK_SECRETS to the secret the ingress verifies", err=True)
        raise typer.Exit(EXIT_REJECTED)
    done = register_webhook(tracking_uri, url, secrets[0].get_secret_value(), name=name)
    verb = "created" if done.created else "updated"
    typer.echo(f"{verb} webhook {name} ({done.webhook_id}) in {tracking_uri} -> {url}")


def main() -> None:
    """The ``promoter`` script. A failure no command explains is a bug: its traceback, then exit 5."""
    try:
        app()
    except Exception:
        import traceback

        from promoter_cli.errors import EXIT_BUG

        traceback.print_exc()
        typer.echo("this is a bug in promoter, not a problem with Kafka or the input: please report it", err=True)
        raise SystemExit(EXIT_BUG) from None
