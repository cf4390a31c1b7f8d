"""Shared plumbing for the fake vendor servers.

A `FakeServer` runs an aiohttp application (HTTP and WebSocket routes) on 127.0.0.1 with an
ephemeral port, in a background thread with its own event loop, so the same fake works from sync
tests, async tests (the test's loop is never blocked by the server) and a CLI subprocess.

Every fake keeps:
- `received`: a journal of what clients sent, parsed (one dict per request or message, with a
  `kind` key: "http", "ws_connect", "ws_message", "ws_binary", "ws_close");
- `errors`: the protocol violations it detected (each also answered with the vendor's real error);
- `connections`: how many distinct TCP connections it has accepted.

`Behaviour` holds the knobs every fake honours (auth, injected failures, delays, cut streams).
Every wait inside a fake is bounded, so a misbehaving client can never hang a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, web

#: Upper bound on any wait inside a fake (seconds).
MAX_WAIT_S = 30.0


@dataclass
class Behaviour:
    """Knobs common to all fakes; tests may change them while the fake runs.

    Attributes:
        api_key: the credential the fake expects (an OpenAI/Deepgram/ElevenLabs key, or the AWS
            access key id for Bedrock). None accepts any credential, but one must still be sent.
        fail_status: when set, the next `fail_count` requests/handshakes fail with this HTTP status
            (e.g. 429, 500, 503) and the vendor's real error body and headers.
        fail_count: how many requests `fail_status` applies to (decremented as they are used).
        first_byte_delay_s: delay before the first byte/event of each streamed reply.
        per_chunk_delay_s: delay between streamed chunks (SSE chunks, audio deltas, frames).
        cut_after_n_chunks: abruptly drop the connection (no close frame, no final chunk) after
            this many streamed chunks of a reply.
    """

    api_key: str | None = "test-key"
    fail_status: int | None = None
    fail_count: int = 1
    first_byte_delay_s: float = 0.0
    per_chunk_delay_s: float = 0.0
    cut_after_n_chunks: int | None = None


class StreamCut(Exception):
    """Raised inside a handler when `cut_after_n_chunks` dropped the connection."""


class FakeServer:
    """Base class: subclasses add routes in `setup_routes(app)`."""

    #: Short vendor name used in thread names and the CLI.
    name = "fake"

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.received: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.connections = 0
        self.port = 0
        self._lock = threading.Lock()
        self._transports: weakref.WeakSet[Any] = weakref.WeakSet()
        self._websockets: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._start_error: BaseException | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """HTTP base URL, e.g. http://127.0.0.1:41234 (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """WebSocket base URL, e.g. ws://127.0.0.1:41234."""
        return f"ws://127.0.0.1:{self.port}"

    def setup_routes(self, app: web.Application) -> None:
        """Add the vendor's routes (override)."""
        raise NotImplementedError

    def start(self) -> FakeServer:
        """Start serving in a background thread; returns self once the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.name} fake did not start within 10 s")
        if self._start_error is not None:
            raise RuntimeError(f"{self.name} fake failed to start") from self._start_error
        return self

    def stop(self) -> None:
        """Close open WebSockets, stop the server and join its thread (bounded)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):  # best effort; the loop is stopped below anyway
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._start_error = exc
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(middlewares=[self._count_connections], client_max_size=64 * 1024 * 1024)
        self.setup_routes(app)
        app.router.add_route("*", "/{tail:.*}", self.handle_unknown_route)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=0.5)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        for ws in list(self._websockets):
            with contextlib.suppress(Exception):  # the peer may already be gone
                await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown"), 1.0)
        if self._runner is not None:
            await asyncio.wait_for(self._runner.cleanup(), 5.0)

    @web.middleware
    async def _count_connections(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            with self._lock:
                if transport not in self._transports:
                    self._transports.add(transport)
                    self.connections += 1
        return await handler(request)

    async def handle_unknown_route(self, request: web.Request) -> web.StreamResponse:
        """Answer a path the vendor does not serve (override for the vendor's own 404 body)."""
        self.violation(f"unknown route {request.method} {request.path}")
        return web.json_response({"message": "Not Found"}, status=404)

    # ----------------------------------------------------------------- journal

    def record(self, kind: str, **data: Any) -> dict[str, Any]:
        """Append one entry to the journal (thread-safe) and return it."""
        entry = {"kind": kind, "time": time.monotonic(), **data}
        with self._lock:
            self.received.append(entry)
        return entry

    def violation(self, message: str) -> str:
        """Record a protocol violation the fake detected; returns the message."""
        with self._lock:
            self.errors.append(message)
        return message

    def entries(self, kind: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Snapshot of journal entries of `kind` whose top-level fields equal `match`."""
        with self._lock:
            items = list(self.received)
        return [
            e for e in items if (kind is None or e["kind"] == kind) and all(e.get(k) == v for k, v in match.items())
        ]

    def messages(self, type_: str | None = None) -> list[Any]:
        """Parsed WebSocket messages the clients sent, optionally only those with this `type` field."""
        out = [e["data"] for e in self.entries("ws_message")]
        if type_ is None:
            return out
        return [m for m in out if isinstance(m, dict) and m.get("type") == type_]

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """HTTP journal entries, optionally only for one path."""
        return [e for e in self.entries("http") if path is None or e["path"] == path]

    def reset(self) -> None:
        """Forget the journal, errors and connection count."""
        with self._lock:
            self.received.clear()
            self.errors.clear()
            self.connections = 0
            self._transports = weakref.WeakSet()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll `predicate` until truthy (returns its value) or raise TimeoutError."""
        deadline = time.monotonic() + min(timeout, MAX_WAIT_S)
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} fake: condition not met within {timeout} s")
            time.sleep(0.01)

    async def wait_for_async(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Async twin of `wait_for`, for use from an async test."""
        deadline = time.monotonic() + min(timeout, MAX_WAIT_S)
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} fake: condition not met within {timeout} s")
            await asyncio.sleep(0.01)

    # ----------------------------------------------------------------- behaviour helpers

    def take_failure(self) -> int | None:
        """Consume one injected failure: the status to fail this request with, or None."""
        with self._lock:
            b = self.behaviour
            if b.fail_status is None or b.fail_count <= 0:
                return None
            b.fail_count -= 1
            return b.fail_status

    def key_ok(self, presented: str | None) -> bool:
        """Whether a presented credential satisfies `behaviour.api_key`."""
        if not presented:
            return False
        return self.behaviour.api_key is None or presented == self.behaviour.api_key

    async def first_byte_delay(self) -> None:
        """Sleep `first_byte_delay_s` (bounded)."""
        if self.behaviour.first_byte_delay_s > 0:
            await asyncio.sleep(min(self.behaviour.first_byte_delay_s, MAX_WAIT_S))

    async def chunk_pacing(self, sent: int, request: web.Request) -> None:
        """Call after each streamed chunk: applies `per_chunk_delay_s` and `cut_after_n_chunks`.

        `sent` is the number of chunks of this reply already sent. Raises StreamCut after
        aborting the TCP connection when the cut point is reached.
        """
        cut = self.behaviour.cut_after_n_chunks
        if cut is not None and sent >= cut:
            self.abort(request)
            raise StreamCut
        if self.behaviour.per_chunk_delay_s > 0:
            await asyncio.sleep(min(self.behaviour.per_chunk_delay_s, MAX_WAIT_S))

    def abort(self, request: web.Request) -> None:
        """Drop the client's TCP connection at once (no close frame, no final chunk)."""
        self.record("cut", path=request.path)
        transport = request.transport
        if transport is not None:
            transport.abort()

    # ----------------------------------------------------------------- websocket helpers

    async def accept_ws(self, request: web.Request, protocols: tuple[str, ...] = ()) -> web.WebSocketResponse:
        """Complete the WebSocket handshake and track the socket for shutdown."""
        ws = web.WebSocketResponse(protocols=protocols, max_msg_size=16 * 1024 * 1024, autoping=True)
        await ws.prepare(request)
        self._websockets.add(ws)
        return ws

    def forget_ws(self, ws: web.WebSocketResponse) -> None:
        """Stop tracking a finished WebSocket."""
        self._websockets.discard(ws)

    async def send_json(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> bool:
        """Send one JSON text frame; False if the socket is gone."""
        if ws.closed:
            return False
        try:
            await ws.send_str(json.dumps(payload))
        except (ConnectionError, RuntimeError):
            return False
        return True

    def headers_of(self, request: web.Request) -> dict[str, str]:
        """Request headers as a plain dict with lower-case names (for the journal)."""
        return {k.lower(): v for k, v in request.headers.items()}


def run_cli(fake: FakeServer) -> None:
    """Run a fake in the foreground: print its URLs as one JSON line, serve until stdin closes."""
    import sys

    with fake:
        print(json.dumps({"name": fake.name, "url": fake.url, "ws_url": fake.ws_url, "port": fake.port}), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()
