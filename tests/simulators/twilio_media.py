"""Twilio's side of a Media Stream, over a real WebSocket: the caller's line and Twilio's playout buffer.

As Twilio does, the simulator
- opens the socket with ``X-Twilio-Signature`` over the exact ``wss://`` URL (auth token given), sends
  ``connected`` then ``start`` (callSid, streamSid, customParameters with the webhook's call token, mediaFormat
  audio/x-mulaw 8000);
- numbers every event after ``connected`` (``sequenceNumber``, from 1);
- sends one ``media`` event every 20 ms for the whole call (160 mu-law bytes: the caller's speech when there
  is some, else line silence), with ``chunk`` and ``timestamp`` counters (``frame_secs`` changes the 20 ms);
- plays the bot's ``media`` at real time from a buffer, echoes each ``mark`` once the audio before it has
  played, and on ``clear`` stops playing, drops the buffered audio and echoes the pending marks at once;
- sends ``dtmf`` and ``stop`` on request, and anything raw (malformed JSON...) with ``send_raw``;
- once the app closes the stream, posts the ``<Connect action>`` webhook as Twilio does (``connect_action``:
  signed form with ``CallSid``), whose TwiML says what the caller hears next (a failed call's ``<Say>``).

``heard`` is the bot audio as the caller heard it (PCM16 8 kHz, with the time each chunk started playing; a
chunk a ``clear`` cut is kept up to the clear);
``spoken`` the caller's speech as it went down the line (each frame with the time it was sent).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from twilio.request_validator import RequestValidator

from tests.simulators import webhook_parameters
from voxpipe.audio import g711

RATE = 8000
FRAME_SECS = 0.02
WAIT_SECS = 20.0


@dataclass
class Played:
    """A chunk of bot audio the caller heard: PCM16 at 8 kHz, and when it started playing (monotonic)."""

    at: float
    pcm: bytes


@dataclass
class _Queued:
    pcm: bytes = b""
    mark: str | None = None


@dataclass
class TwilioMediaSimulator:
    """One simulated Twilio call against ``ws_url`` (the app's ``/{name}/media``); use ``async with``."""

    ws_url: str
    signed_url: str  # the public wss:// URL the signature covers
    auth_token: str | None = "test-auth-token"  # noqa: S105 — a made-up credential for a local fake; nothing real
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    stream_sid: str = field(default_factory=lambda: "MZ" + uuid.uuid4().hex)
    parameters: dict[str, str] = field(default_factory=lambda: {"from": "+15550001111", "to": "+15559990000"})
    signature: str | None = None  # override (a bad signature test)
    bound: bool = True  # start carries the token the webhook's TwiML gave call_sid (False: a forged start)
    frame_secs: float = FRAME_SECS  # Twilio's are 20 ms; a test through Lambda-like containers may send fewer

    def __post_init__(self) -> None:
        self.events: list[dict[str, Any]] = []  # everything the server sent, parsed
        self.heard: list[Played] = []
        self.spoken: list[Played] = []  # caller speech frames (PCM16 8 kHz), each with when it was sent
        self.marks_echoed: list[str] = []
        self.clears: list[float] = []
        self.closed = asyncio.Event()
        self.closed_at: float | None = None  # when the app closed the stream (monotonic)
        self._speech: deque[bytes] = deque()  # mu-law frames of caller speech to send
        self._buffer: deque[_Queued] = deque()  # Twilio's playout buffer
        self._chunk = 0
        self._sequence = 0  # the last sequenceNumber sent
        self._cut = asyncio.Event()  # set by a clear: the chunk playing stops
        self._socket: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.first_media_at: float | None = None  # when the first bot media event arrived

    # -- connection

    def headers(self) -> dict[str, str]:
        if self.signature is not None:
            return {"X-Twilio-Signature": self.signature}
        if self.auth_token is None:
            return {}
        return {"X-Twilio-Signature": RequestValidator(self.auth_token).compute_signature(self.signed_url, {})}

    def start_parameters(self) -> dict[str, str]:
        """The TwiML's ``<Parameter>``s as Twilio hands them back in ``start``."""
        return {**self.parameters, **(webhook_parameters("twilio", self.call_sid) if self.bound else {})}

    async def __aenter__(self) -> TwilioMediaSimulator:
        self._socket = await websockets.connect(self.ws_url, additional_headers=self.headers(), max_size=None)
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "callSid": self.call_sid,
                    "streamSid": self.stream_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.start_parameters(),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                },
            }
        )
        self._tasks = [asyncio.create_task(self._line()), asyncio.create_task(self._receive())]
        self._tasks.append(asyncio.create_task(self._playout()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._socket.close()

    async def send(self, event: dict[str, Any]) -> None:
        if event["event"] != "connected":
            self._sequence += 1
            event = {**event, "sequenceNumber": str(self._sequence)}
        await self.send_raw(json.dumps(event))

    async def send_raw(self, data: str | bytes) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._socket.send(data)

    async def connect_action(self, app_url: str, signed_url: str) -> str:
        """Twilio's ``<Connect action>`` request once the stream ended: the TwiML the app answers."""
        form = {"CallSid": self.call_sid, "AccountSid": "AC" + "0" * 32, "CallStatus": "in-progress"}
        headers = {"X-Twilio-Signature": RequestValidator(self.auth_token or "").compute_signature(signed_url, form)}
        async with httpx.AsyncClient(timeout=WAIT_SECS) as client:
            response = await client.post(app_url, data=form, headers=headers)
        response.raise_for_status()
        return response.text

    # -- the caller's side

    def say(self, pcm16_8k: bytes) -> float:
        """Queue caller speech (PCM16, 8 kHz); returns its duration in seconds."""
        mulaw = g711.encode(pcm16_8k)
        size = round(RATE * self.frame_secs)  # mu-law: one byte per sample
        for offset in range(0, len(mulaw), size):
            self._speech.append(mulaw[offset : offset + size].ljust(size, b"\xff"))
        return len(pcm16_8k) / 2 / RATE

    async def speak(self, pcm16_8k: bytes) -> float:
        """Say ``pcm16_8k`` and return once its last frame was sent (the end of the caller's speech)."""
        self.say(pcm16_8k)
        while self._speech:
            await asyncio.sleep(self.frame_secs / 2)
        return time.monotonic()

    async def dtmf(self, digit: str) -> None:
        await self.send(
            {"event": "dtmf", "streamSid": self.stream_sid, "dtmf": {"track": "inbound_track", "digit": digit}}
        )

    async def stop(self) -> None:
        await self.send({"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}})

    async def _line(self) -> None:
        """Media events (20 ms each) at real time, speech or line silence, as long as the call lasts."""
        next_at = time.monotonic()
        while not self.closed.is_set():
            speaking = bool(self._speech)
            payload = self._speech.popleft() if speaking else b"\xff" * round(RATE * self.frame_secs)
            self._chunk += 1
            await self.send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(self._chunk),
                        "timestamp": str(round(self._chunk * self.frame_secs * 1000)),
                        "payload": base64.b64encode(payload).decode(),
                    },
                }
            )
            if speaking:
                self.spoken.append(Played(time.monotonic(), g711.decode(payload)))
            next_at += self.frame_secs
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    # -- Twilio's playout of the bot's audio

    async def _receive(self) -> None:
        try:
            async for message in self._socket:
                event = json.loads(message)
                self.events.append(event)
                kind = event.get("event")
                if kind == "media":
                    self.first_media_at = self.first_media_at or time.monotonic()
                    self._buffer.append(_Queued(pcm=g711.decode(base64.b64decode(event["media"]["payload"]))))
                elif kind == "mark":
                    self._buffer.append(_Queued(mark=event["mark"]["name"]))
                elif kind == "clear":
                    self.clears.append(time.monotonic())
                    self._cut.set()
                    dropped = [q.mark for q in self._buffer if q.mark]
                    self._buffer.clear()
                    for name in dropped:
                        await self._echo(name)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()
            self.closed.set()

    async def _echo(self, name: str) -> None:
        self.marks_echoed.append(name)
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _playout(self) -> None:
        while True:
            if not self._buffer:
                await asyncio.sleep(0.005)
                continue
            item = self._buffer.popleft()
            if item.mark is not None:
                await self._echo(item.mark)
                continue
            played = Played(time.monotonic(), item.pcm)
            self.heard.append(played)
            self._cut.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cut.wait(), len(item.pcm) / 2 / RATE)
                played.pcm = played.pcm[: round((time.monotonic() - played.at) * RATE) * 2]  # cut by a clear

    # -- waiting

    @property
    def close_code(self) -> int | None:
        """The code of the app's close frame (1008: the stream was refused), once closed."""
        return self._socket.close_code if self._socket else None

    @property
    def close_reason(self) -> str:
        """The reason in the app's close frame, once closed."""
        return (self._socket.close_reason or "") if self._socket else ""

    def sent(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = WAIT_SECS, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what or condition}")
            await asyncio.sleep(0.02)

    def heard_after(self, moment: float) -> list[Played]:
        return [p for p in self.heard if p.at >= moment]
