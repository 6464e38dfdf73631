"""On-call commands of ``promoter``: dead letters (``dlq list|show|replay``) and ``status``.

Everything is read from the topics (never by asking a service); every failure says what to do next.
The Kafka client and the event models are imported when a command runs, not with this module.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from promoter_cli.output import JsonOpt, render_table

if TYPE_CHECKING:
    from promoter_cli.dead_letter_log import DeadLetter, LetterFilter
    from promoter_cli.serving_status import AliasStatus, EndpointRow
    from schemas.prepared_version import ModelPreparedData

    # what `status` prints: the aliases, the endpoints, the prepared versions
    StatusView = tuple[list[AliasStatus], list[EndpointRow], list[ModelPreparedData]]

dlq = typer.Typer(help="Inspect and replay dead letters (failed promotion requests).", no_args_is_help=True)

DEFAULT_MAX_REPLAYS = 3
LIST_COLUMNS = ("time", "model", "target", "reason_code", "attempts", "source", "event_id", "dlq_offset", "replays")
STATUS_TIMEOUT_S = 60.0
PREPARED_JSON_FIELDS = {"model_name", "version", "triton_model_name", "expires_at", "request_event_id"}

ModelOpt = Annotated[str | None, typer.Option(help="Only letters of this registered model.")]
ReasonOpt = Annotated[str | None, typer.Option(help="Only this reason code, e.g. retries_exhausted.")]
SinceOpt = Annotated[str | None, typer.Option(help="Failed since: 2h, 30m, 1d or an ISO 8601 time.")]
UntilOpt = Annotated[str | None, typer.Option(help="Failed until: a duration ago or an ISO 8601 time.")]
EventOpt = Annotated[str | None, typer.Option("--event-id", help="Only the letter of this event id.")]
OffsetsOpt = Annotated[str | None, typer.Option(help="Dead-letter offsets: 120 or 100-200.")]


def _filter(
    model: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    event_id: str | None,
    offsets: str | None,
) -> LetterFilter:
    from promoter_cli.dead_letter_log import LetterFilter

    try:
        return LetterFilter.parse(
            model=model, reason=reason, since=since, until=until, event_id=event_id, offsets=offsets
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _letters(selection: LetterFilter) -> list[DeadLetter]:
    import asyncio

    from rich.console import Console

    from promoter_cli.dead_letter_log import read_dead_letters
    from promoter_cli.errors import explained_failures
    from runtime.settings import KafkaSettings, TopicSettings

    with explained_failures():
        topic, kafka = TopicSettings().promotion_dlq, KafkaSettings()
    with Console(stderr=True).status(f"reading {topic} ...", spinner="dots"), explained_failures():
        letters = asyncio.run(read_dead_letters(kafka, topic))
    return [letter for letter in letters if selection.matches(letter)]


@dlq.command("list")
def list_letters(
    model: ModelOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    event_id: EventOpt = None,
    offsets: OffsetsOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="Show the newest N letters in the table; 0 for all.")] = 200,
) -> None:
    """List dead letters, newest last (--json: every letter, one object per line).

    Example: promoter dlq list --model iris-clf --since 2h --reason retries_exhausted
    """
    letters = _letters(_filter(model, reason, since, until, event_id, offsets))
    if as_json:
        typer.echo("\n".join(json.dumps(letter.summary()) for letter in letters))
        return
    shown = letters[-limit:] if limit else letters
    typer.echo(render_table([letter.summary() for letter in shown], LIST_COLUMNS))
    if len(shown) < len(letters):
        typer.echo(f"showing the newest {len(shown)} of {len(letters)} letters: --limit 0 for all, --json for scripts")
    else:
        typer.echo(f"{len(letters)} dead letters")


def _find(reference: str, letters: list[DeadLetter]) -> DeadLetter:
    if reference.isdigit():
        matches = [letter for letter in letters if letter.offset == int(reference)]
    else:
        matches = [letter for letter in letters if letter.header("event-id") == reference]
    if not matches:
        typer.echo(f"no dead letter with event id or offset {reference!r}; `promoter dlq list` shows them", err=True)
        raise typer.Exit(1)
    if len(matches) > 1:
        where = ", ".join(f"{m.partition}:{m.offset}" for m in matches)
        typer.echo(f"{len(matches)} letters match {reference!r} ({where}); the newest is shown", err=True)
    return matches[-1]


@dlq.command("show")
def show(
    reference: Annotated[str, typer.Argument(help="An event id, or a dead-letter offset.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one dead letter: the original event, every diagnostic header, and what to do next.

    Example: promoter dlq show 6c1f0e2a-6d1e-4f39-9a8e-0f9d2b1c7e55
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from promoter_cli.dead_letter_log import LetterFilter

    letter = _find(reference, _letters(LetterFilter()))
    explained = letter.explained()
    if as_json:
        typer.echo(json.dumps(explained))
        return
    console = Console()
    console.rule(f"dead letter {letter.partition}:{letter.offset}")
    console.print_json(json.dumps(explained["event"]))
    headers = Table(show_header=False)
    for name, value in explained["diagnostics"].items():
        headers.add_row(Text(name), Text(value))
    console.print(headers)
    console.print(Text.assemble(("error: ", "bold"), explained["error"]))
    console.print(Text.assemble(("next step: ", "bold"), explained["next_step"]))


@dlq.command("replay")
def replay_letters(
    model: ModelOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    event_id: EventOpt = None,
    offsets: OffsetsOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed; publish nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    rate: Annotated[float | None, typer.Option(help="At most this many letters per second.")] = None,
    max_replays: Annotated[int, typer.Option(help="Refuse letters replayed this often already.")] = DEFAULT_MAX_REPLAYS,
    as_json: JsonOpt = False,
) -> None:
    """Republish selected dead letters to their source topic (same key and event id); audited.

    Example: promoter dlq replay --model iris-clf --reason retries_exhausted --since 1h --yes
    """
    import asyncio

    from rich.console import Console

    from promoter_cli.dead_letter_log import LetterFilter
    from promoter_cli.dead_letter_replay import replay
    from promoter_cli.errors import explained_failures
    from runtime.settings import KafkaSettings, TopicSettings

    selection = _filter(model, reason, since, until, event_id, offsets)
    if selection == LetterFilter() and not yes and not dry_run:
        typer.confirm("no filter given: replay EVERY dead letter?", abort=True)
    letters = _letters(selection)
    if not letters:
        typer.echo("no dead letter matches: nothing to replay", err=True)
        raise typer.Exit(1)
    if not dry_run and not yes:
        typer.confirm(f"replay {len(letters)} dead letters to their source topics?", abort=True)
    with Console(stderr=True).status("replaying ...") as status, explained_failures():
        report = asyncio.run(
            replay(
                letters,
                kafka=KafkaSettings(),
                topics=TopicSettings(),
                replayed_by=getpass.getuser(),
                max_replays=max_replays,
                rate_per_s=rate,
                dry_run=dry_run,
                progress=lambda done, total: status.update(f"replayed {done}/{total}"),
            )
        )
    verb = "would replay" if dry_run else "replayed"
    if as_json:
        for letter in report.replayed:
            typer.echo(json.dumps({**letter.summary(), "outcome": verb.replace(" ", "_")}))
        for letter, why in report.refused:
            typer.echo(json.dumps({**letter.summary(), "outcome": "refused", "why": why}))
    else:
        for letter in report.replayed:
            typer.echo(
                f"{verb} {letter.partition}:{letter.offset} {letter.model} {letter.target} ({letter.reason_code})"
            )
        for letter, why in report.refused:
            typer.echo(f"refused {letter.partition}:{letter.offset} {letter.model}: {why}", err=True)
        typer.echo(f"{verb} {len(report.replayed)}, refused {len(report.refused)}")
    if report.refused:
        raise typer.Exit(1)


def _print_status(view: StatusView, as_json: bool) -> None:
    from promoter_cli.serving_status import prepared_line

    rows, endpoints, prepared = view
    now = datetime.now(UTC)
    if as_json:
        document = {
            "time": now.isoformat(),
            "aliases": [asdict(row) for row in rows],
            "endpoints": [row.as_json() for row in endpoints],
            "prepared": [record.model_dump(mode="json", include=PREPARED_JSON_FIELDS) for record in prepared],
        }
        typer.echo(json.dumps(document))
        return
    typer.echo(f"{now:%H:%M:%S}")
    served = [row.line() for row in rows] or ["nothing is served yet"]
    typer.echo("\n".join(served + [prepared_line(record) for record in prepared] + [row.line() for row in endpoints]))


async def _status(watch: bool, as_json: bool) -> None:
    import asyncio

    from promoter_cli.serving_status import ServingStatus
    from runtime.settings import KafkaSettings, TopicSettings
    from runtime.topic_reading import caught_up

    topics = TopicSettings()
    state = ServingStatus()
    async with caught_up(KafkaSettings(), [topics.model_ready, topics.gateway_status], state.apply, STATUS_TIMEOUT_S):
        shown = (state.report(), state.endpoints(), state.prepared())
        _print_status(shown, as_json)
        while watch:
            await asyncio.sleep(1.0)  # poll: the re-render cadence; the data comes from the followed topics
            current = (state.report(), state.endpoints(), state.prepared())
            if current != shown:
                shown = current
                _print_status(shown, as_json)


def status(
    watch: Annotated[bool, typer.Option("--watch", help="Keep following the topics and print changes.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Per model and alias: the version that should be served, and how many live gateways serve it.

    Example: promoter status --watch   (iris-clf@champion v7 — 3/3 gateways)
    """
    import asyncio

    from promoter_cli.errors import EXIT_TIMEOUT, explained_failures

    try:
        with explained_failures():
            asyncio.run(_status(watch, as_json))
    except KeyboardInterrupt:
        return
    except TimeoutError as error:
        typer.echo(f"cannot read the serving state: {error}; is the broker overloaded?", err=True)
        raise typer.Exit(EXIT_TIMEOUT) from None


def register(app: typer.Typer) -> None:
    """Mount the on-call commands on ``promoter``."""
    app.add_typer(dlq, name="dlq")
    app.command("status")(status)
