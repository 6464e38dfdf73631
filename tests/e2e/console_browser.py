"""``make e2e``: a real browser opens the running console and finds the served model and its version.

The local stack, a worker that promotes an iris classifier, one gateway and ``promoter console`` run as real
processes. The system's Chromium (Debian's ``chromium`` package), driven by Playwright (the ``e2e`` extra; no
browser download: Playwright launches the system binary), opens the Serving page in real time, so Streamlit's
websocket connects and the page renders. It waits, with a deadline, until the model's heading and the line
"@champion should serve v<version> — 1/1 live gateways" are visible and Streamlit has finished the run, saves
``.bench/console.png``, and fails when the page at shot time is still Streamlit's loading skeleton, shows a
connection error, or the image is blank or flat (tests/e2e/screenshot_check.py). Not part of ``make test``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, ViewportSize, sync_playwright

from deploy.stack.app_processes import console_spec
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from tests.benchmarks.bench_files import BENCH_DIR, merge_figures
from tests.e2e.screenshot_check import placeholder_reason
from tests.gateway_harness import promote, running_gateways
from tests.worker_harness import register_iris, running_worker

SCREENSHOT = BENCH_DIR / "console.png"
FAILED_SCREENSHOT = BENCH_DIR / "console-failed.png"
ALIAS = "champion"
GATEWAY = "gw-e2e"
#: Deadline for the Serving page to show the model (Streamlit connects, reads the topics, renders).
FIND_TIMEOUT_S = 60.0
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
#: Streamlit's markers of a page that is not (yet) the app: the loading skeleton, the "Connection error" box,
#: and the status widget while the script still runs.
SKELETON = '[data-testid="stAppSkeleton"]'
CONNECTION_STATUS = '[data-testid="stConnectionStatus"]'
RUNNING = '[data-testid="stStatusWidgetRunningIcon"]'


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit("Chromium is missing: apt-get install -y chromium (Debian; `make e2e` does it as root), then again")
    return found


class PageNotShown(Exception):
    """The console's page did not show what it should, or showed a placeholder when shot."""


def served_line(version: int) -> str:
    """The Serving page's line for the alias once the one gateway routes the version (console/views/serving.py)."""
    return f"@{ALIAS} should serve v{version} — 1/1 live gateways"


def what_is_shown(page: Page, model: str, version: int) -> list[Locator]:
    """The model's heading and the alias's line with the version and the one gateway routing it.

    (The gateways' table is drawn on a canvas: its cells are not in the DOM.)
    """
    return [page.get_by_role("heading", name=model, exact=True), page.get_by_text(served_line(version), exact=True)]


def check_not_placeholder(page: Page, model: str, version: int) -> None:
    """Raise PageNotShown unless the page now shows the model and version, and no skeleton or connection error."""
    if page.locator(SKELETON).count():
        raise PageNotShown("the page is Streamlit's loading skeleton")
    if page.locator(CONNECTION_STATUS).is_visible():
        raise PageNotShown(f"Streamlit reports its connection: {page.locator(CONNECTION_STATUS).inner_text()!r}")
    for locator in what_is_shown(page, model, version):
        if not locator.is_visible():
            raise PageNotShown(f"{locator} is gone")


def find_and_shoot(page: Page, url: str, model: str, version: int) -> None:
    """Open ``url``, wait until the model and its version are shown and the run is over, save SCREENSHOT."""
    deadline_ms = FIND_TIMEOUT_S * 1000
    page.goto(url)
    for locator in what_is_shown(page, model, version):
        locator.wait_for(state="visible", timeout=deadline_ms)
    page.locator(RUNNING).wait_for(state="detached", timeout=deadline_ms)
    check_not_placeholder(page, model, version)
    page.screenshot(path=SCREENSHOT, full_page=True)
    check_not_placeholder(page, model, version)
    reason = placeholder_reason(SCREENSHOT)
    if reason is not None:
        raise PageNotShown(reason)


@contextmanager
def browser_page(executable: str) -> Iterator[Page]:
    """A page of the system's headless Chromium, driven by Playwright (no browser of Playwright's own)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport=VIEWPORT)
        finally:
            browser.close()


@contextmanager
def running_console(env: dict[str, str], run_dir: Path) -> Iterator[str]:
    """``promoter console`` on a free port, ready; yields its base URL."""
    (port,) = free_ports(1)
    console = ManagedProcess(console_spec(env, port=port, run_dir=run_dir), run_dir / "console.log")
    console.start()
    try:
        wait_all_ready([console])
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_all([console])


def main() -> None:
    executable = chromium()
    BENCH_DIR.mkdir(exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="console-e2e-") as scratch:
        run_dir = Path(scratch)
        stack = LocalStack(run_dir / "stack")
        stack.start()
        try:
            model = f"e2e-iris-{uuid.uuid4().hex[:6]}"
            version = register_iris(stack.mlflow_tracking_uri, model)
            with running_worker(stack, run_dir / "worker") as worker:
                asyncio.run(promote(stack, worker, model, version, ALIAS))
                with running_gateways(stack, run_dir / "gateways", worker.env, [GATEWAY]) as (gateway,):
                    env = {**stack.client_env(), **worker.topics, "PROMOTER_CONSOLE_GATEWAY_URLS": gateway.url}
                    with running_console(env, run_dir) as console_url, browser_page(executable) as page:
                        opened = time.monotonic()
                        try:
                            find_and_shoot(page, f"{console_url}/serving", model, version)
                        except (PlaywrightError, PageNotShown) as error:
                            page.screenshot(path=FAILED_SCREENSHOT, full_page=True)
                            log = (run_dir / "console.log").read_text(errors="replace")[-4000:]
                            sys.exit(
                                f"the console's Serving page never showed {model} v{version}: {error}\n"
                                f"what the browser saw: {FAILED_SCREENSHOT}; the console's log ends:\n{log}"
                            )
                        found_s = time.monotonic() - opened
        finally:
            stack.stop()
    total_s = time.monotonic() - started
    merge_figures(
        "console",
        {"browser_found_model_s": round(found_s, 2), "e2e_total_s": round(total_s, 1), "screenshot": str(SCREENSHOT)},
    )
    print(
        f"the browser found {model} v{version} on the Serving page {found_s:.1f} s after opening it "
        f"({total_s:.0f} s in all, the local stack included); screenshot: {SCREENSHOT}"
    )


if __name__ == "__main__":
    main()
