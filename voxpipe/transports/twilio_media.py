"""Twilio Media Streams on the server: ``POST /twiml`` answers ``<Connect><Stream>``, ``WS /media`` carries the call.

Twilio opens ``WS /{name}/media`` (its handshake signed over the public ``wss://`` URL); each socket is one
``MediaStreamCall`` in the Twilio ``Dialect``: the protocol (events, state machine, keypad entries, playout
marks) is ``voxpipe.telephony.media_streams``, the pipeline side ``media_transport``. A call's pipeline runs at
8 kHz on PCM16, so mu-law is only decoded and re-encoded (bit-exact, ``voxpipe.audio.g711``), never resampled.
When ``<Connect>`` ends Twilio posts ``/connect-action``, which dials a transfer's target or hangs up, or, for a
call that failed (``on_failure``), says the deployment's message first (``TwilioAccount.connect_action``); a warm
transfer's dial leg reports to ``/transfer-status`` (answered, or the caller is brought back: docs/calls.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, WebSocket
from loguru import logger
from starlette.background import BackgroundTask

from voxpipe.config.models import Deployment
from voxpipe.pipeline.host import CallHost
from voxpipe.pipeline.transfer import record_answered
from voxpipe.security.call_binding import CallBinding
from voxpipe.telephony import conversation_relay, twiml
from voxpipe.telephony.media_streams import StreamStart
from voxpipe.transports.admission import admit_socket
from voxpipe.transports.json_socket import POLICY_VIOLATION, JsonSocket
from voxpipe.transports.media_stream_call import Dialect, MediaStreamCall
from voxpipe.transports.media_transport import MediaStreamTransport
from voxpipe.transports.twilio_account import RESUME_SESSION, UNANSWERED, PendingTransfer, TwilioAccount
from voxpipe.transports.twilio_signatures import public_url


def stream_twiml(deployment: Deployment, form: dict[str, str], binding: CallBinding) -> str:
    """``<Connect><Stream url=wss://.../{name}/media>`` with the caller's numbers, the configured parameters and
    the token binding the stream to this webhook's CallSid (last: no configured parameter can replace it)."""
    parameters = {"from": form.get("From", ""), "to": form.get("To", "")}
    return twiml.stream_call(
        public_url(deployment, "media", websocket=True),
        public_url(deployment, "connect-action"),
        parameters | deployment.transport.twilio.stream_parameters | binding.parameters(form.get("CallSid", "")),
    )


def xml(body: str) -> Response:
    return Response(content=body, media_type="application/xml")


async def serve_media_stream(host: CallHost, twilio: TwilioAccount | None, socket: WebSocket, dialect: Dialect) -> None:
    """Serve one accepted media-stream WebSocket (Twilio's or the browser page's) until the call ends."""
    channel = JsonSocket(socket, "event", f"{dialect.name} socket [{host.deployment.name}]")
    realtime = host.deployment.mode == "realtime"

    def transport(call: MediaStreamCall, start: StreamStart) -> MediaStreamTransport:
        return MediaStreamTransport(call, dialect.audio, report_played=realtime)

    async def close_peer(reason: str) -> None:
        await channel.close(POLICY_VIOLATION if reason else 1000, reason)

    call = MediaStreamCall(host, twilio, dialect, channel.send, transport, close_peer)
    try:
        async for event in channel.messages():
            await call.receive(event)
            if call.closed.is_set():
                break
    finally:
        await call.close()
        await channel.close()


def add_routes(router: APIRouter, host: CallHost, twilio: TwilioAccount) -> None:
    """``WS /media`` (the stream Twilio opens after the ``/twiml`` webhook) and ``POST /connect-action``."""

    @router.websocket("/media")
    async def media(socket: WebSocket) -> None:
        if not await twilio.accept_signed(socket, "media"):
            return
        slot = await admit_socket(host, socket, None)  # the caller was counted at the webhook
        if slot is not None:
            async with slot:
                await serve_media_stream(host, twilio, socket, Dialect())

    @router.post("/connect-action")
    async def connect_action(request: Request) -> Response:
        form = await twilio.signed_form(request, "connect-action")
        if form is None:
            return Response(status_code=403)
        call_sid = form.get("CallSid", "")
        warm = conversation_relay.warm_handoff(form.get("HandoffData"))
        # A ConversationRelay session ended for a warm transfer (and the call did not fail): hold, ring the person.
        if warm is not None and call_sid not in twilio.endings:
            kept = {"to": form.get("To", ""), RESUME_SESSION: str(warm.get("session") or "")}
            transfer = PendingTransfer(str(warm["to"]), kept, str(warm.get("unanswered") or ""))
            hold = twilio.hold_and_dial(call_sid, warm, transfer)
            if hold is not None:
                return xml(hold)
        return xml(twilio.connect_action(call_sid, form.get("HandoffData")))

    @router.post("/transfer-status")
    async def transfer_status(request: Request) -> Response:
        form = await twilio.signed_form(request, "transfer-status")
        if form is None:
            return Response(status_code=403)
        call_id, status = request.query_params.get("call", ""), form.get("CallStatus", "")
        finished = twilio.transfer_status(call_id, status)
        outcome = None
        if finished is not None:
            transfer, ring_secs = finished
            answered = status not in UNANSWERED
            logger.info(f"[{host.deployment.name}] warm transfer of {call_id}: {status} after {ring_secs:g}s")
            if answered and host.bookkeeping.metrics is not None:
                host.bookkeeping.metrics.transfer_answered(host.deployment.name, ring_secs)
            if answered and host.bookkeeping.records is not None:  # after the answer (the record may be saving)
                record_id = transfer.stream_parameters.get(RESUME_SESSION) or call_id  # a relay's: its session
                outcome = BackgroundTask(record_answered, host.bookkeeping.records, record_id, status, ring_secs)
            if not answered:
                await twilio.bring_back(call_id, transfer, status, ring_secs)
        return Response(status_code=204, background=outcome)
