"""A pipecat transport whose far end is an API Gateway WebSocket connection, for the audio bridge's worker.

Caller audio arrives from SQS (the worker calls ``ApiGwTransport.input().audio``); the bot's audio leaves
through ``@connections`` as Media Streams events in the connection's dialect (Twilio mu-law or the browser's
PCM16, ``voxpipe.transports``). Three things differ from a socket the process owns:

- Every ``@connections`` post is billed as a message (per 32 KB), so audio is *aggregated*: one ``media``
  event carries ``aggregate_secs`` of audio (not pipecat's 20-40 ms chunks), followed by one ``mark``.
  Sending stays ``lead_secs`` (more than one window) ahead of real time, so the client never runs dry,
  and a barge-in (``clear``) drops at most that much queued audio.
- A WebSocket frame may not exceed 32 KB: an event that would is split (the audio halved until it fits).
- API Gateway closes a connection idle for 10 minutes: a ``mark`` named ``keepalive`` goes out whenever
  nothing was posted for ``keepalive_secs``.

A post answered 410 (the client is gone) calls ``on_gone`` once, which ends the call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from voxpipe.providers.spec import AudioFormat
from voxpipe.serverless import ConnectionGone, Connections
from voxpipe.transports.twilio_media import MediaStreamInput

if TYPE_CHECKING:
    from voxpipe.transports.twilio_media import Dialect

FRAME_LIMIT = 32 * 1024
#: After the last audio of a reply, how long a partly filled window waits before it is sent anyway.
TAIL_SECS = 0.06


@dataclass(frozen=True)
class LinkSettings:
    """How bot audio is sent: window, lead over real time, frame limit and keepalive (seconds, bytes)."""

    aggregate_secs: float = 0.2
    lead_secs: float = 0.35
    frame_limit: int = FRAME_LIMIT
    keepalive_secs: float = 300.0


class MediaLink:
    """One connection's send side: Media Streams events posted through ``@connections``, each under the limit."""

    def __init__(self, connections: Connections, connection_id: str, dialect: Dialect, stream_sid: str, limit: int):
        self.connections = connections
        self.connection_id = connection_id
        self.dialect = dialect
        self.stream_sid = stream_sid
        self.limit = limit
        self.last_sent = time.monotonic()
        self.posts = 0

    async def send(self, event: dict[str, Any]) -> None:
        """Post one event (raises ``ConnectionGone``)."""
        text = json.dumps({**event, "streamSid": self.stream_sid}, separators=(",", ":"))
        await asyncio.to_thread(self.connections.post, self.connection_id, text)
        self.last_sent = time.monotonic()
        self.posts += 1

    async def media(self, pcm: bytes) -> None:
        """Post ``pcm`` as ``media`` events, as few as fit under the frame limit."""
        payload = base64.b64encode(self.dialect.encode(pcm)).decode("ascii")
        if len(payload) + 200 > self.limit and len(pcm) > 2:  # 200: the event's JSON around the payload
            half = len(pcm) // 4 * 2
            await self.media(pcm[:half])
            await self.media(pcm[half:])
            return
        await self.send({"event": "media", "media": {"payload": payload}})

    async def mark(self, name: str) -> None:
        await self.send({"event": "mark", "mark": {"name": name}})

    async def clear(self) -> None:
        await self.send({"event": "clear"})


class ApiGwOutput(BaseOutputTransport):
    """Bot audio to ``@connections``: aggregated, split under the frame limit, paced, kept alive."""

    def __init__(
        self, params: TransportParams, link: MediaLink, settings: LinkSettings, on_gone: Callable[[], Awaitable[None]]
    ):
        super().__init__(params)
        self._link = link
        self._settings = settings
        self._on_gone = on_gone
        self._gone = False
        self._buffer = bytearray()
        self._lock = asyncio.Lock()
        self._next_play_at = 0.0
        self._marks = 0
        self._tail: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self._keepalive = self.create_task(self._keep_alive(), name="apigw_keepalive")

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)  # every queued chunk is written
        await self._flush()
        await self._stop_keepalive()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._stop_keepalive()

    async def _stop_keepalive(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
        if self._keepalive is not None:
            await self.cancel_task(self._keepalive)
            self._keepalive = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            async with self._lock:
                self._buffer.clear()
                self._next_play_at = 0.0
                await self._post(self._link.clear())

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if self._gone:
            return False
        async with self._lock:
            self._buffer += frame.audio
            full = len(self._buffer) >= self._window_bytes()
        if self._tail is not None:
            self._tail.cancel()
        if full:
            await self._flush()
            await asyncio.sleep(max(0.0, self._next_play_at - self._settings.lead_secs - time.monotonic()))
        else:
            self._tail = asyncio.get_running_loop().call_later(TAIL_SECS, self._flush_soon)
        return not self._gone

    def _window_bytes(self) -> int:
        return int(self._settings.aggregate_secs * self.sample_rate) * 2

    def _flush_soon(self) -> None:
        self.create_task(self._flush(), name="apigw_tail")

    async def _flush(self) -> None:
        """Send what is buffered as one window (split if need be) and a mark after it."""
        async with self._lock:
            if not self._buffer or self._gone:
                return
            pcm, self._buffer = bytes(self._buffer), bytearray()
            now = time.monotonic()
            self._next_play_at = max(now, self._next_play_at) + len(pcm) / 2 / self.sample_rate
            self._marks += 1
            if await self._post(self._link.media(pcm)):
                await self._post(self._link.mark(f"audio-{self._marks}"))

    async def _keep_alive(self) -> None:
        period = self._settings.keepalive_secs
        while not self._gone:
            await asyncio.sleep(max(0.05, period - (time.monotonic() - self._link.last_sent)))
            if time.monotonic() - self._link.last_sent >= period:
                await self._post(self._link.mark("keepalive"))

    async def _post(self, sending: Awaitable[None]) -> bool:
        """Await a post; a gone connection ends the call (once), any other failure is logged."""
        try:
            await sending
            return True
        except ConnectionGone:
            if not self._gone:
                self._gone = True
                logger.info(f"{self}: connection {self._link.connection_id} is gone (410); ending the call")
                self.create_task(self._on_gone(), name="apigw_gone")
        except Exception as exc:
            logger.warning(f"{self}: @connections post failed: {exc!r}")
        return False


class ApiGwTransport(BaseTransport):
    """The pipecat transport of one bridged connection."""

    def __init__(
        self,
        link: MediaLink,
        audio: AudioFormat,
        settings: LinkSettings,
        on_gone: Callable[[], Awaitable[None]],
    ):
        super().__init__()
        params = TransportParams(
            audio_in_enabled=True,
            audio_in_sample_rate=audio.sample_rate_in,
            audio_out_enabled=True,
            audio_out_sample_rate=audio.sample_rate_out,
            audio_out_10ms_chunks=2,
            audio_out_end_silence_secs=0,
        )
        self.link = link
        self._input = MediaStreamInput(params)
        self._output = ApiGwOutput(params, link, settings, on_gone)

    def input(self) -> MediaStreamInput:
        """Caller audio in: ``await transport.input().audio(pcm)`` (``ready`` is set once the pipeline started)."""
        return self._input

    def output(self) -> ApiGwOutput:
        return self._output
