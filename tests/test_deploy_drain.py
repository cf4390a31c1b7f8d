"""deploy/drain-wait.py, the Kubernetes preStop drain, run as the kubelet runs it (a process) against a
/metrics endpoint rendered by the server's own ``CallMetrics``: it returns when the last call ends, gives up
at its deadline, and lets a pod whose server is already gone stop at once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from voxpipe.records.model import CallRecord
from voxpipe.records.prometheus import CallMetrics

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "drain-wait.py"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def metrics() -> Iterator[tuple[CallMetrics, str]]:
    """A live ``CallMetrics`` served at ``http://127.0.0.1:PORT/metrics``, as ``voxpipe serve`` serves it."""
    calls = CallMetrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = calls.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield calls, f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def _drain(url: str, deadline: float) -> subprocess.Popen[str]:
    args = [sys.executable, str(SCRIPT), "--url", url, "--deadline", str(deadline), "--poll", "0.1"]
    return subprocess.Popen([*args, "--settle", "0.2"], stdout=subprocess.PIPE, text=True)  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input


def _record(deployment: str) -> CallRecord:
    now = datetime.now(UTC)
    return CallRecord(call_id="CA1", deployment=deployment, mode="cascade", started_at=now, duration_secs=1)


def test_waits_for_the_last_live_call_to_end(metrics: tuple[CallMetrics, str]) -> None:
    calls, url = metrics
    calls.call_started("front-desk")
    calls.call_started("sales")
    calls.call_ended(_record("sales"))
    started = time.monotonic()
    drain = _drain(url, deadline=30)
    time.sleep(1.0)
    assert drain.poll() is None, "returned while a call was live"
    calls.call_ended(_record("front-desk"))
    stdout, _ = drain.communicate(timeout=10)
    assert drain.returncode == 0 and "no live call" in stdout
    assert 1.0 <= time.monotonic() - started < 5


def test_gives_up_at_the_deadline(metrics: tuple[CallMetrics, str]) -> None:
    calls, url = metrics
    calls.call_started("front-desk")
    started = time.monotonic()
    stdout, _ = _drain(url, deadline=1.0).communicate(timeout=10)
    assert "deadline of 1 s reached with 1 live call(s)" in stdout
    assert 1.0 <= time.monotonic() - started < 4


def test_a_server_that_is_gone_has_nothing_to_drain() -> None:
    drain = _drain("http://127.0.0.1:9/metrics", deadline=30)
    stdout, _ = drain.communicate(timeout=10)
    assert drain.returncode == 0 and "does not answer" in stdout
