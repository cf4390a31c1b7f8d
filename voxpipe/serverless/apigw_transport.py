"""A pipecat transport whose far end is an API Gateway WebSocket connection, for the audio bridge's worker.

Caller audio arrives from SQS (the worker's ``MediaStreamCall`` calls ``ApiGwTransport.input().audio``); the
bot's audio leaves through ``@connections`` as Media Streams events in the connection's dialect (Twilio mu-law
or the browser's PCM16), built by the same ``MediaStreamCall`` as on the server. Three things differ from a
socket the process owns:

- Every ``@connections`` post is billed as a message (per 32 KB), so audio is *aggregated*: one ``media``
  event carries ``aggregate_secs`` of audio (not pipecat's 20-40 ms chunks), followed by one ``mark``.
  Sending stays ``lead_secs`` (more than one window) ahead of real time, so the client never runs dry,
  and a barge-in (``clear``) drops at most that much queued audio.
- A WebSocket frame may not exceed 32 KB: an event that would is split (the audio halved until it fits).
- API Gateway closes a connection idle for 10 minutes: a ``mark`` named ``keepalive`` goes out whenever
  nothing was posted for ``keepalive_secs``.

A post answered 410 (the client is gone) calls ``on_gone`` once, which ends the call.

What was played is known as on the server (``ApiGwOutput`` is a ``MediaStreamOutput``): a window's frames are
passed on when its mark comes back, each placed by the audio after it in the window (``PLAYS_BEFORE_MARK``);
on barge-in the window being filled is dropped and ``clear`` goes out when sent audio is still playing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.transports.base_transport import TransportParams

from voxpipe.providers.spec import AudioFormat
from voxpipe.serverless import ConnectionGone, Connections
from voxpipe.telephony import json_messages
from voxpipe.telephony.media_streams import Playout
from voxpipe.transports.media_transport import (
    MARK_SEQ,
    PLAYS_BEFORE_MARK,
    MediaPeer,
    MediaStreamInput,
    MediaStreamOutput,
    MediaTransport,
    media_params,
)

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
    """One connection's send side: events posted through ``@connections`` (the ``MediaStream``'s send callback),
    bot audio split under the frame limit, and the first 410 reported once through ``on_gone``."""

    def __init__(
        self,
        connections: Connections,
        connection_id: str,
        audio: AudioFormat,
        limit: int,
        on_gone: Callable[[], Awaitable[None]],
    ):
        self.connections = connections
        self.connection_id = connection_id
        self.limit = limit
        self._peer: MediaPeer | None = None  # the call whose audio this link carries (``attach``)
        self.last_sent = time.monotonic()
        self.posts = 0
        self.gone = False
        self._bytes_per_sample = 1 if audio.encoding == "mulaw" else 2
        self._on_gone = on_gone
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, peer: MediaPeer) -> None:
        """The call whose audio this link carries (it is made with the link's ``post`` as its send callback)."""
        self._peer = peer

    @property
    def peer(self) -> MediaPeer:
        if self._peer is None:
            raise RuntimeError(f"connection {self.connection_id}: no call is attached to its link")
        return self._peer

    async def post(self, event: dict[str, Any]) -> bool:
        """Post one event; ``False`` once the client is gone (the first 410 ends the call)."""
        if self.gone:
            return False
        self.posts += 1  # counted before the post returns: the client may have the message by then
        try:
            await asyncio.to_thread(self.connections.post, self.connection_id, json_messages.dumps(event))
        except ConnectionGone:
            self.posts -= 1
            self.gone = True
            logger.info(f"connection {self.connection_id} is gone (410); ending the call")
            task = asyncio.ensure_future(self._on_gone())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return False
        except Exception as exc:
            self.posts -= 1
            logger.warning(f"connection {self.connection_id}: @connections post failed: {exc!r}")
            return False
        self.last_sent = time.monotonic()
        return True

    async def media(self, pcm: bytes) -> bool:
        """Send ``pcm`` as ``media`` events, as few as fit under the frame limit."""
        encoded = len(pcm) // 2 * self._bytes_per_sample
        if 4 * -(-encoded // 3) + 200 > self.limit and len(pcm) > 2:  # 200: the event's JSON around the payload
            half = len(pcm) // 4 * 2
            return await self.media(pcm[:half]) and await self.media(pcm[half:])
        return await self.peer.send_audio(pcm)

    async def mark(self, name: str) -> bool:
        await self.peer.send_mark(name)
        return not self.gone


class ApiGwOutput(MediaStreamOutput):
    """Bot audio to ``@connections``: aggregated, split under the frame limit, paced, kept alive; what was
    played is passed on by the marks that come back, as on the server (``MediaStreamOutput``)."""

    def __init__(self, params: TransportParams, link: MediaLink, settings: LinkSettings, report_played: bool):
        super().__init__(params, link.peer, Playout(), report_played)
        self._link = link
        self._settings = settings
        self._buffer = bytearray()
        self._window: list[tuple[Frame, int]] = []  # the frames in ``_buffer``, each with its end in bytes
        self._lock = asyncio.Lock()
        self._tail: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._keepalive = self.create_task(self._keep_alive(), name="apigw_keepalive")

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)  # every queued chunk is sent and, within reason, played
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

    async def _drop_unsent(self) -> None:
        """Barge-in, before the clear: the window being filled is never sent, its frames never passed on (a
        ``MARK_SEQ`` of 0 is below any cleared mark), and pacing starts afresh."""
        async with self._lock:
            for frame, _ in self._window:
                frame.metadata[MARK_SEQ] = 0
            self._buffer.clear()
            self._window.clear()
            self._next_play_at = 0.0

    def _open_seq(self) -> int:
        """The window being filled is followed by the next mark."""
        return self._playout.sent_seq + (1 if self._buffer else 0)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if self._link.gone or self._made_before_interruption(frame):
            return False
        async with self._lock:
            self._buffer += frame.audio
            self._window.append((frame, len(self._buffer)))
            frame.metadata[MARK_SEQ] = self._playout.sent_seq + 1
            full = len(self._buffer) >= self._window_bytes()
        if self._tail is not None:
            self._tail.cancel()
        if full:
            await self._flush()
            await asyncio.sleep(max(0.0, self._next_play_at - self._settings.lead_secs - time.monotonic()))
        else:
            self._tail = asyncio.get_running_loop().call_later(TAIL_SECS, self._flush_soon)
        return not self._link.gone

    def _window_bytes(self) -> int:
        return int(self._settings.aggregate_secs * self.sample_rate) * 2

    def _flush_soon(self) -> None:
        self.create_task(self._flush(), name="apigw_tail")

    async def _send_rest(self) -> None:
        await self._flush()

    async def _flush(self) -> None:
        """Send what is buffered as one window (split if need be) and a mark after it; each frame of the window
        learns how much of the window follows it (it played that long before the mark came back)."""
        async with self._lock:
            if not self._buffer or self._link.gone:
                return
            pcm, window = bytes(self._buffer), self._window
            self._buffer, self._window = bytearray(), []
            now = time.monotonic()
            duration = len(pcm) / 2 / self.sample_rate
            self._next_play_at = max(now, self._next_play_at) + duration
            if not await self._link.media(pcm):
                return
            mark = self._playout.sent(duration * 1000)
            for frame, end in window:
                frame.metadata[MARK_SEQ] = int(mark)
                frame.metadata[PLAYS_BEFORE_MARK] = (len(pcm) - end) / 2 / self.sample_rate
            await self._link.mark(mark)

    async def _keep_alive(self) -> None:
        period = self._settings.keepalive_secs
        while not self._link.gone:
            await asyncio.sleep(max(0.05, period - (time.monotonic() - self._link.last_sent)))
            if time.monotonic() - self._link.last_sent >= period:
                await self._link.mark("keepalive")


class ApiGwTransport(MediaTransport):
    """The pipecat transport of one bridged connection."""

    def __init__(self, link: MediaLink, audio: AudioFormat, settings: LinkSettings, *, report_played: bool = False):
        """``report_played``: send ``BotAudioPlayedFrame`` upstream (for a realtime service's truncation)."""
        super().__init__()
        params = media_params(audio, chunks_10ms=2)
        self.link = link
        self._input = MediaStreamInput(params)
        self._output = ApiGwOutput(params, link, settings, report_played)

    def input(self) -> MediaStreamInput:
        """Caller audio in: ``await transport.input().audio(pcm, arrived_at)`` (``ready``: the pipeline started)."""
        return self._input

    def output(self) -> ApiGwOutput:
        return self._output
