"""Twilio Media Streams: the events, the state machine of one stream, and playout marks.

Twilio is the WebSocket client: ``connected`` -> ``start`` -> ``media`` / ``dtmf`` / ``mark`` ... -> ``stop``.
The app answers with ``media``, ``mark`` and ``clear`` (each carrying the ``streamSid``). Audio payloads are
base64; what they encode (Twilio's 8 kHz mu-law, the browser page's PCM16) is the adapter's business.

``MediaStream`` is one stream's state machine (awaiting start -> streaming -> stopped), driven by the events
given to ``receive`` and answering through a send callback, so the server (a WebSocket it owns) and the
serverless bridge (events from a queue, answers through ``@connections``) run the same code. It tells a
``StreamHandler`` what happened: the stream started, caller audio, a returned mark, a complete keypad entry
(``keypad_entry.KeypadEntry``), the stream stopped. A malformed or out-of-place event is logged and skipped.

What the caller heard: Twilio buffers the audio it is sent, so the app sends a ``mark`` after each chunk and
Twilio echoes it once the chunk has played, or at once when a ``clear`` dropped it. ``Playout`` keeps the
marks in flight and says how much of the current response has been played, and, when a ``clear`` cuts a
chunk while it plays, which chunks were heard and how much of the last one (``heard``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from voxpipe.telephony import keypad, keypad_entry

log = logging.getLogger("voxpipe.telephony")

MEDIA_FRAME_SECS = 0.02  # Twilio sends the caller's audio as one media event every 20 ms

Send = Callable[[dict[str, Any]], Awaitable[bool]]
"""Sends one event to the peer; ``False`` once the peer is gone."""


class Malformed(ValueError):
    """A peer event that cannot be used; logged and skipped, the call goes on."""


def field_of(event: dict[str, Any], name: str, kind: type) -> Any:
    """``event[name]`` if it is a ``kind`` (a non-empty one for ``str``), else ``Malformed``."""
    value = event.get(name)
    if not isinstance(value, kind) or (kind is str and not value):
        raise Malformed(f"'{name}' is missing or not a {kind.__name__}")
    return value


@dataclass(frozen=True)
class StreamStart:
    """What the ``start`` event tells: the call's id, the stream's id, and metadata to keep with the session."""

    call_id: str
    stream_sid: str
    caller_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_start(event: dict[str, Any]) -> StreamStart:
    """Twilio's ``start``: ``callSid``, ``streamSid``, and the TwiML's ``<Parameter>``s (``from`` is the caller)."""
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


def decode_payload(media: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(field_of(media, "payload", str), validate=True)
    except binascii.Error:
        raise Malformed("media.payload is not base64") from None


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


class ArrivalClock:
    """When each media frame arrived, from the stream's own ``timestamp``s rather than when it was handled.

    Twilio stamps each inbound frame with milliseconds since the stream began. The least-delayed frame seen
    so far tells when the stream began on our clock (``offset``: its handling time minus its timestamp); every
    frame then arrived at ``offset + timestamp``. So a frame handled late, because the loop was busy, is still
    placed when it reached us. A stream without timestamps (the browser page) gets its handling time. An event
    that reached us through a queue is handled when the carrier says it was received (``received_at``: on the
    serverless bridge, when the Lambda queued it), so neither the queue nor a backlog behind a late ``start``
    moves it.

    Other events (a returned ``mark``) carry no timestamp, but Twilio sends them in order with the media it
    sends every 20 ms: one handled after the latest media frame was sent between that frame and the next, so it
    is placed when it was handled, but no later than half a frame after the latest (off by 10 ms at most;
    ``event_arrived``; the frames' spacing is read from their timestamps).
    """

    def __init__(self, now: Callable[[], float] = time.monotonic):
        self._now = now
        self._offset: float | None = None
        self._latest: float | None = None  # when the latest stamped media frame arrived
        self._stamp: float | None = None  # its timestamp (seconds)
        self._spacing = MEDIA_FRAME_SECS  # between stamped frames: Twilio's 20 ms, else as seen

    def arrived(self, timestamp_ms: object, received_at: float | None = None) -> float:
        handled = self._now() if received_at is None else received_at
        try:
            stamp = float(timestamp_ms) / 1000  # type: ignore[arg-type]  # Twilio sends it as a string
        except (TypeError, ValueError):
            return handled
        if self._stamp is not None and stamp > self._stamp:
            self._spacing = stamp - self._stamp
        self._stamp = stamp
        if self._offset is None or handled - stamp < self._offset:
            self._offset = handled - stamp
        self._latest = self._offset + stamp
        return self._latest

    def event_arrived(self, received_at: float | None = None) -> float:
        """When an unstamped event handled now (or ``received_at``) arrived: then, or half a media frame after
        the latest one if sooner."""
        handled = self._now() if received_at is None else received_at
        return handled if self._latest is None else min(handled, self._latest + self._spacing / 2)


class StreamHandler(Protocol):
    """What a ``MediaStream`` tells its call. ``started`` may raise ``Malformed`` to refuse the stream."""

    async def started(self, start: StreamStart) -> None: ...

    async def audio(self, payload: bytes, arrived_at: float) -> None:
        """Caller audio; ``arrived_at``: ``time.monotonic()`` when its last sample reached this process."""

    async def mark_returned(self, name: str, returned_at: float) -> None:
        """A mark came back; ``returned_at``: ``time.monotonic()`` when it reached this process."""

    async def keypad_entry(self, message: dict[str, Any]) -> None: ...

    async def stopped(self) -> None: ...


class MediaStream:
    """One stream's state machine over a send callback (see the module doc)."""

    def __init__(
        self,
        send: Send,
        handler: StreamHandler,
        parse: Callable[[dict[str, Any]], StreamStart] = parse_start,
        owner: object = "media stream",
    ):
        self._send = send
        self._handler = handler
        self._parse = parse
        self._owner = owner  # names the call in log lines
        self.state = StreamState.AWAITING_START
        self.start: StreamStart | None = None
        self.keypad = keypad_entry.KeypadEntry(handler.keypad_entry)
        self.arrival = ArrivalClock()

    async def receive(self, event: dict[str, Any], received_at: float | None = None) -> None:
        """Handle one event (a dict with a string ``event``); a malformed one is logged and skipped.
        ``received_at``: when the carrier received it (``time.monotonic()``), if not now (``ArrivalClock``)."""
        kind = event["event"]
        try:
            await self._handle(kind, event, received_at)
        except (Malformed, keypad.NotADigit) as problem:
            log.warning("%s: %s event ignored: %s", self._owner, kind, problem)

    async def _handle(self, kind: str, event: dict[str, Any], received_at: float | None) -> None:
        if kind == "connected" or self.state is StreamState.STOPPED:
            return
        if kind == "start":
            if self.state is not StreamState.AWAITING_START:
                raise Malformed("a second start on the same stream")
            self.start, self.state = self._parse(event), StreamState.STREAMING
            try:
                await self._handler.started(self.start)
            except Malformed:
                self.start, self.state = None, StreamState.AWAITING_START
                raise
        elif kind == "stop":
            await self.stop()
        elif self.state is not StreamState.STREAMING:
            raise Malformed(f"'{kind}' before 'start'")
        elif kind == "media":
            media = field_of(event, "media", dict)
            if media.get("track", "inbound") == "inbound":
                arrived_at = self.arrival.arrived(media.get("timestamp"), received_at)
                await self._handler.audio(decode_payload(media), arrived_at)
        elif kind == "mark":
            name = str(field_of(event, "mark", dict).get("name", ""))
            await self._handler.mark_returned(name, self.arrival.event_arrived(received_at))
        elif kind == "dtmf":
            await self.keypad.press(str(field_of(event, "dtmf", dict).get("digit", "")))
        else:
            raise Malformed(f"unknown event '{kind}'")

    async def stop(self) -> None:
        """The stream is over (``stop``, or the adapter ended it): tell the handler once."""
        if self.state is StreamState.STOPPED:
            return
        self.state = StreamState.STOPPED
        self.keypad.close()
        await self._handler.stopped()

    # -- what the app sends

    async def send(self, event: str, **body: Any) -> bool:
        """Send one event of this stream (``streamSid`` added); ``False`` once the peer is gone."""
        return await self._send({"event": event, "streamSid": self.start.stream_sid if self.start else "", **body})

    async def send_media(self, payload: bytes) -> bool:
        return await self.send("media", media={"payload": base64.b64encode(payload).decode("ascii")})

    async def send_mark(self, name: str) -> bool:
        return await self.send("mark", mark={"name": name})

    async def send_clear(self) -> bool:
        return await self.send("clear")


# ---------------------------------------------------------------------------------------------- playout


@dataclass
class _Mark:
    seq: int
    response: int
    end_ms: float  # bot audio of ``response`` once this chunk has played
    duration_secs: float
    sent_at: float  # time.monotonic() when the chunk was sent


class Playout:
    """Marks sent after bot audio chunks, and which came back: what the caller has actually heard."""

    def __init__(self) -> None:
        self._seq = 0
        self._response = 0
        self._response_ms = 0.0
        self._pending: deque[_Mark] = deque()
        self.acked_seq = 0
        self._acked_at = float("-inf")  # when the last mark came back: the next chunk began playing then or later
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
        self._pending.append(_Mark(self._seq, self._response, self._response_ms, duration_ms / 1000, time.monotonic()))
        self.drained.clear()
        return str(self._seq)

    def acked(self, name: str, returned_at: float) -> int | None:
        """A mark came back (at ``returned_at``, monotonic): the played milliseconds of the current response,
        ``None`` if unknown."""
        if not name.isdigit() or not self._pending or int(name) < self._pending[0].seq:
            return None  # not ours, or dropped by a clear
        played: _Mark | None = None
        while self._pending and self._pending[0].seq <= int(name):
            played = self._pending.popleft()
            self.acked_seq = played.seq
            self._acked_at = returned_at
        if not self._pending:
            self.drained.set()
        return round(played.end_ms) if played and played.response == self._response else None

    def heard(self, now: float) -> list[tuple[int, float, float]]:
        """The chunks whose marks are out that the peer has played by ``now``, whole or in part: each one's mark
        (sequence number), the seconds of it played, and when it began playing.

        Chunks play back to back: the oldest began when the previous mark came back, or when it was sent if the
        peer had nothing left to play then; each next one when the one before it ended, or when it was sent. A
        mark can still be on its way back while the chunks after it play (the serverless bridge's queue).
        """
        chunks = []
        free_at = self._acked_at  # when the peer had played everything before the chunk
        for chunk in self._pending:
            began = max(chunk.sent_at, free_at)
            if began >= now:
                break
            chunks.append((chunk.seq, min(now - began, chunk.duration_secs), began))
            free_at = began + chunk.duration_secs
        return chunks

    def clear(self) -> None:
        """The peer was told to drop queued audio: pending marks will come back, but were not heard."""
        self._pending.clear()
        self.acked_seq = self._seq
        self.drained.set()
