"""An HTTP proxy that injects faults between a client under test and a real server (moto, for AWS).

Each request is forwarded unless ``fault(method, path)`` names a fault for it:
- ``"500"`` / ``"503"``: answered with that status (an S3-style error body; botocore retries either);
- ``"hang"``: nothing answered for 3 s (past the clients' read timeouts), then the connection closed;
- ``"cut"``: the connection closed without an answer;
- ``"pass"``: forwarded.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = Callable[[str, str], str]  # (method, path) -> "pass", "500", "503", "hang" or "cut"


class FaultyProxy:
    """An HTTP proxy to ``upstream`` that asks ``fault`` what to do with each request."""

    def __init__(self, upstream: str, fault: Fault):
        self.fault = fault
        host, port = upstream.removeprefix("http://").split(":")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.fault(self.command, self.path)
                if fault in ("500", "503"):
                    code = "SlowDown" if fault == "503" else "InternalError"
                    payload = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault in ("hang", "cut"):
                    if fault == "hang":
                        time.sleep(3)
                    self.close_connection = True
                    return
                upstream_conn = http.client.HTTPConnection(host, int(port), timeout=10)
                upstream_conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = upstream_conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
