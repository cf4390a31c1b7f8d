"""A local API Gateway WebSocket API: invokes Lambda handlers with the real event shapes, serves ``@connections``.

No emulator of API Gateway WebSocket APIs exists on PyPI (``sam local`` has none and needs docker), and moto's
``apigatewaymanagementapi`` neither delivers messages nor ever answers 410, so this shim stands in for both:

- Clients connect to ``ws://127.0.0.1:PORT/{stage}``. The handshake becomes a ``$connect`` event (headers,
  query string, ``requestContext``); a non-2xx answer refuses the connection with that status, as API
  Gateway does, and a ``Sec-WebSocket-Protocol`` header in the answer is the subprotocol the handshake names.
  Every client message becomes a ``$default`` event (binary frames base64-encoded), invoked concurrently like
  API Gateway's invocations; a close becomes ``$disconnect``. ``page_token`` plays the bridge's HTTP API route.
- Limits: a client frame over 32 KB closes the connection with 1009; a connection idle for
  ``idle_timeout_secs`` (10 minutes by default) is closed with 1001 and disconnected.
- ``POST /{stage}/@connections/{id}`` (SigV4-signed, as botocore sends it) delivers ``Data`` to the client:
  410 ``GoneException`` for a closed or unknown connection, 413 ``PayloadTooLargeException`` over 128 KB, and
  over the 32 KB frame limit too (recorded as a violation: API Gateway would have to split such a message
  into several frames, which voxpipe's sender must do itself). ``GET`` describes a connection, ``DELETE``
  closes it.
- Handlers run in *containers*: subprocesses (``python tests/apigw_shim.py MODULE.FUNCTION``) that import the
  handler once and serve one invocation at a time. A busy container makes the shim start another (a cold
  start), so concurrent invocations run in separate processes, with no memory shared, as on Lambda.

``moto_server()`` starts moto in server mode for DynamoDB and SQS (and its own ``@connections``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import logging
import os
import secrets
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

INVOKE_TIMEOUT_SECS = 60.0
#: Modules a Lambda handler must never load (a cold start pays for them): each reply says which are loaded.
HEAVY_MODULES = ("pipecat", "pydantic", "pluggy", "fastapi", "loguru")


class _LambdaContext:
    """The attributes of the Lambda context object handlers commonly read."""

    def __init__(self, handler: str):
        self.function_name = handler
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + INVOKE_TIMEOUT_SECS

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def container_main(handler_path: str) -> None:
    """Serve events from stdin, one JSON line each, answering one JSON line each on the original stdout."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the handler's prints and logs go to stderr, like Lambda's log stream
    sys.stdout = sys.stderr
    # Lambda's Python runtime gives the root logger a handler (the level stays WARNING; loggers set their own).
    lambda_log = logging.StreamHandler(sys.stderr)
    lambda_log.setFormatter(logging.Formatter("[%(levelname)s]\t%(asctime)s\t%(name)s\t%(message)s"))
    logging.getLogger().addHandler(lambda_log)
    module_name, _, function_name = handler_path.rpartition(".")
    handler = getattr(importlib.import_module(module_name), function_name)
    for line in sys.stdin:
        try:
            reply = {"result": handler(json.loads(line), _LambdaContext(handler_path))}
        except Exception as exc:
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        reply["heavy"] = sorted(name for name in HEAVY_MODULES if name in sys.modules)
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


if __name__ == "__main__":  # a container: serve before importing what only the API side needs
    container_main(sys.argv[1])
    raise SystemExit(0)

from aiohttp import WSCloseCode, WSMsgType, web  # noqa: E402

from tests.fakes.base import FakeServer  # noqa: E402

FRAME_LIMIT = 32 * 1024
MESSAGE_LIMIT = 128 * 1024
IDLE_TIMEOUT_SECS = 600.0


# ------------------------------------------------------------------------------------------------ Lambda


@dataclass
class Invocation:
    """One handler invocation: its event, result (or error) and timing."""

    route: str
    event: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    cold: bool
    started: float  # time.monotonic()
    seconds: float
    heavy: list[str] = field(default_factory=list)  # HEAVY_MODULES loaded in the container after it


class Container:
    """One Lambda execution environment: a process that imported the handler and serves one event at a time."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.invocations = 0

    @classmethod
    async def start(cls, handler: str, env: dict[str, str], log: Path | None = None) -> Container:
        """``log``: the file the container's log stream (its stderr) is appended to (else the test's stderr)."""
        with contextlib.ExitStack() as files:
            stderr = files.enter_context(log.open("ab")) if log is not None else None
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).resolve()),
                handler,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
                limit=16 * 1024 * 1024,
            )
        return cls(process)

    async def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.invocations += 1
        self.process.stdin.write(json.dumps(event).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), INVOKE_TIMEOUT_SECS)
        if not line:
            raise RuntimeError(f"container exited with {await self.process.wait()}")
        return json.loads(line)

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class LambdaFunction:
    """A function's containers: an idle one serves an invocation, or a new one is started (a cold start)."""

    def __init__(
        self, handler: str, env: dict[str, str] | None = None, max_containers: int = 6, log: Path | None = None
    ):
        self.handler = handler
        self.log = log  # where every container's log lines go (read back by the redaction tests)
        self.env = {**os.environ, **(env or {})}
        self.max_containers = max_containers
        self.containers: list[Container] = []
        self._idle: list[Container] = []
        self._slots: asyncio.Semaphore | None = None

    async def invoke(self, event: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The container's reply (``{"result"}`` or ``{"error"}``) and whether the invocation was cold."""
        self._slots = self._slots or asyncio.Semaphore(self.max_containers)
        async with self._slots:
            cold = not self._idle
            container = self._idle.pop() if self._idle else await Container.start(self.handler, self.env, self.log)
            if cold:
                self.containers.append(container)
            try:
                reply = await container.invoke(event)
            except Exception:
                self.containers.remove(container)
                await container.stop()
                raise
            self._idle.append(container)
            return reply, cold

    async def stop(self) -> None:
        await asyncio.gather(*(container.stop() for container in self.containers))
        self.containers.clear()
        self._idle.clear()


class SqsEventSource:
    """A Lambda event source mapping for an SQS queue (moto), in a thread of its own: long-polls the queue and
    invokes ``function`` with each message as a one-record SQS event, concurrently, deleting the message unless
    the function reports it failed (``batchItemFailures``), as Lambda's poller does. ``invocations`` keeps each
    reply. ``with SqsEventSource(...):`` runs it."""

    def __init__(self, client: Any, queue_url: str, function: LambdaFunction):
        self.client = client
        self.queue_url = queue_url
        self.function = function
        self.invocations: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sqs-event-source", daemon=True)

    def __enter__(self) -> SqsEventSource:
        self._thread.start()
        self._poller = asyncio.run_coroutine_threadsafe(self._poll(), self._loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._poller.cancel()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _stop(self) -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.function.stop()

    async def _poll(self) -> None:
        while True:
            reply = await asyncio.to_thread(
                self.client.receive_message,
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
            )
            for message in reply.get("Messages", []):
                self._loop.create_task(self._deliver(message))

    async def _deliver(self, message: dict[str, Any]) -> None:
        record = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:" + self.queue_url.rsplit("/", 1)[-1],
            "awsRegion": "us-east-1",
        }
        reply, _ = await self.function.invoke({"Records": [record]})
        self.invocations.append(reply)
        failed = (reply.get("result") or {}).get("batchItemFailures") or "error" in reply
        if not failed:
            await asyncio.to_thread(
                self.client.delete_message, QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )


# ------------------------------------------------------------------------------------------------ the API


@dataclass
class _Connection:
    connection_id: str
    ws: web.WebSocketResponse
    connected_at: float
    last_active: float
    source_ip: str
    user_agent: str
    closed: bool = False


def _connection_id() -> str:
    return base64.b64encode(secrets.token_bytes(10)).decode()


def _request_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


class ApiGatewayShim(FakeServer):
    """An API Gateway WebSocket API whose routes invoke ``functions`` (route key -> ``LambdaFunction``).

    Route selection is ``$request.body.action``: a JSON message whose ``action`` names a route goes there,
    anything else to ``$default``. ``invocations`` keeps every invocation; ``posts`` every delivered message.
    """

    name = "apigw"

    def __init__(
        self,
        functions: dict[str, LambdaFunction],
        *,
        stage: str = "prod",
        api_id: str = "a1b2c3d4e5",
        idle_timeout_secs: float = IDLE_TIMEOUT_SECS,
    ):
        super().__init__()
        self.functions = functions
        self.stage = stage
        self.api_id = api_id
        self.domain_name = f"{api_id}.execute-api.us-east-1.amazonaws.com"
        self.idle_timeout_secs = idle_timeout_secs
        self.invocations: list[Invocation] = []
        self.clients: dict[str, _Connection] = {}  # open connections by id
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def endpoint(self) -> str:
        """The ``@connections`` endpoint URL (``$VOXPIPE_CONNECTIONS_URL``)."""
        return f"{self.url}/{self.stage}"

    @property
    def client_url(self) -> str:
        """Where clients connect."""
        return f"{self.ws_url}/{self.stage}"

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get(f"/{self.stage}", self.handle_client)
        app.router.add_route("*", f"/{self.stage}/@connections/{{connection_id}}", self.handle_connections)
        app.cleanup_ctx.append(self._idle_watch)

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._stop_functions(), self._loop)
            with contextlib.suppress(Exception):
                future.result(timeout=20)
        super().stop()

    async def _stop_functions(self) -> None:
        for connection in list(self.clients.values()):
            await connection.ws.close(code=WSCloseCode.GOING_AWAY)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await asyncio.gather(*(function.stop() for function in set(self.functions.values())))

    # -------------------------------------------------------------------------------------- events

    def _context(self, route: str, event_type: str, connection: _Connection, **extra: Any) -> dict[str, Any]:
        now = time.time()
        return {
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": secrets.token_urlsafe(12),
            "requestTime": _request_time(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": int(connection.connected_at * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": {"userAgent": connection.user_agent, "sourceIp": connection.source_ip},
            "requestId": secrets.token_urlsafe(12),
            "domainName": self.domain_name,
            "connectionId": connection.connection_id,
            "apiId": self.api_id,
            **extra,
        }

    def _headers(self, request: web.Request) -> dict[str, str]:
        return {
            **{name: value for name, value in request.headers.items() if name.lower() not in ("host", "connection")},
            "Host": self.domain_name,
            "X-Amzn-Trace-Id": f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}",
            "X-Forwarded-For": request.remote or "127.0.0.1",
            "X-Forwarded-Port": "443",
            "X-Forwarded-Proto": "https",
        }

    async def _invoke(self, route: str, event: dict[str, Any]) -> dict[str, Any] | None:
        function = self.functions.get(route) or self.functions.get("$default")
        if function is None:
            return {"statusCode": 200}
        started = time.monotonic()
        reply, cold = await function.invoke(event)
        invocation = Invocation(
            route,
            event,
            reply.get("result"),
            reply.get("error"),
            cold,
            started,
            time.monotonic() - started,
            reply.get("heavy", []),
        )
        with self._lock:
            self.invocations.append(invocation)
        if invocation.error:
            self.violation(f"{route} handler failed: {invocation.error}")
        return invocation.result

    def _spawn(self, route: str, event: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._invoke(route, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -------------------------------------------------------------------------------------- clients

    async def handle_client(self, request: web.Request) -> web.StreamResponse:
        now = time.time()
        connection = _Connection(
            connection_id=_connection_id(),
            ws=web.WebSocketResponse(max_msg_size=FRAME_LIMIT),  # replaced once $connect has answered
            connected_at=now,
            last_active=now,
            source_ip=request.remote or "127.0.0.1",
            user_agent=request.headers.get("User-Agent", ""),
        )
        headers = self._headers(request)
        event: dict[str, Any] = {
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "requestContext": self._context("$connect", "CONNECT", connection),
            "isBase64Encoded": False,
        }
        if request.query:
            event["queryStringParameters"] = dict(request.query)
            event["multiValueQueryStringParameters"] = {k: request.query.getall(k) for k in request.query}
        result = await self._invoke("$connect", event) or {}
        status = int(result.get("statusCode", 500))
        self.record("ws_connect", connection_id=connection.connection_id, status=status)
        if not 200 <= status < 300:
            return web.Response(status=status, text=result.get("body") or "Forbidden")
        # API Gateway answers the subprotocol the $connect route's response names (a client that offered
        # some and got none back drops the handshake, as browsers do).
        chosen = (result.get("headers") or {}).get("Sec-WebSocket-Protocol")
        ws = connection.ws = web.WebSocketResponse(max_msg_size=FRAME_LIMIT, protocols=(chosen,) if chosen else ())
        await ws.prepare(request)
        self.clients[connection.connection_id] = connection
        close_code = 1000
        async for message in ws:
            connection.last_active = time.time()
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            binary = message.type == WSMsgType.BINARY
            body = base64.b64encode(message.data).decode() if binary else message.data
            self.record("ws_message", connection_id=connection.connection_id, data=message.data)
            self._spawn(self._route(message.data), self._message_event(connection, body, binary))
        if ws.close_code is not None:
            close_code = ws.close_code
        await self._disconnect(connection, close_code, "Client disconnected" if close_code == 1000 else "")
        return ws

    def _route(self, data: str | bytes) -> str:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            action = json.loads(data).get("action")
            if action in self.functions:
                return action
        return "$default"

    def _message_event(self, connection: _Connection, body: str, binary: bool) -> dict[str, Any]:
        context = self._context("$default", "MESSAGE", connection, messageId=secrets.token_urlsafe(12))
        return {"requestContext": context, "body": body, "isBase64Encoded": binary}

    async def _disconnect(self, connection: _Connection, code: int, reason: str) -> None:
        if connection.closed:
            return
        connection.closed = True
        self.clients.pop(connection.connection_id, None)
        self.record("ws_close", connection_id=connection.connection_id, code=code)
        event = {
            "headers": {"Host": self.domain_name, "X-Amzn-Trace-Id": f"Root=1-{secrets.token_hex(12)}"},
            "requestContext": self._context(
                "$disconnect", "DISCONNECT", connection, disconnectStatusCode=code, disconnectReason=reason
            ),
            "isBase64Encoded": False,
        }
        self._spawn("$disconnect", event)

    async def _idle_watch(self, app: web.Application) -> AsyncIterator[None]:
        async def watch() -> None:
            while True:
                await asyncio.sleep(min(1.0, self.idle_timeout_secs / 10))
                for connection in list(self.clients.values()):
                    if time.time() - connection.last_active > self.idle_timeout_secs:
                        self.record("idle_timeout", connection_id=connection.connection_id)
                        await connection.ws.close(code=WSCloseCode.GOING_AWAY, message=b"Going away")

        task = asyncio.get_running_loop().create_task(watch())
        yield
        task.cancel()

    # -------------------------------------------------------------------------------------- @connections

    async def handle_connections(self, request: web.Request) -> web.StreamResponse:
        connection_id = request.match_info["connection_id"]
        data = await request.read()
        self.record("http", method=request.method, path=request.path, bytes=len(data), connection_id=connection_id)
        denied = self._unsigned(request)
        if denied is not None:
            return denied
        connection = self.clients.get(connection_id)
        if connection is None or connection.closed or connection.ws.closed:
            return _error(410, "GoneException", None)
        if request.method == "GET":
            iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat()  # noqa: E731
            return web.json_response(
                {
                    "ConnectedAt": iso(connection.connected_at),
                    "Identity": {"SourceIp": connection.source_ip, "UserAgent": connection.user_agent},
                    "LastActiveAt": iso(connection.last_active),
                }
            )
        if request.method == "DELETE":
            await connection.ws.close(code=WSCloseCode.OK)
            return web.Response(status=204)
        if request.method != "POST":
            return _error(405, "MethodNotAllowedException", "Method not allowed")
        if len(data) > MESSAGE_LIMIT:
            return _error(413, "PayloadTooLargeException", "Message too long")
        if len(data) > FRAME_LIMIT:
            self.violation(f"@connections message of {len(data)} bytes exceeds the 32 KB frame limit")
            return _error(413, "PayloadTooLargeException", "Message exceeds the 32 KB frame limit")
        connection.last_active = time.time()
        try:
            await connection.ws.send_str(data.decode("utf-8"))
        except UnicodeDecodeError:
            await connection.ws.send_bytes(data)
        except ConnectionError:
            return _error(410, "GoneException", None)
        self.record("post", connection_id=connection_id, data=data)
        return web.Response(status=200)

    def _unsigned(self, request: web.Request) -> web.Response | None:
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("AWS4-HMAC-SHA256 ") or "/execute-api/aws4_request" not in authorization:
            self.violation(f"@connections request not SigV4-signed for execute-api: {authorization[:80]!r}")
            return _error(403, "ForbiddenException", "Missing Authentication Token")
        return None

    # -------------------------------------------------------------------------------------- for tests

    def posts(self, connection_id: str | None = None) -> list[Any]:
        """Messages delivered through ``@connections`` (JSON-decoded when they are JSON)."""
        out = []
        for entry in self.entries("post"):
            if connection_id is None or entry["connection_id"] == connection_id:
                try:
                    out.append(json.loads(entry["data"]))
                except ValueError:
                    out.append(entry["data"])
        return out

    async def page_token(self, origin: str | None, route: str = "$connect") -> dict[str, Any]:
        """The answer of ``route``'s function (the bridge's) to a page's ``POST /bridge/token``: an HTTP API
        payload 2.0 event, invoked in the shim's containers (their pipes belong to the shim's loop)."""
        event = {
            "version": "2.0",
            "routeKey": "POST /bridge/token",
            "rawPath": "/bridge/token",
            "headers": {"origin": origin} if origin else {},
            "requestContext": {"routeKey": "POST /bridge/token", "http": {"method": "POST", "path": "/bridge/token"}},
            "isBase64Encoded": False,
        }
        assert self._loop is not None
        invoked = asyncio.run_coroutine_threadsafe(self.functions[route].invoke(event), self._loop)
        reply, _ = await asyncio.wrap_future(invoked)
        assert "result" in reply and not reply["heavy"], reply
        return reply["result"]

    def invoked(self, route: str) -> list[Invocation]:
        with self._lock:
            return [i for i in self.invocations if i.route == route]


def _error(status: int, error_type: str, message: str | None) -> web.Response:
    headers = {
        "x-amzn-ErrorType": error_type,
        "x-amzn-RequestId": str(uuid.uuid4()),
        "Date": format_datetime(datetime.now(UTC), usegmt=True),
    }
    return web.json_response({"message": message}, status=status, headers=headers)


# ------------------------------------------------------------------------------------------------ helpers


def aws_service(service: str, endpoint: str) -> Any:
    """A botocore client of ``service`` on moto at ``endpoint`` (moto takes any credentials)."""
    import botocore.session

    return botocore.session.get_session().create_client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="test-key",
        aws_secret_access_key="x",  # noqa: S106 — a made-up credential for a local fake; nothing real
    )


def aws_environment(**endpoints: str) -> dict[str, str]:
    """Dummy credentials and region, plus ``AWS_ENDPOINT_URL_<SERVICE>`` for each ``service=url`` given."""
    return {
        "AWS_ACCESS_KEY_ID": "test-key",  # the Bedrock fake's expected access key
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_REGION": "us-east-1",
        **{f"AWS_ENDPOINT_URL_{service.upper()}": url for service, url in endpoints.items()},
    }


async def wait_until(predicate: Callable[[], Any], timeout: float = 15) -> Any:
    """Poll ``predicate`` until it is truthy (its value is returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return value


# ------------------------------------------------------------------------------------------------ providers


def serverless_registry() -> Any:
    """The installed plugins, plus a stand-in ``bedrock`` llm provider when this checkout registers none.

    ``voxpipe deploy sam`` validates a deployment against the registry; the Lambda handlers never use it.
    """
    from pydantic import Field

    from voxpipe.providers.registry import discover
    from voxpipe.providers.spec import CloudOptions, Provider, hookimpl

    class BedrockOptions(CloudOptions):
        region: str | None = None
        endpoint_url: str | None = Field(None, description="Bedrock Runtime endpoint override.")
        temperature: float | None = None
        max_tokens: int | None = None

    class BedrockStandIn:
        @hookimpl
        def voxpipe_providers(self) -> list[Provider]:
            return [Provider(name="bedrock", kind="llm", options=BedrockOptions, build=lambda request: None)]

    registry = discover()
    if registry.get("llm", "bedrock") is None:
        registry.add_plugin(BedrockStandIn(), "tests", "0")
    return registry


def write_handler_config(folder: Path, deployment_yaml: str) -> Path:
    """Validate ``deployment_yaml`` and write its handler configuration, as ``voxpipe deploy sam`` does."""
    from voxpipe.serverless.deploy_config import handler_config, load_for_deploy

    source = folder / "deployment.yaml"
    source.write_text(deployment_yaml, encoding="utf-8")
    registry = serverless_registry()
    deployment, raw = load_for_deploy(source, {}, registry)
    path = folder / "voxpipe-handler.json"
    path.write_text(json.dumps(handler_config(deployment, raw, registry)), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ moto


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode on a free port of 127.0.0.1; yields its endpoint URL. State is reset on exit."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        # moto's backends are global to the process: without a reset, the next moto server (another test
        # module's) would find this one's tables and queues.
        reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310 — http://127.0.0.1
        urllib.request.urlopen(reset, timeout=10)  # noqa: S310 — the local moto server started above
        server.stop()
