"""What a deployment's Twilio account gives its calls: signed requests, and the REST API for live calls.

A ``TwilioAccount`` checks ``X-Twilio-Signature`` on webhooks and WebSocket handshakes (``voxpipe.transports
.twilio_signatures``), binds each call's socket to its webhook (``voxpipe.security.call_binding``),
ends or transfers a live call through the REST API when account credentials are configured,
and remembers where a call's ``<Connect action>`` should dial once its stream ends. The web app makes one per
deployment; the serverless bridge worker makes one too (it hangs up and transfers the same way). No web
framework is imported here: requests and sockets are only read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from loguru import logger

from voxpipe.config.models import Deployment
from voxpipe.security.call_binding import PARAMETER, TTL_SECS, CallBinding, without_token
from voxpipe.security.limits import MAX_WEBHOOK_BYTES
from voxpipe.security.spent_tokens import MemorySpentTokens, SpentTokens
from voxpipe.security.tokens import TokenError
from voxpipe.sessions.base import StoreUnavailable
from voxpipe.telephony import conversation_relay, twiml, warm_transfer
from voxpipe.telephony.warm_transfer import (  # noqa: F401 — re-exported: the transports import them from here
    RESUME_SESSION,
    RETURN_RING_SECS,
    RETURN_SAY,
    RETURN_STATUS,
    UNANSWERED,
)
from voxpipe.transports.twilio_signatures import TwilioSignatures, public_url

if TYPE_CHECKING:
    from fastapi import Request, WebSocket


class BodyTooLarge(Exception):
    """A webhook body over ``MAX_WEBHOOK_BYTES`` (declared, or as it streamed in); the app answers 413."""


async def capped_body(request: Request, limit: int = MAX_WEBHOOK_BYTES) -> bytes:
    """The request's body, or ``BodyTooLarge`` as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge(f"declared body of {declared} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body over {limit} bytes")
    return bytes(body)


#: Makes a ``twilio.rest.Client`` from (account_sid, auth_token); tests point it at a local fake.
TwilioClientFactory = Callable[[str, str], Any]


def twilio_client(account_sid: str, auth_token: str) -> Any:
    from twilio.rest import Client

    return Client(account_sid, auth_token)


#: Where Twilio reports a relay call's recording (``voxpipe.transports.twilio_recordings``).
RECORDING_STATUS_PATH = "recording-status"


def relay_twiml(deployment: Deployment, parameters: dict[str, str] | None = None, *, resumed: bool = False) -> str:
    """``<Connect action=...><ConversationRelay url=wss://.../relay .../></Connect>`` from the YAML.

    ``parameters`` (the token binding the session to the webhook's CallSid, and for a caller back from a warm
    transfer what happened) become ``<Parameter>``s; a ``resumed`` conversation gets no second greeting. With
    ``recording.enabled`` Twilio records the call (its recording is Twilio's: voxpipe has no audio of a relay
    call) and reports it to ``/recording-status`` (``twilio_recordings``); a resumed call's recording is already
    running.
    """
    relay = deployment.transport.conversation_relay
    recorded = deployment.recording.enabled and not resumed
    return twiml.conversation_relay(
        public_url(deployment, "relay", websocket=True),
        public_url(deployment, "connect-action"),
        {
            "welcomeGreeting": None if resumed else deployment.agent.greeting,
            "language": relay.language,
            "interruptible": relay.interruptible,
            "dtmfDetection": relay.dtmf_detection,
            "ttsProvider": relay.tts_provider,
            "voice": relay.voice,
            "transcriptionProvider": relay.transcription_provider,
        },
        parameters,
        recording_status=public_url(deployment, RECORDING_STATUS_PATH) if recorded else None,
    )


class TwilioRest:
    """Ends or transfers a live call through Twilio's REST API (only when account credentials are configured)."""

    def __init__(self, client: Any):
        self._client = client  # twilio.rest.Client

    async def end_call(self, call_sid: str, *, transfer_to: str | None = None, message: str | None = None) -> None:
        """Hang up, or replace the call's TwiML: ``<Say>`` a ``message`` first, then ``<Dial>`` ``transfer_to``
        or hang up (``telephony.twiml.end_call``: the one way a call ends with an outcome)."""
        if transfer_to or message:
            await self.update(call_sid, twiml=twiml.end_call(message, transfer_to))
        else:
            await self.update(call_sid, status="completed")

    async def update(self, call_sid: str, **changes: Any) -> None:
        """Change a live call (its TwiML, or its status)."""
        try:
            await asyncio.to_thread(self._client.calls(call_sid).update, **changes)
        except Exception as exc:  # the call may already be over; never fail the server for it
            logger.warning(f"Twilio REST update of call {call_sid} failed: {exc}")

    async def create(self, **call: Any) -> bool:
        """Place a new call (a warm transfer's dial leg); ``False`` if Twilio refused it."""
        try:
            await asyncio.to_thread(self._client.calls.create, **call)
        except Exception as exc:
            logger.warning(f"Twilio REST call to {call.get('to')} failed: {exc}")
            return False
        return True


@dataclass(frozen=True)
class TransferRoute:
    """Where a warm transfer's dial leg reports, and where its caller comes back, when that is not this process:
    the serverless audio bridge's stack (its TwiML Lambda's ``/twiml/transfer-status``, and the bridge's URL)."""

    status_url: str  # https://.../twiml/transfer-status
    stream_url: str  # wss://... of the audio bridge


@dataclass
class PendingTransfer:
    """A warm transfer whose dial leg is ringing: enough to bring the caller back if nobody answers."""

    to: str
    stream_parameters: dict[str, str]
    unanswered: str
    started: float = field(default_factory=time.monotonic)


def _spent_tokens(deployment: Deployment) -> SpentTokens:
    """Where the deployment's spent binding tokens are remembered: beside its sessions when they are shared
    (Redis, DynamoDB: a fleet, the serverless bridge; SQLite: the workers of one host), else this process's
    memory."""
    sessions = deployment.sessions
    if sessions.store == "redis" and sessions.url:
        from voxpipe.sessions.redis_spent import RedisSpentTokens  # redis-py is optional: voxpipe[redis]

        return RedisSpentTokens(sessions.url)
    if sessions.store == "sqlite":
        from voxpipe.sessions.sqlite_spent import SQLiteSpentTokens

        return SQLiteSpentTokens(sessions.path)
    if sessions.store == "dynamodb" and sessions.table:
        from voxpipe.sessions.dynamodb_spent import DynamoDBSpentTokens

        return DynamoDBSpentTokens(sessions.table)
    return MemorySpentTokens()


#: Seconds a call's pending ``<Connect action>`` answer is kept: Twilio posts the webhook as soon as the stream
#: ends, so an answer still unclaimed after this belongs to a call that hung up (Twilio posts nothing then).
ACTION_TTL_SECS = 300.0


class ExpiringAnswers:
    """Call id -> what its ``<Connect action>`` answers: taken once (``pop``), and forgotten after ``ttl_secs``
    otherwise, so calls that hang up before the webhook leave nothing behind in a long-running server."""

    def __init__(self, ttl_secs: float = ACTION_TTL_SECS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_secs, self._clock = ttl_secs, clock
        self._answers: dict[str, tuple[float, str]] = {}  # call id -> (when set, answer), oldest first

    def __setitem__(self, call_id: str, answer: str) -> None:
        self._expire()
        self._answers.pop(call_id, None)  # (re-inserted last: the dict stays in order of time)
        self._answers[call_id] = (self._clock(), answer)

    def pop(self, call_id: str, default: str | None = None) -> str | None:
        self._expire()
        held = self._answers.pop(call_id, None)
        return held[1] if held is not None else default

    def __contains__(self, call_id: object) -> bool:
        self._expire()
        return call_id in self._answers

    def __len__(self) -> int:
        self._expire()
        return len(self._answers)

    def _expire(self) -> None:
        oldest = self._clock() - self.ttl_secs
        while self._answers and next(iter(self._answers.values()))[0] <= oldest:
            del self._answers[next(iter(self._answers))]


class TwilioAccount:
    """One deployment's Twilio side: signature checks, the REST client, and pending ``<Connect action>`` dials."""

    def __init__(
        self,
        deployment: Deployment,
        client_factory: TwilioClientFactory = twilio_client,
        *,
        answers_action: bool = True,
        serves_transfer_status: bool = False,
        transfer_route: TransferRoute | None = None,
    ):
        """``answers_action``: this process serves the ``<Connect action>`` webhook (the web app); the serverless
        bridge does not, so it ends a failed call through the REST API instead. ``serves_transfer_status``: this
        process answers ``/transfer-status`` (the web app does; the bridge does not), without which a warm transfer
        nobody answers would leave the caller on hold: cold then, unless ``transfer_route`` names who serves it (the
        bridge's stack)."""
        self.deployment = deployment
        self.answers_action = answers_action
        self.serves_transfer_status = serves_transfer_status
        self.transfer_route = transfer_route
        self.signatures = TwilioSignatures(deployment)
        self.bindings = {  # each transport's sockets are bound to the webhook's CallSid (its own namespace)
            transport: CallBinding.for_deployment(transport, self.signatures.enabled)
            for transport in ("twilio", "conversation_relay")
        }
        self.spent = _spent_tokens(deployment)
        twilio = deployment.transport.twilio
        token = twilio.auth_token.get_secret_value() if twilio.auth_token else ""
        self.rest = TwilioRest(client_factory(twilio.account_sid, token)) if twilio.account_sid and token else None
        self.handoffs = ExpiringAnswers()  # call id -> where <Connect action> dials once the stream ends
        self.endings = ExpiringAnswers()  # call id -> the TwiML <Connect action> answers for a failed call
        self.transfers: dict[str, PendingTransfer] = {}  # call id -> its ringing warm transfer
        self._dialling: set[asyncio.Task[None]] = set()

    async def bind(self, transport: str, call_sid: str, custom_parameters: Any) -> None:
        """Accept a socket's ``start`` / ``setup`` for ``call_sid`` if it brings the token this server's webhook
        gave that call, unspent (it is spent now: a captured copy opens nothing more), or raise ``TokenError``
        (``StoreUnavailable`` when the store of spent tokens cannot be reached)."""
        self.bindings[transport].verify(call_sid, custom_parameters)
        token = custom_parameters.get(PARAMETER) if isinstance(custom_parameters, dict) else None
        if token is None:  # unsigned (insecure: true): nothing was minted, nothing to spend
            return
        try:
            first = await self.spent.spend(str(token), TTL_SECS)
        except Exception as exc:  # the shared store is down: refuse rather than let a replay through
            raise StoreUnavailable(f"could not check that the token is unused: {exc!r}") from None
        if not first:
            raise TokenError(f"the {PARAMETER} was used already (a replayed start for this call)")

    async def close(self) -> None:
        await self.spent.close()

    async def carry_out(self, call_id: str, effect: str | None, target: str | None, message: str | None = None) -> None:
        """A media-stream call ended (by a tool's ``effect``): remember a transfer's target for the ``<Connect
        action>`` webhook, and end the live call, saying ``message`` first if there is one."""
        if effect is None:
            return
        if target:
            self.handoffs[call_id] = target  # the <Connect action> webhook dials it
        if self.rest is not None:
            await self.rest.end_call(call_id, transfer_to=target, message=message)

    async def fail(self, call_id: str, say: str, transfer_to: str | None) -> None:
        """A media-stream call cannot go on: the ``<Connect action>`` webhook (posted once the stream ends) says
        ``say``, then dials ``transfer_to`` or hangs up. A process that does not answer that webhook (the bridge)
        replaces the live call's TwiML with the same document through the REST API."""
        if self.answers_action:
            self.endings[call_id] = twiml.end_call(say, transfer_to)
        elif self.rest is not None:
            await self.rest.end_call(call_id, transfer_to=transfer_to, message=say)

    def connect_action(self, call_id: str, handoff_data: str | None) -> str:
        """What ``<Connect action>`` answers when a call's stream or relay session ended: a failed call's
        ending, else a dial to the pending (or handed-off) transfer target, else a hang-up."""
        ending = self.endings.pop(call_id, None)
        if ending is not None:
            self.handoffs.pop(call_id, None)
            return ending
        target = self.handoffs.pop(call_id, None) or conversation_relay.handoff_target(handoff_data)
        return twiml.dial(target) if target else twiml.hangup()

    async def warm_transfer(self, call_id: str, warm: dict[str, Any], transfer: PendingTransfer) -> bool:
        """Put a media-stream caller on hold and ring ``transfer.to``, who hears the summary first (docs/calls.md).

        ``False`` without REST credentials: there is no warm transfer then, and the caller transfers cold.
        """
        hold = self.hold_and_dial(call_id, warm, transfer)
        if hold is None or self.rest is None:
            return False
        await self.rest.update(call_id, twiml=hold)
        return True

    def hold_and_dial(self, call_id: str, warm: dict[str, Any], transfer: PendingTransfer) -> str | None:
        """The hold leg's TwiML for the caller (a conference, with the hold audio), the dial leg placed meanwhile.

        The dial leg is a new call whose TwiML says the summary, then joins the same conference; its status
        callbacks (``/transfer-status``) say whether it was answered. ``None`` without REST credentials.
        """
        if self.rest is None or not (self.serves_transfer_status or self.transfer_route):
            logger.warning(
                f"[{self.deployment.name}] warm transfer of {call_id} needs transport.twilio.account_sid and "
                "voxpipe serve's /transfer-status (or, on the bridge, the stack's): transferring cold"
            )
            return None
        if self.transfer_route is None:  # this process hears the dial leg's status
            self.transfers[call_id] = transfer
        task = asyncio.ensure_future(self._dial(self.rest, call_id, warm, transfer))
        self._dialling.add(task)
        task.add_done_callback(self._dialling.discard)
        return twiml.hold(warm_transfer.conference(call_id), warm.get("hold_audio"))

    async def _dial(self, rest: TwilioRest, call_id: str, warm: dict[str, Any], transfer: PendingTransfer) -> None:
        route = self.transfer_route
        if route is None:
            status_url = public_url(self.deployment, "transfer-status", query=urlencode({"call": call_id}))
        else:  # the stack's TwiML Lambda keeps nothing: the URL carries what it needs to bring the caller back
            kept = without_token(transfer.stream_parameters)
            status_url = f"{route.status_url}?{warm_transfer.status_query(call_id, transfer.unanswered, kept)}"
        caller_id = transfer.stream_parameters.get("to") or ""
        placed = await rest.create(**warm_transfer.dial_leg(call_id, transfer.to, caller_id, warm, status_url))
        if not placed and (route is not None or self.transfers.pop(call_id, None) is not None):
            await self.bring_back(call_id, transfer, "failed", 0.0)

    async def bring_back(self, call_id: str, transfer: PendingTransfer, status: str, ring_secs: float) -> None:
        """Nobody took the call: reconnect the caller to a new stream of the same call (its conversation resumes),
        whose parameters tell the agent what happened and what to say."""
        if self.rest is None:
            return
        returned = warm_transfer.returned(status, ring_secs, transfer.unanswered)
        relay = self.deployment.transport.twilio.connect == "conversation_relay"
        # The new socket must bind to this CallSid like any other; the first token may have expired: a fresh one.
        binding = self.bindings["conversation_relay" if relay else "twilio"].parameters(call_id)
        parameters = transfer.stream_parameters | returned | binding
        if relay:
            document = relay_twiml(self.deployment, parameters, resumed=True)
        elif self.transfer_route is not None:  # the bridge answers no <Connect action>
            document = twiml.stream_call(self.transfer_route.stream_url, None, parameters)
        else:
            document = twiml.stream_call(
                public_url(self.deployment, "media", websocket=True),
                public_url(self.deployment, "connect-action"),
                parameters,
            )
        await self.rest.update(call_id, twiml=document)

    def transfer_status(self, call_id: str, status: str) -> tuple[PendingTransfer, float] | None:
        """A dial leg's status callback: the finished transfer and its ring time, once answered or given up."""
        transfer = self.transfers.get(call_id)
        if transfer is None or status not in warm_transfer.FINAL:
            return None
        del self.transfers[call_id]
        return transfer, round(time.monotonic() - transfer.started, 3)

    async def signed_form(self, request: Request, path: str) -> dict[str, str] | None:
        """The webhook's form parameters, or ``None`` if its signature is not valid (``BodyTooLarge``: 413)."""
        form = dict(parse_qsl((await capped_body(request)).decode("utf-8", "replace"), keep_blank_values=True))
        signature = request.headers.get("x-twilio-signature")
        if not self.signatures.valid(path, signature, query=request.url.query, params=form):
            logger.warning(f"[{self.deployment.name}] rejected {path} webhook: bad or missing X-Twilio-Signature")
            return None
        return form

    async def accept_signed(self, socket: WebSocket, path: str) -> bool:
        """Accept a Twilio WebSocket whose handshake is signed over its public URL; refuse it (403) otherwise."""
        if not self.signatures.valid(path, socket.headers.get("x-twilio-signature"), websocket=True):
            logger.warning(f"[{self.deployment.name}] rejected {path} WebSocket: bad or missing X-Twilio-Signature")
            await socket.close(code=1008)  # before accept: the handshake is answered 403
            return False
        await socket.accept()
        return True
