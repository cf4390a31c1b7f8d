"""Twilio Media Streams, and the media-stream machinery the browser transport shares with it.

Twilio is the WebSocket client: ``connected`` -> ``start`` -> ``media`` / ``dtmf`` / ``mark`` ... -> ``stop``.
voxpipe answers with ``media``, ``mark`` and ``clear``. A call's pipeline runs at 8 kHz on PCM16, so mu-law
is only decoded and re-encoded (bit-exact, ``voxpipe.audio.g711``), never resampled.

What the caller heard: Twilio buffers the audio it is sent, so voxpipe sends a ``mark`` after each chunk of
bot audio and Twilio echoes it once the chunk has played (or at once, when a ``clear`` dropped it). Frames
the output transport passes downstream (the bot's text, the end of its response) are held until the mark
before them comes back, so the assistant aggregator writes into the conversation only what was played. On
barge-in voxpipe sends ``clear`` and drops what was held: the assistant's turn is cut to what the caller
heard. In realtime deployments ``BotAudioPlayedFrame`` goes upstream on every returned mark, for the realtime
service to truncate its server-side item (``conversation.item.truncate`` with the played milliseconds).

Each WebSocket is one ``MediaStreamCall``: a small state machine (awaiting start -> streaming -> stopped) over
a ``JsonSocket``, whose one receive primitive logs and skips malformed input and whose one send primitive
never raises. A ``Dialect`` says what differs between Twilio and the browser page: audio encoding and rate,
call ids, and how a call ends. The transport is testable without sockets (a ``MediaPeer`` of one's own).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import contextlib
import enum
import functools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response, WebSocket
from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMMessagesAppendFrame,
    OutputAudioRawFrame,
    StartFrame,
    SystemFrame,
    TTSStartedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from starlette.websockets import WebSocketDisconnect, WebSocketState
from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

from voxpipe.audio import g711
from voxpipe.config.models import Deployment
from voxpipe.pipeline.frames import BotAudioPlayedFrame
from voxpipe.providers.spec import AudioFormat
from voxpipe.server.signatures import public_url

if TYPE_CHECKING:
    from voxpipe.server.app import DeploymentHost, HostedCall

CHUNK_10MS = 4  # bot audio goes out in 40 ms chunks, one mark each
LEAD_SECS = 0.12  # how far ahead of real time audio may be sent (absorbs network jitter)
DRAIN_TIMEOUT_SECS = 5.0  # at the end of a call, how long to wait for the last marks
MAX_MESSAGE_CHARS = 64 * 1024  # a 20 ms media event is ~300 characters
DTMF_PAUSE_SECS = 1.5  # digits typed within this pause are one entry
END_REPLY_TIMEOUT_SECS = 15.0  # after end_call/transfer, how long the goodbye may take to play


class Malformed(ValueError):
    """A client event that cannot be used; logged and skipped, the call goes on."""


# ---------------------------------------------------------------------------------------------- playout


@dataclass
class _Mark:
    seq: int
    response: int
    end_ms: float  # bot audio of ``response`` once this chunk has played


class Playout:
    """Marks sent after bot audio chunks, and which came back: what the caller has actually heard."""

    def __init__(self) -> None:
        self._seq = 0
        self._response = 0
        self._response_ms = 0.0
        self._pending: deque[_Mark] = deque()
        self.acked_seq = 0
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def sent_seq(self) -> int:
        """Sequence number of the last mark sent (0: none yet)."""
        return self._seq

    def start_response(self) -> None:
        """The next audio starts a new bot response (played milliseconds count from 0)."""
        self._response += 1
        self._response_ms = 0.0

    def sent(self, duration_ms: float) -> str:
        """Record a chunk sent; returns the name of the mark to send after it."""
        self._seq += 1
        self._response_ms += duration_ms
        self._pending.append(_Mark(self._seq, self._response, self._response_ms))
        self.drained.clear()
        return str(self._seq)

    def acked(self, name: str) -> int | None:
        """A mark came back: returns the played milliseconds of the current response, ``None`` if unknown."""
        if not name.isdigit() or not self._pending or int(name) < self._pending[0].seq:
            return None  # not ours, or dropped by a clear
        played: _Mark | None = None
        while self._pending and self._pending[0].seq <= int(name):
            played = self._pending.popleft()
            self.acked_seq = played.seq
        if not self._pending:
            self.drained.set()
        return round(played.end_ms) if played and played.response == self._response else None

    def clear(self) -> None:
        """The peer was told to drop queued audio: pending marks will come back, but were not heard."""
        self._pending.clear()
        self.acked_seq = self._seq
        self.drained.set()


# ---------------------------------------------------------------------------------------------- transport


class MediaPeer(abc.ABC):
    """The send side a media-stream output needs; ``MediaStreamCall`` implements it over its WebSocket."""

    @abc.abstractmethod
    async def send_audio(self, pcm: bytes) -> bool:
        """Send a chunk of bot audio (PCM16 at the output rate); ``False`` if the peer is gone."""

    @abc.abstractmethod
    async def send_mark(self, name: str) -> None:
        """Send a mark after the audio sent so far."""

    @abc.abstractmethod
    async def send_clear(self) -> None:
        """Tell the peer to drop the audio it has not played yet."""

    @abc.abstractmethod
    def bot_stopped_speaking(self) -> None:
        """The bot's audio stopped (so a call can end after its goodbye)."""


class MediaStreamInput(BaseInputTransport):
    """Caller audio and keypad digits from the WebSocket into the pipeline."""

    def __init__(self, params: TransportParams):
        super().__init__(params)
        self.ready = asyncio.Event()

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self.ready.set()

    async def audio(self, pcm: bytes) -> None:
        await self.push_audio_frame(InputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1))


class MediaStreamOutput(BaseOutputTransport):
    """Bot audio to the WebSocket, paced at real time, with a mark after each chunk.

    Downstream frames wait in ``_held`` until the mark sent before them comes back (see the module doc).
    """

    def __init__(self, params: TransportParams, peer: MediaPeer, playout: Playout, report_played: bool):
        super().__init__(params)
        self._peer = peer
        self._playout = playout
        self._report_played = report_played
        self._held: deque[tuple[int, Frame]] = deque()
        self._push_lock = asyncio.Lock()
        self._next_play_at = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)  # every queued chunk is sent
        try:  # and, within reason, played
            await asyncio.wait_for(self._playout.drained.wait(), DRAIN_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning(f"{self}: the last marks did not come back within {DRAIN_TIMEOUT_SECS:g}s")

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        duration = len(frame.audio) / 2 / self.sample_rate
        if not await self._peer.send_audio(frame.audio):
            return False
        await self._peer.send_mark(self._playout.sent(duration * 1000))
        now = time.monotonic()
        self._next_play_at = max(now, self._next_play_at) + duration
        await asyncio.sleep(max(0.0, self._next_play_at - LEAD_SECS - now))
        return True

    async def write_transport_frame(self, frame: Frame) -> None:
        if isinstance(frame, TTSStartedFrame):
            self._playout.start_response()

    async def mark_returned(self, name: str) -> None:
        """A mark came back: tell upstream how much was played and release what the caller has now heard."""
        played_ms = self._playout.acked(name)
        if played_ms is not None and self._report_played:
            await super().push_frame(BotAudioPlayedFrame(played_ms=played_ms), FrameDirection.UPSTREAM)
        async with self._push_lock:
            while self._held and self._held[0][0] <= self._playout.acked_seq:
                await super().push_frame(self._held.popleft()[1])

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        if direction is FrameDirection.UPSTREAM:
            await super().push_frame(frame, direction)
            return
        async with self._push_lock:
            if isinstance(frame, (InterruptionFrame, EndFrame, CancelFrame)):
                if isinstance(frame, InterruptionFrame) and self._playout.acked_seq < self._playout.sent_seq:
                    await self._peer.send_clear()
                    self._playout.clear()
                await self._release_unheard()
            elif not isinstance(frame, SystemFrame) and (
                self._held or self._playout.acked_seq < self._playout.sent_seq
            ):
                self._held.append((self._playout.sent_seq, frame))
                return
            await super().push_frame(frame, direction)
        if isinstance(frame, BotStoppedSpeakingFrame):
            self._peer.bot_stopped_speaking()

    async def _release_unheard(self) -> None:
        """The rest will never be heard: drop it, except frames that must not be lost (tool results...)."""
        while self._held:
            _, frame = self._held.popleft()
            if not frame.interruptible:
                await super().push_frame(frame)


class MediaStreamTransport(BaseTransport):
    """A pipecat transport whose far end is a ``MediaPeer`` (a Twilio or browser media stream)."""

    def __init__(self, peer: MediaPeer, audio: AudioFormat, *, report_played: bool = False):
        """``report_played``: send ``BotAudioPlayedFrame`` upstream (for a realtime service's truncation)."""
        super().__init__()
        params = TransportParams(
            audio_in_enabled=True,
            audio_in_sample_rate=audio.sample_rate_in,
            audio_out_enabled=True,
            audio_out_sample_rate=audio.sample_rate_out,
            audio_out_10ms_chunks=CHUNK_10MS,
            audio_out_end_silence_secs=0,
        )
        self._input = MediaStreamInput(params)
        self._output = MediaStreamOutput(params, peer, Playout(), report_played)

    def input(self) -> MediaStreamInput:
        return self._input

    def output(self) -> MediaStreamOutput:
        return self._output


class DtmfCollector:
    """Keypad digits -> one user message per entry (a pause or ``#`` ends it), so the agent can act on them."""

    def __init__(self, deliver: Callable[[Frame], Awaitable[None]]):
        self._deliver = deliver
        self._digits: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def press(self, digit: str) -> None:
        """One key; raises ``Malformed`` for anything but 0-9, * and #."""
        try:
            KeypadEntry(digit)
        except ValueError:
            raise Malformed(f"not a keypad digit: {digit!r}") from None
        self._digits.append(digit)
        if self._timer is not None:
            self._timer.cancel()
        if digit == "#":
            await self.flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(DTMF_PAUSE_SECS, self._flush_soon)

    def _flush_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        if not self._digits:
            return
        entry, self._digits = "".join(self._digits), []
        message = {"role": "user", "content": f"(The caller pressed these keys on the phone keypad: {entry})"}
        await self._deliver(LLMMessagesAppendFrame(messages=[message], run_llm=True))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


# ---------------------------------------------------------------------------------------------- the call


class JsonSocket:
    """A WebSocket carrying JSON objects: one send primitive, and one receive primitive in which anything
    malformed (binary, oversized, not JSON, not an object with a string ``kind_key``) is logged and skipped."""

    def __init__(self, socket: WebSocket, kind_key: str, owner: object):
        self.socket = socket
        self.kind_key = kind_key
        self._owner = owner  # names the call in log lines
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> bool:
        """Send one JSON object; ``False`` once the socket is gone."""
        if self.socket.application_state is not WebSocketState.CONNECTED:
            return False
        try:
            async with self._lock:
                await self.socket.send_text(json.dumps(message, separators=(",", ":")))
            return True
        except (WebSocketDisconnect, RuntimeError, OSError):
            return False

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Each well-formed message, until the peer goes away."""
        while True:
            try:
                message = await self.socket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                logger.warning(
                    f"{self._owner}: binary WebSocket frame ignored ({len(message.get('bytes') or b'')} bytes)"
                )
                continue
            if len(text) > MAX_MESSAGE_CHARS:
                logger.warning(f"{self._owner}: oversized message ignored ({len(text)} characters)")
                continue
            try:
                parsed = json.loads(text)
            except ValueError:
                logger.warning(f"{self._owner}: malformed JSON ignored: {text[:80]!r}")
                continue
            if isinstance(parsed, dict) and isinstance(parsed.get(self.kind_key), str):
                yield parsed
            else:
                logger.warning(f"{self._owner}: message without a '{self.kind_key}' ignored: {text[:80]!r}")

    async def close(self) -> None:
        if self.socket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.socket.close()


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StreamStart:
    """What the ``start`` event tells: the call's id, the stream's id, and metadata to keep with the session."""

    call_id: str
    stream_sid: str
    caller_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Dialect:
    """What differs between media-stream peers. This base is Twilio Media Streams."""

    name = "twilio"
    audio = AudioFormat(sample_rate_in=8000, sample_rate_out=8000, encoding="mulaw")

    def decode(self, payload: bytes) -> bytes:
        return g711.decode(payload)

    def encode(self, pcm: bytes) -> bytes:
        return g711.encode(pcm)

    def parse_start(self, event: dict[str, Any]) -> StreamStart:
        start = field_of(event, "start", dict)
        parameters = start.get("customParameters") or {}
        if not isinstance(parameters, dict):
            raise Malformed("start.customParameters is not an object")
        return StreamStart(
            call_id=field_of(start, "callSid", str),
            stream_sid=field_of(event, "streamSid", str),
            caller_id=parameters.get("from"),
            metadata={"account_sid": start.get("accountSid"), "custom_parameters": parameters},
        )

    def heard(self, pcm: bytes) -> None:
        """The caller's audio as it arrives (a hook; Twilio's dialect needs none)."""

    async def said(self, call: MediaStreamCall, pcm: bytes) -> None:
        """The bot's audio as it leaves (a hook)."""

    async def on_turn(self, call: MediaStreamCall, role: str, text: str) -> None:
        """A turn entered the conversation (a hook)."""

    async def finish(self, call: MediaStreamCall, effect: str | None, arguments: dict[str, Any]) -> None:
        """The pipeline ended after a tool's ``end_call``/``transfer``: carry the effect out."""
        if call.start is None or effect is None:
            return
        host = call.host
        target = str(arguments.get("result", {}).get("to") or "") if effect == "transfer" else ""
        if target:
            host.handoffs[call.start.call_id] = target  # the <Connect action> webhook dials it
        rest = host.twilio_rest
        if rest is not None:
            await rest.end_call(call.start.call_id, transfer_to=target or None)


def field_of(event: dict[str, Any], name: str, kind: type) -> Any:
    value = event.get(name)
    if not isinstance(value, kind) or (kind is str and not value):
        raise Malformed(f"'{name}' is missing or not a {kind.__name__}")
    return value


class MediaStreamCall(MediaPeer):
    """One media-stream WebSocket, from ``start`` to ``stop`` (or a dropped connection)."""

    def __init__(self, host: DeploymentHost, socket: WebSocket, dialect: Dialect):
        self.host = host
        self.channel = JsonSocket(socket, "event", self)
        self.dialect = dialect
        self.state = StreamState.AWAITING_START
        self.start: StreamStart | None = None
        self.hosted: HostedCall | None = None
        self.transport: MediaStreamTransport | None = None
        self._dtmf: DtmfCollector | None = None
        self._effect: tuple[str, dict[str, Any]] | None = None
        self._bot_stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def send(self, event: dict[str, Any]) -> bool:
        """Send one event to the peer (``False`` once it is gone)."""
        return await self.channel.send(event)

    def _stream_event(self, event: str, **body: Any) -> dict[str, Any]:
        sid = self.start.stream_sid if self.start else ""
        return {"event": event, "streamSid": sid, **body}

    async def send_audio(self, pcm: bytes) -> bool:
        payload = base64.b64encode(self.dialect.encode(pcm)).decode("ascii")
        await self.dialect.said(self, pcm)
        return await self.send(self._stream_event("media", media={"payload": payload}))

    async def send_mark(self, name: str) -> None:
        await self.send(self._stream_event("mark", mark={"name": name}))

    async def send_clear(self) -> None:
        await self.send(self._stream_event("clear"))

    def bot_stopped_speaking(self) -> None:
        self._bot_stopped.set()

    async def run(self) -> None:
        """Serve the socket until the stream stops, the peer goes away or the pipeline ends."""
        try:
            async for event in self.channel.messages():
                try:
                    await self._handle(event["event"], event)
                except Malformed as problem:
                    logger.warning(f"{self}: {event['event']} event ignored: {problem}")
                if self.state is StreamState.STOPPED:
                    break
        finally:
            await self._finish()

    # -- the state machine

    async def _handle(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "connected":
            return
        if kind == "start":
            if self.state is not StreamState.AWAITING_START:
                raise Malformed("a second start on the same stream")
            await self._on_start(self.dialect.parse_start(event))
            return
        if kind == "stop":
            self.state = StreamState.STOPPED
            return
        if self.state is not StreamState.STREAMING or self.transport is None:
            raise Malformed(f"'{kind}' before 'start'")
        if kind == "media":
            await self._on_media(field_of(event, "media", dict))
        elif kind == "mark":
            await self.transport.output().mark_returned(str(field_of(event, "mark", dict).get("name", "")))
        elif kind == "dtmf":
            assert self._dtmf is not None
            await self._dtmf.press(str(field_of(event, "dtmf", dict).get("digit", "")))
        else:
            raise Malformed(f"unknown event '{kind}'")

    async def _on_start(self, start: StreamStart) -> None:
        session = await self.host.open_session(start.call_id, {"transport": self.dialect.name, **start.metadata})
        if session is None:
            raise Malformed(f"call id {start.call_id} belongs to another deployment")
        self.start = start
        realtime = self.host.deployment.mode == "realtime"
        self.transport = MediaStreamTransport(self, self.dialect.audio, report_played=realtime)
        self.hosted = self.host.start_call(
            self.transport,
            start.call_id,
            start.caller_id,
            self.dialect.audio,
            session,
            self._on_effect,
            functools.partial(self.dialect.on_turn, self),
        )
        self._dtmf = DtmfCollector(self.transport.input().push_frame)
        self.state = StreamState.STREAMING
        self._spawn(self._watch_pipeline())
        await self.transport.input().ready.wait()
        await self.hosted.begin()

    async def _on_media(self, media: dict[str, Any]) -> None:
        if media.get("track", "inbound") != "inbound":
            return
        try:
            payload = base64.b64decode(field_of(media, "payload", str), validate=True)
        except binascii.Error:
            raise Malformed("media.payload is not base64") from None
        assert self.transport is not None
        pcm = self.dialect.decode(payload)
        self.dialect.heard(pcm)
        await self.transport.input().audio(pcm)

    async def _on_effect(self, effect: str, arguments: dict[str, Any]) -> None:
        """A tool ended the call or handed it off: let the goodbye play, then end the pipeline."""
        self._effect = (effect, arguments)
        self._bot_stopped.clear()
        self._spawn(self._end_after_reply())

    async def _end_after_reply(self) -> None:
        try:
            await asyncio.wait_for(self._bot_stopped.wait(), END_REPLY_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning(f"{self}: no goodbye played within {END_REPLY_TIMEOUT_SECS:g}s; ending anyway")
        if self.hosted is not None:
            await self.hosted.pipeline.hang_up()

    async def _watch_pipeline(self) -> None:
        """The pipeline ended by itself (a tool's effect): carry the effect out and close the socket."""
        assert self.hosted is not None
        await self.hosted.done()
        effect, arguments = self._effect or (None, {})
        try:
            await self.dialect.finish(self, effect, arguments)
        finally:
            self.state = StreamState.STOPPED
            await self.channel.close()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self) -> None:
        self.state = StreamState.STOPPED
        if self._dtmf is not None:
            self._dtmf.close()
        if self.hosted is not None:
            await self.hosted.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await self.channel.close()

    def __str__(self) -> str:
        call = self.start.call_id if self.start else "(not started)"
        return f"{self.dialect.name} call {call} [{self.host.deployment.name}]"


# ---------------------------------------------------------------------------------------------- Twilio REST


class TwilioRest:
    """Ends or transfers a live call through Twilio's REST API (only when account credentials are configured)."""

    def __init__(self, client: Any):
        self._client = client  # twilio.rest.Client

    async def end_call(self, call_sid: str, *, transfer_to: str | None = None) -> None:
        """Hang up, or with ``transfer_to`` replace the call's TwiML with a ``<Dial>``."""
        if transfer_to:
            response = VoiceResponse()
            response.dial(transfer_to)
            changes: dict[str, Any] = {"twiml": str(response)}
        else:
            changes = {"status": "completed"}
        try:
            await asyncio.to_thread(self._client.calls(call_sid).update, **changes)
        except Exception as exc:  # the call may already be over; never fail the server for it
            logger.warning(f"Twilio REST update of call {call_sid} failed: {exc}")


# ---------------------------------------------------------------------------------------------- routes


def stream_twiml(deployment: Deployment, form: dict[str, str]) -> str:
    """``<Connect><Stream url=wss://.../{name}/media>`` with the caller's numbers and the configured parameters."""
    response = VoiceResponse()
    connect = Connect(action=public_url(deployment, "connect-action"))
    stream = Stream(url=public_url(deployment, "media", websocket=True))
    parameters = {"from": form.get("From", ""), "to": form.get("To", "")}
    for name, value in (parameters | deployment.transport.twilio.stream_parameters).items():
        stream.parameter(name=name, value=value)
    connect.append(stream)
    response.append(connect)
    return str(response)


def connect_action_twiml(target: str | None) -> str:
    """What Twilio does when ``<Connect>`` ends: dial a handoff target, or hang up."""
    response = VoiceResponse()
    if target:
        response.dial(target)
    else:
        response.hangup()
    return str(response)


async def signed_form(host: DeploymentHost, request: Request, path: str) -> dict[str, str] | None:
    """The webhook's form parameters, or ``None`` if its signature is not valid."""
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    signature = request.headers.get("x-twilio-signature")
    if not host.signatures.valid(path, signature, query=request.url.query, params=form):
        logger.warning(f"[{host.deployment.name}] rejected {path} webhook: bad or missing X-Twilio-Signature")
        return None
    return form


async def accept_signed(host: DeploymentHost, socket: WebSocket, path: str) -> bool:
    """Accept a Twilio WebSocket whose handshake is signed over its public URL; refuse it (403) otherwise."""
    if not host.signatures.valid(path, socket.headers.get("x-twilio-signature"), websocket=True):
        logger.warning(f"[{host.deployment.name}] rejected {path} WebSocket: bad or missing X-Twilio-Signature")
        await socket.close(code=1008)  # before accept: the handshake is answered 403
        return False
    await socket.accept()
    return True


def xml(body: str) -> Response:
    return Response(content=body, media_type="application/xml")


def add_routes(router: APIRouter, host: DeploymentHost) -> None:
    """``WS /media`` (the stream Twilio opens after the ``/twiml`` webhook) and ``POST /connect-action``."""

    @router.websocket("/media")
    async def media(socket: WebSocket) -> None:
        if await accept_signed(host, socket, "media"):
            await MediaStreamCall(host, socket, Dialect()).run()

    @router.post("/connect-action")
    async def connect_action(request: Request) -> Response:
        form = await signed_form(host, request, "connect-action")
        if form is None:
            return Response(status_code=403)
        handoff = _handoff_target(form.get("HandoffData"))
        return xml(connect_action_twiml(host.handoffs.pop(form.get("CallSid", ""), None) or handoff))


def _handoff_target(data: str | None) -> str | None:
    """ConversationRelay's ``HandoffData`` (JSON we sent in ``end``): the ``to`` of a transfer, if any."""
    try:
        target = json.loads(data or "{}").get("to")
    except (ValueError, AttributeError):
        return None
    return str(target) if target else None
