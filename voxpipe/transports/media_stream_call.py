"""One media-stream call, whatever carries its events: the server's WebSocket or the serverless bridge's queue.

A ``MediaStreamCall`` is the adapter between the protocol (``telephony.media_streams.MediaStream``, which it
drives with each event and which answers through the carrier's send callback) and the call host
(``pipeline.host.CallHost``, which runs the measured pipeline). It opens the session on ``start``, feeds caller
audio and keypad entries into the pipeline, sends the bot's audio (``MediaPeer``), lets a tool's goodbye play
before ending the call, carries out ``end_call``/``transfer``, and closes everything once. The carrier only
delivers events (``receive``), says how bot audio leaves (``make_transport``) and how the peer is closed.

A ``Dialect`` says what differs between media-stream peers: audio encoding and rate, call ids, what the peer
is told besides audio, and how a call ends. The base is Twilio Media Streams; ``BrowserDialect`` is the
browser page's (PCM16, with transcript and latency events), on the server and on the serverless bridge alike,
which is why it lives here and not beside the page's routes (``browser``, which needs the web framework).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from pipecat.frames.frames import LLMMessagesAppendFrame

from voxpipe.audio import g711
from voxpipe.pipeline.failure import store_failure
from voxpipe.pipeline.host import CallHost, HostedCall
from voxpipe.pipeline.latency import first_audible, last_audible
from voxpipe.providers.spec import AudioFormat
from voxpipe.records.model import CallFailure
from voxpipe.security.call_binding import without_token
from voxpipe.security.limits import RealTimeBudget
from voxpipe.security.tokens import TokenError
from voxpipe.sessions import StoreUnavailable
from voxpipe.telephony import media_streams
from voxpipe.telephony.media_streams import Malformed, MediaStream, Send, StreamStart, field_of
from voxpipe.transports.media_transport import MediaPeer, MediaTransport
from voxpipe.transports.twilio_account import (
    RETURN_RING_SECS,
    RETURN_SAY,
    RETURN_STATUS,
    PendingTransfer,
    TwilioAccount,
)

END_REPLY_TIMEOUT_SECS = 15.0  # after end_call/transfer, how long the goodbye may take to play


class Dialect:
    """What differs between media-stream peers. This base is Twilio Media Streams."""

    name = "twilio"
    audio = AudioFormat(sample_rate_in=8000, sample_rate_out=8000, encoding="mulaw")

    def decode(self, payload: bytes) -> bytes:
        return g711.decode(payload)

    def encode(self, pcm: bytes) -> bytes:
        return g711.encode(pcm)

    def parse_start(self, event: dict[str, Any]) -> StreamStart:
        return media_streams.parse_start(event)

    async def authorize(self, call: MediaStreamCall, start: StreamStart) -> None:
        """``TokenError`` if ``start`` may not open a call: it must carry the token the signed webhook's TwiML
        gave its CallSid (``voxpipe.security.call_binding``), not spent by another socket yet."""
        if call.twilio is not None:
            await call.twilio.bind(self.name, start.call_id, start.metadata.get("custom_parameters"))

    def heard(self, pcm: bytes) -> None:
        """The caller's audio as it arrives (a hook; Twilio's dialect needs none)."""

    async def said(self, call: MediaStreamCall, pcm: bytes) -> None:
        """The bot's audio as it leaves (a hook)."""

    async def on_turn(self, call: MediaStreamCall, role: str, text: str) -> None:
        """A turn entered the conversation (a hook)."""

    keeps_call_on_warm_transfer = False  # a page has nobody to hand over to: it says who would, and goes on

    async def fail(self, call: MediaStreamCall, failure: CallFailure) -> None:
        """The call cannot go on: once the stream ends, Twilio's ``<Connect action>`` gets ``<Say>`` then
        ``<Dial>`` or ``<Hangup>`` (Twilio's own voice: this works when the TTS is what died); the serverless
        bridge, which does not answer that webhook, updates the live call through the REST API."""
        if call.stream.start is not None and call.twilio is not None:
            await call.twilio.fail(call.stream.start.call_id, failure.say, failure.transfer_to)
            if call.twilio.answers_action:  # Twilio posts that webhook as the stream closes: close it now, not
                await call.close_peer()  # once every provider task has let go of the cancelled pipeline

    async def finish(self, call: MediaStreamCall, effect: str | None, arguments: dict[str, Any]) -> None:
        """The pipeline ended after a tool's ``end_call``/``transfer``: carry the effect out."""
        start = call.stream.start
        if start is None or effect is None or call.twilio is None:
            return
        target = str((arguments.get("result") or {}).get("to") or "") if effect == "transfer" else ""
        warm = arguments.get("warm")
        if target and warm is not None:
            parameters = {k: str(v) for k, v in (start.metadata.get("custom_parameters") or {}).items()}
            kept = {k: v for k, v in parameters.items() if k not in (RETURN_STATUS, RETURN_RING_SECS, RETURN_SAY)}
            if await call.twilio.warm_transfer(start.call_id, warm, PendingTransfer(target, kept, warm["unanswered"])):
                return
        await call.twilio.carry_out(start.call_id, effect, target or None)


TransportFactory = Callable[["MediaStreamCall", StreamStart], MediaTransport]


class MediaStreamCall(MediaPeer):
    """One media stream, from ``start`` to its end (``stop``, the peer gone, or the pipeline ended)."""

    def __init__(
        self,
        host: CallHost,
        twilio: TwilioAccount | None,
        dialect: Dialect,
        send: Send,
        make_transport: TransportFactory,
        close_peer: Callable[[str], Awaitable[None]],
        *,
        carrier: str = "",
    ):
        """``close_peer(reason)`` closes the peer (``reason`` empty: the call ended; else why the stream was
        refused). ``carrier`` prefixes the session's transport name (``apigw-`` for the bridge)."""
        self.host = host
        self.twilio = twilio
        self.dialect = dialect
        self.stream = MediaStream(send, self, dialect.parse_start, owner=self)
        self.hosted: HostedCall | None = None
        self.transport: MediaTransport | None = None
        self._send = send
        self._make_transport = make_transport
        self._close_peer = close_peer
        self._carrier = carrier
        self._effect: tuple[str, dict[str, Any]] | None = None
        self._bot_stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._audio_budget = RealTimeBudget()  # a peer cannot feed the STT faster than anyone speaks
        self._drop_logged = 0.0  # seconds of dropped audio when that was last logged
        self.closed = asyncio.Event()

    async def receive(self, event: dict[str, Any], received_at: float | None = None) -> None:
        """One well-formed event from the peer (``received_at``: when the carrier got it, if not now)."""
        await self.stream.receive(event, received_at)

    async def send(self, event: dict[str, Any]) -> bool:
        """Send one event as is (a dialect's extras: transcripts, latency, the end); ``False`` once gone."""
        return await self._send(event)

    # -- what the stream tells (telephony.media_streams.StreamHandler)

    async def started(self, start: StreamStart) -> None:
        metadata = {"transport": self._carrier + self.dialect.name, **start.metadata}
        if isinstance(metadata.get("custom_parameters"), dict):
            metadata["custom_parameters"] = without_token(metadata["custom_parameters"])
        try:
            await self.dialect.authorize(self, start)
            session = await self.host.open_session(start.call_id, metadata)
        except TokenError as problem:
            await self._refuse(f"start refused: {problem}")
            return
        except StoreUnavailable as problem:
            await self._fail_unopened(problem)
            return
        if session is None:
            await self._refuse("start refused: the call id is not this stream's to use")
            return
        self.transport = self._make_transport(self, start)
        self.hosted = self.host.start_call(
            self.transport,
            start.call_id,
            start.caller_id,
            self.dialect.audio,
            session,
            self._on_effect,
            self._on_turn,
            self._on_failure,
        )
        watch = self._spawn(self._watch_pipeline(self.hosted))
        # A pipeline that fails to build (or to start) never makes the input ready: the watch then ends the
        # call and closes the peer, and this wait must end with it.
        ready = asyncio.ensure_future(self.transport.input().ready.wait())
        await asyncio.wait([ready, watch], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not self.transport.input().ready.is_set():
            return
        await self.hosted.begin()
        parameters = start.metadata.get("custom_parameters") or {}
        if parameters.get(RETURN_STATUS):  # back from a warm transfer nobody took
            ring_secs = float(parameters.get(RETURN_RING_SECS) or 0)
            await self.hosted.transfer_returned(str(parameters[RETURN_STATUS]), ring_secs, str(parameters[RETURN_SAY]))

    async def _refuse(self, reason: str) -> None:
        """A stream that may not run: stopped before any session is opened, its peer closed with ``reason``."""
        logger.warning(f"{self}: {reason}; the stream is closed")
        await self.stream.stop()
        await self._close_peer(reason)

    async def _fail_unopened(self, problem: StoreUnavailable) -> None:
        """The call cannot be opened (its session store is out of reach): the caller is told the deployment's
        ``on_failure`` message and transferred or hung up, as when a provider fails, not left in silence."""
        logger.error(f"{self}: {problem}; the caller is told on_failure's message")
        await self.dialect.fail(self, store_failure(self.host.deployment.on_failure, problem))
        await self.stream.stop()
        await self._close_peer("")

    def _transport(self) -> MediaTransport:
        if self.transport is None:  # the stream reports audio, marks and keys only once started
            raise RuntimeError(f"{self}: no transport before start")
        return self.transport

    async def audio(self, payload: bytes, arrived_at: float) -> None:
        pcm = self.dialect.decode(payload)
        if not self._audio_budget.take(len(pcm) / 2 / self.dialect.audio.sample_rate_in):
            dropped = self._audio_budget.dropped_secs
            if dropped - self._drop_logged >= 10.0 or not self._drop_logged:  # the first drop, then every 10 s
                self._drop_logged = dropped
                logger.warning(f"{self}: caller audio over 1.5x real time dropped ({dropped:.1f} s so far)")
            return
        self.dialect.heard(pcm)
        await self._transport().input().audio(pcm, arrived_at)

    async def mark_returned(self, name: str, returned_at: float) -> None:
        await self._transport().output().mark_returned(name, returned_at)

    async def keypad_entry(self, message: dict[str, Any]) -> None:
        frame = LLMMessagesAppendFrame(messages=[message], run_llm=True)
        await self._transport().input().push_frame(frame)

    async def stopped(self) -> None:
        """The stream is over: end the call now and write the rest of its conversation."""
        if self.hosted is not None:
            await self.hosted.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.closed.set()

    async def _on_turn(self, role: str, text: str) -> None:
        await self.dialect.on_turn(self, role, text)

    async def _on_failure(self, failure: CallFailure) -> None:
        """The call cannot go on (``pipeline.failure``): the dialect tells the caller; the pipeline is then
        cancelled, and ``_watch_pipeline`` ends the stream and closes the peer."""
        await self.dialect.fail(self, failure)

    # -- bot audio out (MediaPeer)

    async def send_audio(self, pcm: bytes) -> bool:
        await self.dialect.said(self, pcm)
        return await self.stream.send_media(self.dialect.encode(pcm))

    async def send_mark(self, name: str) -> None:
        await self.stream.send_mark(name)

    async def send_clear(self) -> None:
        await self.stream.send_clear()

    def bot_stopped_speaking(self) -> None:
        self._bot_stopped.set()

    # -- ending

    async def _on_effect(self, effect: str, arguments: dict[str, Any]) -> None:
        """A tool ended the call or handed it off: let the goodbye play, then end the pipeline."""
        if effect == "transfer" and arguments.get("warm") is not None and self.dialect.keeps_call_on_warm_transfer:
            await self._stay_on_the_page(str((arguments.get("result") or {}).get("to") or ""), arguments["warm"])
            return
        self._effect = (effect, arguments)
        self._bot_stopped.clear()
        self._spawn(self._end_after_reply())

    async def _stay_on_the_page(self, target: str, warm: dict[str, Any]) -> None:
        """A warm transfer from a page: tell it who would take over (and the summary they would hear), and go on."""
        await self.send({"event": "transfer", "mode": "warm", "to": target, "summary": warm.get("summary") or ""})
        if self.hosted is not None and self.hosted.pipeline is not None:
            line = f"On a phone call I would now hand you over to {target}. Here, we carry on together."
            await self.hosted.pipeline.say(line)

    async def _end_after_reply(self) -> None:
        try:
            await asyncio.wait_for(self._bot_stopped.wait(), END_REPLY_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning(f"{self}: no goodbye played within {END_REPLY_TIMEOUT_SECS:g}s; ending anyway")
        if self.hosted is not None and self.hosted.pipeline is not None:
            await self.hosted.pipeline.hang_up()

    async def _watch_pipeline(self, hosted: HostedCall) -> None:
        """The pipeline ended by itself (a tool's effect): carry the effect out and close the peer."""
        try:
            await hosted.done()
        except Exception as exc:  # a failed pipeline ends the call all the same
            logger.warning(f"{self}: the pipeline failed: {exc!r}")
        effect, arguments = self._effect or (None, {})
        try:
            await self.dialect.finish(self, effect, arguments)
        finally:
            await self.stream.stop()
            await self._close_peer("")

    async def close_peer(self) -> None:
        """Close the peer's connection now (again later, when the call ends: closing twice is harmless)."""
        await self._close_peer("")

    async def close(self) -> None:
        """End the call from the carrier's side (the peer is gone, the process stops)."""
        await self.stream.stop()
        self.closed.set()

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __str__(self) -> str:
        start = self.stream.start
        call = start.call_id if start else "(not started)"
        return f"{self._carrier}{self.dialect.name} call {call} [{self.host.deployment.name}]"


class BrowserDialect(Dialect):
    """Media Streams events with 16 kHz PCM16 payloads; the call id is the browser session id.

    The id comes from the page's signed session token (``session_id``, checked by ``voxpipe serve``'s route
    or the serverless bridge's ``$connect``): a ``start.sessionId`` naming any other id is refused.

    The page is told each turn as it enters the conversation, and each reply's latency as the server sees
    it: from the last audible sample of the caller's speech arriving to the first audible sample of the
    reply leaving (the network and the page's playback buffer come on top). Once the page was told the call
    failed, nothing more is shown: a reply the dead TTS never spoke, written as the call is cancelled, would
    appear after the apology.
    """

    name = "browser"
    audio = AudioFormat(sample_rate_in=16000, sample_rate_out=16000, encoding="pcm16")
    keeps_call_on_warm_transfer = True

    def __init__(self, session_id: str) -> None:
        self._speech_end: float | None = None
        self._session_id = session_id
        self._claimed: object = None  # the sessionId the page wrote into ``start``, if any
        self._failed = False

    def decode(self, payload: bytes) -> bytes:
        if len(payload) % 2:
            raise Malformed("odd number of bytes in a PCM16 payload")
        return payload

    def encode(self, pcm: bytes) -> bytes:
        return pcm

    def parse_start(self, event: dict[str, Any]) -> StreamStart:
        self._claimed = field_of(event, "start", dict).get("sessionId")
        return StreamStart(call_id=self._session_id, stream_sid=self._session_id)

    async def authorize(self, call: MediaStreamCall, start: StreamStart) -> None:
        if self._claimed is not None and self._claimed != self._session_id:
            raise TokenError("start.sessionId is not the session token's")

    def heard(self, pcm: bytes) -> None:
        end = last_audible(pcm, self.audio.sample_rate_in)
        if end is not None:
            self._speech_end = time.monotonic() - (len(pcm) / 2 / self.audio.sample_rate_in - end)

    async def said(self, call: MediaStreamCall, pcm: bytes) -> None:
        start = first_audible(pcm, self.audio.sample_rate_out)
        if start is not None and self._speech_end is not None:
            latency_ms = (time.monotonic() + start - self._speech_end) * 1000
            self._speech_end = None
            await call.send({"event": "latency", "ms": round(latency_ms)})

    async def on_turn(self, call: MediaStreamCall, role: str, text: str) -> None:
        if not self._failed:
            await call.send({"event": "transcript", "role": role, "text": text})

    async def fail(self, call: MediaStreamCall, failure: CallFailure) -> None:
        """The page shows ``say`` and speaks it with the browser's own voice (the TTS may be what died)."""
        self._failed = True
        target = {"to": failure.transfer_to} if failure.transfer_to else {}
        await call.send({"event": "failure", "say": failure.say, "then": failure.then, **target})

    async def finish(self, call: MediaStreamCall, effect: str | None, arguments: dict[str, Any]) -> None:
        if effect is not None:
            await call.send({"event": "end", "reason": effect, **_transfer_target(arguments)})


def _transfer_target(arguments: dict[str, Any]) -> dict[str, str]:
    target = (arguments.get("result") or {}).get("to")
    return {"to": str(target)} if target else {}
