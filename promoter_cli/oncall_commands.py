"""On-call commands of ``promoter``: dead letters (``dlq list|show|replay``) and ``status``.

Everything is read from the topics (never by asking a service); every failure says what to do next.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from promoter_cli.dead_letter_log import (
    NEXT_STEPS,
    DeadLetter,
    LetterFilter,
    parse_moment,
    parse_offsets,
    read_dead_letters,
)
from promoter_cli.dead_letter_replay import replay
from promoter_cli.errors import exit_unreachable, explained_failures
from promoter_cli.serving_status import ServingStatus
from runtime.settings import KafkaSettings, TopicSettings
from runtime.topic_replay import TopicReplayer

dlq = typer.Typer(help="Inspect and replay dead letters (failed promotion requests).", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

DEFAULT_MAX_REPLAYS = 3
LIST_COLUMNS = ("time", "model", "target", "reason_code", "attempts", "source", "event_id", "dlq_offset", "replays")
STATUS_TIMEOUT_S = 60.0

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
    try:
        return LetterFilter(
            model=model,
            reason=reason,
            since=parse_moment(since) if since else None,
            until=parse_moment(until) if until else None,
            event_id=event_id,
            offsets=parse_offsets(offsets) if offsets else None,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _letters(selection: LetterFilter) -> list[DeadLetter]:
    topic = TopicSettings().promotion_dlq
    with console.status(f"reading {topic} ...", spinner="dots"):
        try:
            letters = asyncio.run(read_dead_letters(KafkaSettings(), topic))
        except Exception as error:
            exit_unreachable(f"cannot read {topic}", error)
    return [letter for letter in letters if selection.matches(letter)]


@dlq.command("list")
def list_letters(
    model: ModelOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    event_id: EventOpt = None,
    offsets: OffsetsOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (all letters), for scripts.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Show the newest N letters in the table; 0 for all.")] = 200,
) -> None:
    """List dead letters, newest last.

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


def render_table(rows: list[dict[str, object]], columns: tuple[str, ...]) -> str:
    """A plain aligned table: fast for tens of thousands of rows, and greppable."""
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def _find(reference: str, letters: list[DeadLetter]) -> DeadLetter:
    if reference.isdigit():
        matches = [letter for letter in letters if letter.offset == int(reference)]
    else:
        matches = [letter for letter in letters if letter.header("event-id") == reference]
    if not matches:
        errors.print(f"no dead letter with event id or offset {reference!r}; `promoter dlq list` shows them")
        raise typer.Exit(1)
    if len(matches) > 1:
        where = ", ".join(f"{m.partition}:{m.offset}" for m in matches)
        errors.print(f"{len(matches)} letters match {reference!r} ({where}); the newest is shown")
    return matches[-1]


@dlq.command("show")
def show(reference: Annotated[str, typer.Argument(help="An event id, or a dead-letter offset.")]) -> None:
    """Show one dead letter: the original event, every diagnostic header, and what to do next.

    Example: promoter dlq show 6c1f0e2a-6d1e-4f39-9a8e-0f9d2b1c7e55
    """
    letter = _find(reference, _letters(LetterFilter()))
    console.rule(f"dead letter {letter.partition}:{letter.offset}")
    event = letter.event
    console.print_json(json.dumps(event) if event is not None else json.dumps(letter.value.decode(errors="replace")))
    headers = Table(show_header=False)
    for name, value in sorted(letter.diagnostics.items()):
        headers.add_row(name, value)
    console.print(headers)
    console.print(f"[bold]error:[/bold] {letter.header('reason') or '(no reason recorded)'}")
    console.print(f"[bold]next step:[/bold] {NEXT_STEPS.get(letter.reason_code, 'read the error above')}")


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
) -> None:
    """Republish selected dead letters to their source topic (same key and event id); audited.

    Example: promoter dlq replay --model iris-clf --reason retries_exhausted --since 1h --yes
    """
    selection = _filter(model, reason, since, until, event_id, offsets)
    if selection == LetterFilter() and not yes and not dry_run:
        typer.confirm("no filter given: replay EVERY dead letter?", abort=True)
    letters = _letters(selection)
    if not letters:
        errors.print("no dead letter matches: nothing to replay")
        raise typer.Exit(1)
    if not dry_run and not yes:
        typer.confirm(f"replay {len(letters)} dead letters to their source topics?", abort=True)
    user = getpass.getuser()
    with console.status("replaying ...") as status, explained_failures():
        report = asyncio.run(
            replay(
                letters,
                kafka=KafkaSettings(),
                topics=TopicSettings(),
                replayed_by=user,
                max_replays=max_replays,
                rate_per_s=rate,
                dry_run=dry_run,
                progress=lambda done, total: status.update(f"replayed {done}/{total}"),
            )
        )
    verb = "would replay" if dry_run else "replayed"
    for letter in report.replayed:
        console.print(
            f"{verb} {letter.partition}:{letter.offset} {letter.model} {letter.target} ({letter.reason_code})"
        )
    for letter, why in report.refused:
        errors.print(f"refused {letter.partition}:{letter.offset} {letter.model}: {why}")
    console.print(f"{verb} {len(report.replayed)}, refused {len(report.refused)}")
    if report.refused:
        raise typer.Exit(1)


def _render(status: ServingStatus) -> str:
    rows = status.report()
    served = [row.line() for row in rows] or ["nothing is served yet"]
    return "\n".join(served + status.endpoint_lines())


async def _status(watch: bool) -> None:
    kafka, topics = KafkaSettings(), TopicSettings()
    state = ServingStatus()
    replayer = TopicReplayer(kafka, [topics.model_ready, topics.gateway_status], state.apply)
    await replayer.start()
    try:
        await replayer.wait_caught_up(STATUS_TIMEOUT_S)
        shown = _render(state)
        console.print(f"[dim]{datetime.now(UTC):%H:%M:%S}[/dim]\n{shown}")
        while watch:
            await asyncio.sleep(1.0)  # re-render cadence; the data comes from the followed topics
            current = _render(state)
            if current != shown:
                shown = current
                console.print(f"[dim]{datetime.now(UTC):%H:%M:%S}[/dim]\n{shown}")
    finally:
        await replayer.stop()


def status(
    watch: Annotated[bool, typer.Option("--watch", help="Keep following the topics and print changes.")] = False,
) -> None:
    """Per model and alias: the version that should be served, and how many live gateways serve it.

    Example: promoter status --watch   (iris-clf@champion v7 — 3/3 gateways)
    """
    try:
        asyncio.run(_status(watch))
    except KeyboardInterrupt:
        return
    except (TimeoutError, RuntimeError) as error:
        exit_unreachable("cannot read the serving state", error)


def register(app: typer.Typer) -> None:
    """Mount the on-call commands on ``promoter``."""
    app.add_typer(dlq, name="dlq")
    app.command("status")(status)
