"""Run a voxpipe app under uvicorn on 127.0.0.1 (an ephemeral port) in a background thread, bounded in time."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

START_TIMEOUT_SECS = 30.0
STOP_TIMEOUT_SECS = 15.0


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a test that must know its server's origin before the app exists)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RunningServer:
    """``with RunningServer(app) as server:`` serves ``app`` until the block ends; ``server.url`` is http://..."""

    def __init__(self, app: Any, port: int = 0):
        """``port`` 0: an ephemeral one (``free_port()`` gives one to name in a deployment first)."""
        self.app = app
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws_max_size=1 << 20
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="voxpipe-test-server", daemon=True)
        self.port = 0

    def __enter__(self) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT_SECS)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"
