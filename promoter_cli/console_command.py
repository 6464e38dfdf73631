"""``promoter console``: start the Streamlit console (``console/app.py``) in this process's place.

Streamlit is imported by the console process only, so ``promoter --help`` stays fast; without the
``console`` extra installed the command says how to get it.
"""

from __future__ import annotations

from typing import Annotated

import typer

INSTALL_HINT = "the console needs Streamlit: pip install 'model-promoter[console]'"


def streamlit_command(python: str, app_path: str, host: str, port: int) -> list[str]:
    return [
        python,
        "-m",
        "streamlit",
        "run",
        app_path,
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",  # no "Deploy" button: the console is an operations tool, not an app to publish
    ]


def console(
    allow_replay: Annotated[
        bool, typer.Option("--allow-replay", help="Show the Replay button on the Dead letters page.")
    ] = False,
) -> None:
    """Open the console: try a served model, see what is served where, its history, and the dead letters.

    Reads the topics (PROMOTER_KAFKA_*, PROMOTER_TOPIC_*) and calls the gateways in PROMOTER_CONSOLE_GATEWAY_URLS.

    Example: PROMOTER_CONSOLE_GATEWAY_URLS=http://127.0.0.1:8080 promoter console --allow-replay
    """
    import importlib.util
    import os
    import sys

    from promoter_cli.errors import EXIT_INVALID, explained_failures

    if importlib.util.find_spec("streamlit") is None:
        typer.echo(INSTALL_HINT, err=True)
        raise typer.Exit(EXIT_INVALID)
    from console.settings import ConsoleSettings
    from runtime.settings import KafkaSettings, TopicSettings

    with explained_failures():
        # the pages read Kafka's and the topics' settings too: a bad one is refused here, not on every page
        settings, _kafka, _topics = ConsoleSettings(), KafkaSettings(), TopicSettings()
    spec = importlib.util.find_spec("console.app")
    if spec is None or spec.origin is None:
        raise RuntimeError("console/app.py is not installed with promoter")
    env = {**os.environ, "PROMOTER_CONSOLE_ALLOW_REPLAY": "true" if allow_replay else "false"}
    typer.echo(f"console at http://{settings.host}:{settings.port} (replay {'on' if allow_replay else 'off'})")
    command = streamlit_command(sys.executable, spec.origin, settings.host, settings.port)
    sys.stdout.flush()
    os.execvpe(command[0], command, env)  # noqa: S606 - our own interpreter running Streamlit, no shell


def register(app: typer.Typer) -> None:
    app.command("console")(console)
