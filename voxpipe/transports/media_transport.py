"""The pipecat side of a media stream: caller audio in, bot audio out paced at real time with playout marks.

Frames the output transport passes downstream (the bot's text, the end of its response) are held until the
mark sent before them comes back, so the assistant aggregator writes into the conversation only what was
played. Bot audio frames are held the same way, so each is passed on (and recorded, and timed by the turn
meter) when the peer reports it played. On barge-in the output sends ``clear`` and drops what was held: the
assistant's turn is cut to what the caller heard, and of the chunk that was playing only the part already
played is passed on (of every chunk played by then: a mark may still be on its way back). pipecat delivers
the chunk its audio task had taken when the interruption came: sent before the ``clear``, the clear drops it
on the peer and ``_cleared_seq`` recognises it by its mark; not sent yet, it is not sent at all (a chunk made
before the interruption frame has a smaller frame id). A subclass may send several frames as one chunk (the
serverless bridge's windows): ``_open_seq`` names the mark that will follow audio written but not sent yet.

In realtime deployments ``BotAudioPlayedFrame`` goes upstream on every returned mark, for the realtime
service to truncate its server-side item (``conversation.item.truncate`` with the played milliseconds).
The marks themselves are ``telephony.media_streams.Playout``'s.

Caller audio enters the pipeline in frames of at least ``CALLER_CHUNK_SECS`` (60 ms: three of Twilio's 20 ms
media events), pushed straight downstream from the socket's task rather than through pipecat's audio queue and
the task that drains it (with no audio filter, that task only pushes the frame on). Each frame costs the same
queues, task wake-ups and observer calls whatever its length, so this cuts what a caller costs the server by
two thirds, for at most 40 ms more (20 ms on average) before the VAD hears the end of speech (it decides on
32 ms windows). A frame is stamped with when its last piece arrived.

Caller audio starts with ``VOLUME_WINDOW_SECS`` of silence that the caller never sent: pipecat's VAD reads
the volume over that window and counts nothing as speech until it is full, so without it a caller who speaks
in the first 0.4 s of the call is not heard. Silence is what fills the window later in a call anyway.

The far end is a ``MediaPeer`` (``media_stream_call.MediaStreamCall`` over a WebSocket, or a test's own), so
the transport is testable without sockets.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections import deque

from loguru import logger
from pipecat.audio.volume import VOLUME_WINDOW_SECS
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    SystemFrame,
    TTSStartedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from voxpipe.pipeline.frames import BotAudioPlayedFrame
from voxpipe.pipeline.latency import ARRIVED_AT, PLAYED_AT
from voxpipe.providers.spec import AudioFormat
from voxpipe.telephony.media_streams import Playout

CHUNK_10MS = 4  # bot audio goes out in 40 ms chunks, one mark each
CALLER_CHUNK_SECS = 0.06  # caller audio goes in, in frames of at least this
LEAD_SECS = 0.12  # how far ahead of real time audio may be sent (absorbs network jitter)
DRAIN_TIMEOUT_SECS = 5.0  # at the end of a call, how long to wait for the last marks
MARK_SEQ = "voxpipe_mark_seq"  # frame.metadata key: the sequence number of the mark sent after a bot audio chunk
#: frame.metadata key: seconds of audio sent between a bot audio frame and its mark (a window of several frames)
PLAYS_BEFORE_MARK = "voxpipe_plays_before_mark"


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


class MediaOutput(BaseOutputTransport):
    """The output side of a media-stream transport: it is told each mark the peer returns."""

    @abc.abstractmethod
    async def mark_returned(self, name: str, returned_at: float) -> None:
        """A mark the output sent came back at ``returned_at`` (monotonic): the audio before it has played."""


class MediaStreamInput(BaseInputTransport):
    """Caller audio and keypad digits from the WebSocket into the pipeline."""

    def __init__(self, params: TransportParams):
        super().__init__(params)
        self.ready = asyncio.Event()
        self._pending = b""  # caller audio short of a frame
        self._frame_bytes = 0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        # Before any caller audio (``ready`` holds it back): the VAD's volume window, full of silence.
        silence = bytes(round(VOLUME_WINDOW_SECS * self.sample_rate) * 2)
        await self.push_frame(InputAudioRawFrame(audio=silence, sample_rate=self.sample_rate, num_channels=1))
        self._frame_bytes = round(CALLER_CHUNK_SECS * self.sample_rate) * 2
        self.ready.set()

    async def audio(self, pcm: bytes, arrived_at: float) -> None:
        """Push caller audio once a frame's worth has come, stamped with when it arrived (the turn meter times
        the caller by it). Audio before the pipeline started is dropped: the input has no sample rate yet (the
        bridge's reordering can hand audio over while ``start`` waits for the pipeline)."""
        if not self.ready.is_set():
            return
        self._pending += pcm
        if len(self._pending) < self._frame_bytes:
            return
        frame = InputAudioRawFrame(audio=self._pending, sample_rate=self.sample_rate, num_channels=1)
        self._pending = b""
        frame.metadata[ARRIVED_AT] = arrived_at
        await self.push_frame(frame)


class MediaStreamOutput(MediaOutput):
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
        self._cleared_seq = 0  # chunks up to this mark were dropped by a ``clear``
        self._interrupted_id = 0  # the latest interruption's frame id: older interruptible audio is not sent

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)  # every queued chunk is written
        await self._send_rest()  # and sent
        try:  # and, within reason, played
            await asyncio.wait_for(self._playout.drained.wait(), DRAIN_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning(f"{self}: the last marks did not come back within {DRAIN_TIMEOUT_SECS:g}s")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self._interrupted_id = frame.id
            await self._drop_unsent()
        await super().process_frame(frame, direction)

    async def _drop_unsent(self) -> None:
        """Barge-in: drop audio written but not sent yet (none here: each chunk leaves as it is written)."""

    def _made_before_interruption(self, frame: OutputAudioRawFrame) -> bool:
        """Whether ``frame`` belongs to a reply the caller interrupted. pipecat's audio task writes the chunk it
        had already taken from its queue when the interruption came, possibly after the ``clear`` went out: the
        caller would hear a blip of the old reply. Frame ids only grow, so a chunk made before the interruption
        frame has a smaller one; uninterruptible audio is always sent."""
        return frame.interruptible and frame.id < self._interrupted_id

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if self._made_before_interruption(frame):
            return False
        duration = len(frame.audio) / 2 / self.sample_rate
        if not await self._peer.send_audio(frame.audio):
            return False
        mark = self._playout.sent(duration * 1000)
        frame.metadata[MARK_SEQ] = int(mark)
        await self._peer.send_mark(mark)
        now = time.monotonic()
        self._next_play_at = max(now, self._next_play_at) + duration
        await asyncio.sleep(max(0.0, self._next_play_at - LEAD_SECS - now))
        return True

    async def _send_rest(self) -> None:
        """Send audio written but not sent yet (none here: each chunk leaves with its mark as it is written)."""

    def _open_seq(self) -> int:
        """The mark that will follow the audio written so far (here: the last one sent)."""
        return self._playout.sent_seq

    async def write_transport_frame(self, frame: Frame) -> None:
        if isinstance(frame, TTSStartedFrame):
            self._playout.start_response()

    async def mark_returned(self, name: str, returned_at: float) -> None:
        """A mark came back: tell upstream how much was played and release what the caller has now heard
        (audio stamped with when it played: ``PLAYED_AT``)."""
        played_ms = self._playout.acked(name, returned_at)
        if played_ms is not None and self._report_played:
            await super().push_frame(BotAudioPlayedFrame(played_ms=played_ms), FrameDirection.UPSTREAM)
        async with self._push_lock:
            while self._held and self._held[0][0] <= self._playout.acked_seq:
                seq, frame = self._held.popleft()
                if frame.metadata.get(MARK_SEQ) == seq:
                    frame.metadata[PLAYED_AT] = returned_at - frame.metadata.get(PLAYS_BEFORE_MARK, 0.0)
                await super().push_frame(frame)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        if direction is FrameDirection.UPSTREAM:
            await super().push_frame(frame, direction)
            return
        async with self._push_lock:
            if isinstance(frame, (InterruptionFrame, EndFrame, CancelFrame)):
                heard: list[tuple[int, float, float]] = []
                if isinstance(frame, InterruptionFrame) and self._playout.acked_seq < self._playout.sent_seq:
                    heard = self._playout.heard(time.monotonic())
                    await self._peer.send_clear()
                    self._playout.clear()
                    self._cleared_seq = self._playout.sent_seq
                await self._release_unheard(heard)
            elif frame.metadata.get(MARK_SEQ, self._cleared_seq + 1) <= self._cleared_seq:
                return  # the chunk being written when the clear went out: never played
            elif not isinstance(frame, SystemFrame) and (self._held or self._playout.acked_seq < self._open_seq()):
                self._held.append((frame.metadata.get(MARK_SEQ, self._open_seq()), frame))
                return
            await super().push_frame(frame, direction)
        if isinstance(frame, BotStoppedSpeakingFrame):
            self._peer.bot_stopped_speaking()

    async def _release_unheard(self, heard: list[tuple[int, float, float]]) -> None:
        """The rest will never be heard: drop it, except frames that must not be lost (tool results...), and
        what the peer played of the chunks still out (``Playout.heard``: mark, seconds played, when it began),
        each chunk's frames in order up to its seconds played (a chunk may be a window of several frames)."""
        played = {seq: [secs, began] for seq, secs, began in heard}
        while self._held:
            seq, frame = self._held.popleft()
            chunk = played.get(seq)
            if chunk is not None and isinstance(frame, OutputAudioRawFrame):
                samples = min(len(frame.audio) // 2 // frame.num_channels, round(chunk[0] * frame.sample_rate))
                if samples > 0:
                    part = OutputAudioRawFrame(
                        frame.audio[: samples * 2 * frame.num_channels], frame.sample_rate, frame.num_channels
                    )
                    chunk[0] -= samples / frame.sample_rate
                    chunk[1] += samples / frame.sample_rate
                    part.metadata[PLAYED_AT] = chunk[1]  # when its last sample played
                    await super().push_frame(part)
            elif not frame.interruptible:
                await super().push_frame(frame)


def media_params(audio: AudioFormat, chunks_10ms: int) -> TransportParams:
    """Transport parameters of a media stream: audio both ways at the call's rates, no trailing silence."""
    return TransportParams(
        audio_in_enabled=True,
        audio_in_sample_rate=audio.sample_rate_in,
        audio_out_enabled=True,
        audio_out_sample_rate=audio.sample_rate_out,
        audio_out_10ms_chunks=chunks_10ms,
        audio_out_end_silence_secs=0,
    )


class MediaTransport(BaseTransport):
    """A media-stream call's transport: caller audio in (``MediaStreamInput``), bot audio out (``MediaOutput``)."""

    @abc.abstractmethod
    def input(self) -> MediaStreamInput: ...

    @abc.abstractmethod
    def output(self) -> MediaOutput: ...


class MediaStreamTransport(MediaTransport):
    """A media transport whose far end is a ``MediaPeer`` over a socket (a Twilio or browser media stream)."""

    def __init__(self, peer: MediaPeer, audio: AudioFormat, *, report_played: bool = False):
        """``report_played``: send ``BotAudioPlayedFrame`` upstream (for a realtime service's truncation)."""
        super().__init__()
        params = media_params(audio, CHUNK_10MS)
        self._input = MediaStreamInput(params)
        self._output = MediaStreamOutput(params, peer, Playout(), report_played)

    def input(self) -> MediaStreamInput:
        return self._input

    def output(self) -> MediaStreamOutput:
        return self._output
