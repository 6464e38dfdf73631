"""``make e2e``: a real browser opens the running console and finds the served model and its version.

The local stack, a worker that promotes an iris classifier, one gateway and ``promoter console`` run as real
processes; headless Chromium (the Debian ``chromium`` package: ``apt-get install -y chromium``) renders the
Serving page until the model and ``v<version>`` are in its DOM, then saves ``.bench/console.png``.
Not part of ``make test``: it takes about a minute.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from deploy.stack.app_processes import console_spec
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, poll_until, stop_all, wait_all_ready
from tests.benchmarks.bench_files import BENCH_DIR, merge_figures
from tests.gateway_harness import promote, running_gateways
from tests.worker_harness import register_iris, running_worker

SCREENSHOT = BENCH_DIR / "console.png"
RENDER_BUDGET_MS = 15_000
FIND_TIMEOUT_S = 90.0


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit("headless Chromium is missing: apt-get install -y chromium (Debian), then make e2e again")
    return found


def browse(browser: str, url: str, *action: str) -> str:
    """Chromium renders ``url`` (running its JavaScript for up to RENDER_BUDGET_MS) and does ``action``."""
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000"]
    argv += [f"--virtual-time-budget={RENDER_BUDGET_MS}", *action, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


def main() -> None:
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="console-e2e-") as scratch:
        run_dir = Path(scratch)
        stack = LocalStack(run_dir / "stack")
        stack.start()
        try:
            model = f"e2e-iris-{uuid.uuid4().hex[:6]}"
            version = register_iris(stack.mlflow_tracking_uri, model)
            with running_worker(stack, run_dir / "worker") as worker:
                asyncio.run(promote(stack, worker, model, version))
                with running_gateways(stack, run_dir / "gateways", worker.env, ["gw-e2e"]) as (gateway,):
                    (port,) = free_ports(1)
                    env = {**stack.client_env(), **worker.topics, "PROMOTER_CONSOLE_GATEWAY_URLS": gateway.url}
                    spec = console_spec(env, port=port, run_dir=run_dir)
                    console = ManagedProcess(spec, run_dir / "console.log")
                    console.start()
                    try:
                        started = time.monotonic()
                        wait_all_ready([console])
                        url = f"http://127.0.0.1:{port}/serving"
                        wanted = (model, f"v{version}", "gw-e2e")

                        def shown() -> bool:
                            dom = browse(browser, url, "--dump-dom")
                            return all(text in dom for text in wanted)

                        if not poll_until(shown, FIND_TIMEOUT_S):
                            sys.exit(
                                f"the console's Serving page never showed {wanted} (log: {run_dir / 'console.log'})"
                            )
                        found_s = time.monotonic() - started
                        BENCH_DIR.mkdir(exist_ok=True)
                        browse(browser, url, f"--screenshot={SCREENSHOT.resolve()}")
                    finally:
                        stop_all([console])
        finally:
            stack.stop()
    merge_figures("console", {"browser_found_model_s": round(found_s, 2), "screenshot": str(SCREENSHOT)})
    print(f"the browser found {model} v{version} on the Serving page in {found_s:.1f} s; screenshot: {SCREENSHOT}")


if __name__ == "__main__":
    main()
