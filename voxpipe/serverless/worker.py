"""The audio bridge: browser or phone audio over API Gateway WebSocket -> Lambda -> SQS -> a long-lived worker.

Two halves in one module, because they share the queue's message format:

- ``handler``, the Lambda of the bridge's WebSocket API (no pipecat): ``$connect`` authorises the client (a
  valid ``X-Twilio-Signature`` over ``$VOXPIPE_BRIDGE_URL``, or a browser page's signed session token, which
  the same function hands out at ``POST /bridge/token``: ``bridge_access.py``), refuses it (503) unless the
  worker's fresh status says it takes calls (``bridge_status.py``), records the connection in
  DynamoDB and queues ``connect`` (with the token's session id, the browser call's id); ``$default`` queues
  each message; ``$disconnect`` deletes the connection's row and queues ``disconnect``. The queue is FIFO
  with one message group per connection, so each caller's messages stay in order while callers are served in
  parallel.
- ``python -m voxpipe.serverless.worker CONFIG``: the worker. It runs the deployment's pipeline (cascade or
  realtime) per connection on the call host (``voxpipe.pipeline.host``: session store, resumed conversations,
  tools and their effects, a ``CallRecord`` per call, the deployment's ``limits``) with an ``ApiGwTransport``,
  speaking the Media Streams events of the connection's dialect (Twilio, or the browser page's PCM16 with its
  transcript and latency events) through the same ``MediaStreamCall`` as ``voxpipe serve``. No web framework is
  imported. A connection ends on ``stop``, on ``disconnect``, when ``@connections`` answers 410, or when its
  DynamoDB row disappears (checked every ``session_check_secs``): the pipeline is cancelled, closing the provider
  sockets. On SIGTERM the worker drains as ``voxpipe serve`` does (``voxpipe.pipeline.drain``): no new call
  (``$connect`` is told at once), live calls run to their end for up to ``drain.deadline_secs``, then end through
  ``on_failure``, and the worker stops with the last one.
  A warm transfer is the server's (``TwilioAccount``), over Twilio's REST API: the caller's TwiML becomes the
  hold conference, the dial leg reports to the stack's ``/twiml/transfer-status`` (``serverless.transfer``),
  which brings a caller nobody took back to a new bridge stream of the same call (``serverless.transfer.bridge_route``).

Concurrent ``$default`` invocations can queue one connection's messages out of order: ``event_order`` puts them
back in order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxpipe.aws.conversations import ConversationTable
from voxpipe.security.browser_access import AccessRefused
from voxpipe.security.limits import LimitExceeded
from voxpipe.serverless import (
    QUEUE_ENV,
    TABLE_ENV,
    Connections,
    HandlerConfig,
    aws_client,
    bridge_status,
    connections_endpoint,
    event_body,
    handler_config,
    response,
)
from voxpipe.serverless.bridge_access import TOKEN_ROUTE, admit, token
from voxpipe.serverless.event_order import EventOrder
from voxpipe.telephony import json_messages

if TYPE_CHECKING:
    from voxpipe.config.models import Deployment
    from voxpipe.pipeline.host import CallHost, HostedCall
    from voxpipe.providers.registry import Registry
    from voxpipe.records.store import RecordStore
    from voxpipe.security.limits import CallSlot
    from voxpipe.serverless.apigw_transport import ApiGwTransport, LinkSettings
    from voxpipe.sessions import SessionStore
    from voxpipe.telephony.media_streams import StreamStart
    from voxpipe.transports.media_stream_call import Dialect, MediaStreamCall
    from voxpipe.transports.twilio_account import TransferRoute, TwilioAccount, TwilioClientFactory

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ the Lambda


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point of the bridge's WebSocket routes and of its page-token route (HTTP API)."""
    config = handler_config()
    request = event["requestContext"]
    if request.get("routeKey") == TOKEN_ROUTE:
        return token(config, event)
    connection_id, route = request["connectionId"], request["routeKey"]
    table = ConversationTable(config.setting(TABLE_ENV), config.ttl_secs)
    if route == "$connect":
        client = admit(config, event)
        if isinstance(client, AccessRefused):
            return response(client.status, str(client))
        refused = bridge_status.refusal(table.worker(config.setting(QUEUE_ENV)))
        if refused is not None:  # a caller let in now would hear silence: Twilio goes on with its next verb
            logger.warning("connection %s refused: %s", connection_id, refused)
            return response(503, refused)
        endpoint = connections_endpoint(request)
        table.bind_connection(
            connection_id, client.session_id or connection_id, endpoint=endpoint, client=client.client
        )
        session = {"session_id": client.session_id} if client.session_id else {}
        _enqueue(config, request, "connect", client=client.client, endpoint=endpoint, **session)
        if client.subprotocol:  # the browser offered subprotocols: the handshake must name the one chosen
            return {**response(200), "headers": {"Sec-WebSocket-Protocol": client.subprotocol}}
    elif route == "$disconnect":
        table.drop_connection(connection_id)
        _enqueue(config, request, "disconnect")
    else:
        body = event_body(event)
        if isinstance(body, bytes):
            return response(400, "binary frames are not part of the protocol; send JSON events")
        _enqueue(config, request, "message", body=body)
    return response(200)


def _enqueue(config: HandlerConfig, request: Mapping[str, Any], kind: str, **fields: Any) -> None:
    connection_id = request["connectionId"]
    message = {"event": kind, "connection_id": connection_id, "at": time.time(), **fields}
    aws_client("sqs").send_message(
        QueueUrl=config.setting(QUEUE_ENV),
        MessageBody=json.dumps(message, separators=(",", ":")),
        MessageGroupId=connection_id,
        MessageDeduplicationId=request.get("messageId") or request["requestId"],
    )


# ------------------------------------------------------------------------------------------------ the worker


def queued_at(message: Mapping[str, Any]) -> float | None:
    """When the Lambda queued ``message`` (its ``at``, epoch seconds) on this process's monotonic clock, no later
    than now (the Lambda's clock may run a little ahead); ``None`` without one."""
    at = message.get("at")
    if not isinstance(at, int | float):
        return None
    now = time.monotonic()
    return min(now, now - (time.time() - at))


@dataclass(frozen=True)
class BridgeSettings:
    """The worker's timing: SQS long poll, the session-row check, and how bot audio is sent."""

    poll_wait_secs: int = 20
    session_check_secs: float = 15.0
    link: LinkSettings | None = None  # None: ``LinkSettings()``


class BridgeCall:
    """One bridged connection: its events put back in order, then handed to a ``MediaStreamCall`` (the same
    adapter over ``telephony.media_streams`` as the server's), whose answers are posted through ``@connections``."""

    def __init__(
        self,
        host: CallHost,
        twilio: TwilioAccount,
        connection_id: str,
        endpoint: str,
        dialect: Dialect,
        settings: BridgeSettings,
        slot: CallSlot,
    ):
        """``slot``: the call's place under the deployment's limits, given back when the call ends."""
        from voxpipe.serverless.apigw_transport import LinkSettings, MediaLink
        from voxpipe.transports.media_stream_call import MediaStreamCall

        self.connection_id = connection_id
        self.connections = Connections(endpoint)
        self.dialect = dialect
        self.link_settings = settings.link or LinkSettings()
        self.link = MediaLink(
            self.connections, connection_id, dialect.audio, self.link_settings.frame_limit, self._gone
        )
        self.call = MediaStreamCall(
            host, twilio, dialect, self.link.post, self._transport, self._hang_up, carrier="apigw-"
        )
        self.link.attach(self.call)
        self.transport: ApiGwTransport | None = None
        self.order = EventOrder(self.call.receive, self)
        self._slot_held = asyncio.ensure_future(self._hold(slot))

    async def _hold(self, slot: CallSlot) -> None:
        try:
            await self.closed.wait()
        finally:
            await slot.release()

    @property
    def hosted(self) -> HostedCall | None:
        return self.call.hosted

    @property
    def closed(self) -> asyncio.Event:
        return self.call.closed

    def _transport(self, call: MediaStreamCall, start: StreamStart) -> ApiGwTransport:
        from voxpipe.serverless.apigw_transport import ApiGwTransport

        realtime = call.host.deployment.mode == "realtime"  # its service truncates what was not played
        self.transport = ApiGwTransport(self.link, self.dialect.audio, self.link_settings, report_played=realtime)
        return self.transport

    # -- receiving: in order (``EventOrder``), then the state machine

    async def receive(self, text: str, received_at: float | None = None) -> None:
        """One client message, as the Lambda queued it (``received_at``: then, on this process's monotonic clock;
        the stream places caller audio and returned marks by it, not by when the queue gave it to us)."""
        event = json_messages.read(text, "event", self)
        if event is not None:
            await self.order.receive(event, received_at)

    # -- ending

    async def _hang_up(self, reason: str) -> None:
        """The call ended by itself, or its start was refused (``reason``): disconnect the client (API Gateway
        then runs ``$disconnect``)."""
        await self.close(reason or "the call ended")
        await asyncio.to_thread(self.connections.close, self.connection_id)

    async def _gone(self) -> None:
        await self.close("the client's connection is gone (410)")

    async def close(self, reason: str) -> None:
        """End the call now: cancel the pipeline (its provider sockets close) and store the conversation."""
        self.order.close()
        if not self.closed.is_set():
            logger.info("%s: closing: %s", self, reason)
        await self.call.close()

    def __str__(self) -> str:
        return f"bridged {self.dialect.name} connection {self.connection_id}"


class BridgeWorker:
    """Serves every bridged connection of one deployment from the queue."""

    def __init__(
        self,
        deployment: Deployment,
        queue_url: str,
        table: str,
        settings: BridgeSettings | None = None,
        *,
        store: SessionStore | None = None,
        registry: Registry | None = None,
        records: RecordStore | None = None,
        twilio_client: TwilioClientFactory | None = None,
        transfer_route: TransferRoute | None = None,
    ):
        """``twilio_client`` makes the REST client that ends a failed Twilio call or transfers one (tests point it
        at a fake); ``transfer_route`` (``serverless.transfer.bridge_route``) makes a warm transfer warm (else cold)."""
        from voxpipe.pipeline.drain import Drain
        from voxpipe.pipeline.host import CallBookkeeping, CallHost
        from voxpipe.sessions import open_store
        from voxpipe.transports.twilio_account import TwilioAccount
        from voxpipe.transports.twilio_account import twilio_client as rest_client

        self.deployment = deployment
        self.queue_url = queue_url
        self.settings = settings or BridgeSettings()
        self.table = ConversationTable(table, deployment.sessions.ttl_secs)
        bookkeeping = CallBookkeeping(records)  # each call's CallRecord, as `voxpipe serve` keeps them
        self.host = CallHost(deployment, store or open_store(deployment.sessions), registry, bookkeeping)
        # A failed call ends through REST: the bridge does not answer the <Connect action> webhook.
        self.twilio = TwilioAccount(
            deployment, twilio_client or rest_client, answers_action=False, transfer_route=transfer_route
        )
        self.calls: dict[str, BridgeCall] = {}
        self.status = bridge_status.StatusBeacon(self.table, queue_url, deployment.limits, self.host.limits)
        self.calls_drain = Drain([self.host])
        self._sqs = aws_client("sqs")

    def _dialect(self, message: dict[str, Any]) -> Dialect | None:
        """Twilio's dialect, or the browser's bound to the session id of the token ``$connect`` checked."""
        from voxpipe.transports.media_stream_call import BrowserDialect, Dialect

        if message.get("client") == "twilio":
            return Dialect()
        session_id = message.get("session_id")
        return BrowserDialect(session_id) if isinstance(session_id, str) and session_id else None

    async def run(self, stop: asyncio.Event) -> None:
        """Take messages until ``stop`` is set, or a drain (``drain``) is over; then end every call. Meanwhile the
        records of calls that ended while the record store was down are saved (as ``voxpipe serve`` does from its
        start). The loop notices either within a long poll (``poll_wait_secs``)."""
        keeper = self.host.bookkeeping.keeper
        background = [asyncio.ensure_future(self._watch_rows(stop)), asyncio.ensure_future(self.status.run())]
        if keeper is not None:
            background.append(asyncio.ensure_future(keeper.save_spooled()))
        try:
            while not stop.is_set() and not self.calls_drain.done.is_set():
                reply = await asyncio.to_thread(
                    self._sqs.receive_message,
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self.settings.poll_wait_secs,
                )
                messages = reply.get("Messages", [])
                for message in messages:
                    try:
                        await self.dispatch(json.loads(message["Body"]))
                    except Exception:
                        logger.exception("a queued message failed: %.200s", message["Body"])
                if messages:
                    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
                    await asyncio.to_thread(self._sqs.delete_message_batch, QueueUrl=self.queue_url, Entries=entries)
        finally:
            for task in background:
                task.cancel()
            await self.status.stop_taking_calls()
            await self.close()

    async def drain(self) -> None:
        """Take no new call (``$connect`` is told at once) and let the live ones end, each for at most its
        deployment's ``drain.deadline_secs``, then through ``on_failure``; ``run`` returns once none is left."""
        await self.status.stop_taking_calls()
        self.calls_drain.begin()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """One queued message: a connection opened, sent an event, or closed."""
        kind, connection_id = message["event"], message["connection_id"]
        call = self.calls.get(connection_id)
        if kind == "connect":
            if call is not None and not call.closed.is_set():  # SQS delivers at least once: a redelivery
                logger.warning("connect for live connection %s ignored (a redelivery)", connection_id)
                return
            if self.calls_drain.draining:  # $connect let it in just before the status said so
                logger.warning("connect for %s refused: the worker is draining", connection_id)
                await asyncio.to_thread(Connections(message["endpoint"]).close, connection_id)
                return
            dialect = self._dialect(message)
            if dialect is None:  # queued by a Lambda that checked no token: nothing names the browser's session
                logger.warning("connect for %s without a session id refused", connection_id)
                await asyncio.to_thread(Connections(message["endpoint"]).close, connection_id)
                return
            try:
                slot = await self.status.admit()
            except LimitExceeded as refused:  # past a limit since the status $connect read: closed, not left silent
                self.host.refused(refused)
                await asyncio.to_thread(Connections(message["endpoint"]).close, connection_id)
                return
            self.calls[connection_id] = BridgeCall(
                self.host, self.twilio, connection_id, message["endpoint"], dialect, self.settings, slot
            )
        elif kind == "message":
            if call is None:
                logger.warning("message for unknown connection %s (a worker restart drops live calls)", connection_id)
                return
            await call.receive(message["body"], queued_at(message))
        elif kind == "disconnect" and call is not None:
            await self._end(connection_id, "the client disconnected")

    async def _end(self, connection_id: str, reason: str) -> None:
        call = self.calls.pop(connection_id, None)
        if call is not None:
            await call.close(reason)

    async def _watch_rows(self, stop: asyncio.Event) -> None:
        """Close calls whose connection row is gone (``$disconnect`` ran, or the row expired)."""
        while not stop.is_set():
            await asyncio.sleep(self.settings.session_check_secs)
            for connection_id, call in list(self.calls.items()):
                if call.closed.is_set():
                    self.calls.pop(connection_id, None)
                elif await asyncio.to_thread(self.table.connection, connection_id) is None:
                    await self._end(connection_id, "its session row was deleted")

    async def close(self) -> None:
        for connection_id in list(self.calls):
            await self._end(connection_id, "the worker is stopping")
        await self.host.store.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m voxpipe.serverless.worker CONFIG``: serve the bridge's queue until SIGINT (now) or SIGTERM
    (after a drain)."""
    from voxpipe.config.loader import load_deployment

    parser = argparse.ArgumentParser(prog="python -m voxpipe.serverless.worker", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="the deployment YAML file")
    parser.add_argument("--queue-url", default=os.environ.get(QUEUE_ENV), help=f"SQS queue (default ${QUEUE_ENV})")
    parser.add_argument("--table", default=os.environ.get(TABLE_ENV), help=f"DynamoDB table (default ${TABLE_ENV})")
    args = parser.parse_args(argv)
    if not args.queue_url or not args.table:
        parser.error(f"the queue and the table are required (--queue-url/${QUEUE_ENV}, --table/${TABLE_ENV})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from voxpipe.records.store import RecordStore
    from voxpipe.serverless.transfer import bridge_route

    deployment = load_deployment(args.config)
    # the store `voxpipe calls` and `voxpipe report` read (the deployment's `records`, else $VOXPIPE_RECORDS)
    records = RecordStore(deployment.records.target())
    route = bridge_route(os.environ)
    worker = BridgeWorker(deployment, args.queue_url, args.table, records=records, transfer_route=route)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        draining: list[asyncio.Task[None]] = []  # held: the loop keeps only weak references to tasks
        loop.add_signal_handler(signal.SIGTERM, lambda: draining.append(asyncio.ensure_future(worker.drain())))
        loop.add_signal_handler(signal.SIGINT, stop.set)  # at once
        await worker.run(stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
