"""Play a scripted caller against a deployment and measure each turn.

The caller's audio is streamed into the call's pipeline as real-time 20 ms frames (silence between turns,
as a phone line would carry), and the bot's audio is captured as played. Each turn's latency is measured
from the audio: the end of the caller's speech is the last audible sample fed, the bot's answer starts at
its first audible sample played (see docs/latency.md).

The simulated caller is the memory transport's peer, so it also carries out the deployment's ``on_failure``
the way a phone would: it "hears" the failure message (``CallResult.failure``) and the call ends. A call
whose pipeline ended (a fatal error, an ``end_call`` tool) stops the script at once, with no wait.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pipecat.frames.frames import EndWorkerFrame, Frame
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.worker import PipelineWorker
from pipecat.workers.runner import WorkerRunner

from voxpipe.audio import g711
from voxpipe.bench.turn_taking import premature_replies
from voxpipe.config.models import Deployment
from voxpipe.pipeline.builder import CallContext
from voxpipe.pipeline.host import build_audio_call
from voxpipe.pipeline.keeping import CallKeeping
from voxpipe.pipeline.latency import MeasuredTurn, TurnMeter, first_audible, last_audible
from voxpipe.pipeline.metering import CallMeter
from voxpipe.providers.spec import AudioFormat
from voxpipe.records.model import CallError, CallFailure, CallRecord, FallbackEvent, TurnTaking, Usage
from voxpipe.records.recording import place, resample, silence, stereo_wav
from voxpipe.redaction import Redactor
from voxpipe.transports.memory import MemoryTransport, PlayedChunk

FRAME_SECS = 0.02
LEAD_IN_FRAMES = 25  # 0.5 s of silence before a caller speaks first
INPUT_RATE = 16000
OUTPUT_RATE = 24000


@dataclass(frozen=True)
class CallerTurn:
    """What the caller says in one turn: PCM16 mono at 16 kHz, and the words if known.

    ``barge_in_after_secs``: start this turn that long after the bot starts answering the previous one,
    while it speaks (a cough, an "uh-huh"), instead of once it has finished.
    """

    audio: bytes
    text: str | None = None
    barge_in_after_secs: float | None = None  # start this long after the bot's reply began, while it talks

    @classmethod
    def from_text(cls, text: str) -> CallerTurn:
        """Speak ``text`` with the local TTS (needs ``voxpipe[local]``)."""
        from voxpipe.providers.builtin.local_tts import speak

        return cls(speak(text, INPUT_RATE), text)

    @classmethod
    def from_wav(cls, path: str | Path, text: str | None = None) -> CallerTurn:
        """Read a 16-bit WAV (any rate, mono or stereo: the first channel is used)."""
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
            mono = samples[:: wav.getnchannels()].tobytes()
            return cls(resample(mono, wav.getframerate(), INPUT_RATE), text)


@dataclass
class CallResult:
    deployment: str
    mode: str
    started_at: float
    greeting: str = ""
    turns: list[MeasuredTurn] = field(default_factory=list)
    caller_texts: list[str | None] = field(default_factory=list)
    caller_turn_starts: list[float] = field(default_factory=list)  # when each caller turn began to be sent
    caller_audio: list[tuple[float, bytes]] = field(default_factory=list)
    bot_audio: list[PlayedChunk] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)
    errors: list[CallError] = field(default_factory=list)
    fallbacks: list[FallbackEvent] = field(default_factory=list)
    failure: CallFailure | None = None
    failure_heard_at: float | None = None  # time.monotonic() when the caller was told (on_failure)
    turn_taking: TurnTaking = field(default_factory=TurnTaking)
    ended_at: float = 0.0
    audio: AudioFormat = field(default_factory=AudioFormat)  # the line's format (caller_audio is at its input rate)
    keeping: CallKeeping | None = None  # what ``kept_record`` passes the record through

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def cost_usd(self) -> float:
        return sum(usage.cost_usd for usage in self.usage)

    def exchanges(self) -> list[tuple[str | None, MeasuredTurn]]:
        """Each measured turn with what the caller was scripted to say (``None`` when not known)."""
        said = self.caller_texts + [None] * max(0, len(self.turns) - len(self.caller_texts))
        return list(zip(said, self.turns, strict=False))

    def record(self, call_id: str = "", **labels: str | None) -> CallRecord:
        """The call's ``CallRecord``: turns, latency, usage and cost (``labels``: caller_id, experiment, variant)."""
        return CallRecord(
            **labels,
            call_id=call_id or uuid.uuid4().hex,
            deployment=self.deployment,
            mode=self.mode,
            started_at=datetime.now(UTC) - timedelta(seconds=time.monotonic() - self.started_at),
            duration_secs=self.ended_at - self.started_at,
            turns=[turn.record(index) for index, turn in enumerate(self.turns, 1)],
            usage=self.usage,
            errors=self.errors,
            fallbacks=self.fallbacks,
            failure=self.failure,
            turn_taking=self.turn_taking,
        )

    def kept_record(self, call_id: str = "", **labels: str | None) -> CallRecord:
        """``record()`` as the call keeps it: redacted, pointing at its recording (stored off the call's path),
        its trace sent (``CallKeeping.finish``). Call it once per call."""
        record = self.record(call_id, **labels)
        return self.keeping.finish(record) if self.keeping is not None else record

    def redact(self, redactor: Redactor) -> None:
        """Mask personal data in what was said and heard, before anything prints or stores it."""
        for turn, heard in zip(self.turns, redactor.texts([t.heard for t in self.turns]), strict=True):
            turn.heard, turn.reply = heard, redactor.text(turn.reply)
        self.caller_texts = [redactor.text(text) if text else text for text in self.caller_texts]
        self.greeting = redactor.text(self.greeting)
        self.errors = [redactor.error(error) for error in self.errors]
        if self.failure is not None:
            self.failure = redactor.failure(self.failure)

    def bot_track(self, sample_rate: int = OUTPUT_RATE) -> np.ndarray:
        """The bot's audio on the call's timeline (sample 0 = call start), as the caller heard it."""
        return place(
            [(c.started_at, resample(c.audio, c.sample_rate, sample_rate)) for c in self.bot_audio],
            self.started_at,
            sample_rate,
        )

    def caller_track(self, sample_rate: int = OUTPUT_RATE) -> np.ndarray:
        return place(
            [(t, resample(pcm, self.audio.sample_rate_in, sample_rate)) for t, pcm in self.caller_audio],
            self.started_at,
            sample_rate,
        )

    def write_wav(self, path: str | Path | BinaryIO, *, stereo: bool = False, sample_rate: int = OUTPUT_RATE) -> None:
        """Write the bot's side (mono), or caller left and bot right (``stereo``), on one timeline; a
        ``sensitive`` tool's entry silenced, as in the call's recording."""
        muted = self.keeping.muted if self.keeping is not None else []
        bot = self.bot_track(sample_rate)
        silence(bot, muted, self.started_at, sample_rate)
        if stereo:
            caller = self.caller_track(sample_rate)
            silence(caller, muted, self.started_at, sample_rate)
            data = stereo_wav(caller, bot, sample_rate)
            if isinstance(path, str | Path):
                Path(path).write_bytes(data)
            else:
                path.write(data)
            return
        with wave.open(str(path) if isinstance(path, Path) else path, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(bot.astype(np.int16).tobytes())


class _Caller:
    """Feeds audio on a real-time 20 ms schedule and watches what the bot plays back."""

    def __init__(self, transport: MemoryTransport, result: CallResult):
        self.transport = transport
        self.result = result
        self.next_frame_at = time.monotonic()
        self.frame_bytes = int(result.audio.sample_rate_in * FRAME_SECS) * 2
        self.hung_up = asyncio.Event()  # the call is over: its pipeline ended

    async def hear_failure(self, failure: CallFailure) -> None:
        """``on_failure`` of a simulated call: the caller is told ``failure.say`` and the line is hung up (the
        pipeline's own teardown, which a dead vendor connection can slow, goes on without the caller)."""
        self.result.failure, self.result.failure_heard_at = failure, time.monotonic()
        self.hung_up.set()

    def on_the_line(self, pcm: bytes) -> bytes:
        """A 16 kHz caller turn as the call's input carries it: at its rate, and through G.711 on a phone line."""
        pcm = resample(pcm, INPUT_RATE, self.result.audio.sample_rate_in)
        return g711.decode(g711.encode(pcm)) if self.result.audio.encoding == "mulaw" else pcm

    async def send(self, pcm: bytes) -> None:
        """Stream ``pcm`` in real time: each 20 ms frame is delivered when its last sample is 'captured'."""
        for offset in range(0, len(pcm), self.frame_bytes):
            if self.hung_up.is_set():
                return
            frame = pcm[offset : offset + self.frame_bytes].ljust(self.frame_bytes, b"\0")
            await asyncio.sleep(max(0.0, self.next_frame_at + FRAME_SECS - time.monotonic()))
            await self.transport.feed(frame)
            self.result.caller_audio.append((self.next_frame_at, frame))
            self.next_frame_at += FRAME_SECS

    async def silence_until(self, done: Callable[[], bool], timeout: float) -> None:
        silence = b"\0" * self.frame_bytes
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline and not self.hung_up.is_set():
            await self.send(silence)

    def bot_finished(self, since: float, settle_secs: float) -> Callable[[], bool]:
        """Whether the bot spoke after ``since`` and has been quiet for ``settle_secs``.

        Checked on every 20 ms frame, so each played chunk is examined once, as it arrives.
        """
        played = self.transport.played
        scanned = 0
        last: float | None = None

        def done() -> bool:
            nonlocal scanned, last
            for chunk in played[scanned:]:
                start = first_audible(chunk.audio, chunk.sample_rate)
                if start is not None and chunk.started_at + start >= since:
                    last = chunk.started_at + (last_audible(chunk.audio, chunk.sample_rate) or 0)
            scanned = len(played)
            return last is not None and time.monotonic() - last > settle_secs

        return done

    def bot_speaking_for(self, since: float, secs: float) -> Callable[[], bool]:
        """Whether the bot's first audible sound after ``since`` began ``secs`` ago (a caller about to barge in)."""
        played = self.transport.played
        scanned = 0
        began: float | None = None

        def done() -> bool:
            nonlocal scanned, began
            for chunk in played[scanned:]:
                start = first_audible(chunk.audio, chunk.sample_rate)
                if began is None and start is not None and chunk.started_at + start >= since:
                    began = chunk.started_at + start
            scanned = len(played)
            return began is not None and time.monotonic() - began >= secs

        return done

    def bot_done(self, since: float, upcoming: CallerTurn | None, settle_secs: float) -> Callable[[], bool]:
        """When the caller speaks next: after the bot's reply, or into it for a barge-in."""
        if upcoming is not None and upcoming.barge_in_after_secs is not None:
            return self.bot_speaking_for(since, upcoming.barge_in_after_secs)
        return self.bot_finished(since, settle_secs)


async def simulate_call(
    deployment: Deployment,
    turns: list[CallerTurn],
    *,
    settle_secs: float = 1.0,
    reply_timeout_secs: float = 20.0,
    call: CallContext | None = None,
    audio: AudioFormat | None = None,
    observers: Sequence[BaseObserver] = (),
) -> CallResult:
    """Run one call: greeting (if any), then each caller turn, waiting for the bot to finish replying.

    The simulated caller is the call's ``on_failure`` handler (it replaces any set on ``call``). ``audio`` is
    the line's format (default: ``call``'s, else 16 kHz in, 24 kHz out). A phone call is
    ``AudioFormat(8000, 8000, "mulaw")``: the caller's turns reach the pipeline at 8 kHz through G.711, and
    the providers are built for a mu-law call, as on Twilio.
    """
    call = call or CallContext()
    if audio is not None:
        call = replace(call, audio=audio)
    transport = MemoryTransport(call.audio.sample_rate_in, call.audio.sample_rate_out)
    call_pipeline, turn_meter = build_audio_call(deployment, transport, call)  # as the call host builds calls
    for observer in observers:  # e.g. the bench's scenario runs watching tool calls
        call_pipeline.worker.add_observer(observer)
    keeping = call_pipeline.keeping
    with keeping.active():
        result = await drive_call(
            CallUnderTest(
                deployment.name,
                deployment.mode,
                transport,
                call_pipeline.worker,
                turn_meter,
                call_pipeline.meter,
                call_pipeline.call,
            ),
            turns,
            opening=call_pipeline.opening_frames(),
            settle_secs=settle_secs,
            reply_timeout_secs=reply_timeout_secs,
        )
    result.keeping = keeping
    if keeping.redactor is not None:
        result.redact(keeping.redactor)
    return result


@dataclass
class CallUnderTest:
    """A pipeline to drive: its memory transport, its worker, and a turn meter observing it (with its clock)."""

    name: str
    mode: str
    transport: MemoryTransport
    worker: PipelineWorker
    turn_meter: TurnMeter
    meter: CallMeter | None = None
    call: CallContext | None = None  # its on_failure is pointed at the simulated caller


async def drive_call(
    target: CallUnderTest,
    turns: list[CallerTurn],
    *,
    opening: list[Frame] | None = None,
    settle_secs: float = 1.0,
    reply_timeout_secs: float = 20.0,
) -> CallResult:
    """Play ``turns`` into any pipeline built on a ``MemoryTransport`` (voxpipe's or hand-written)."""
    transport = target.transport
    line = target.call.audio if target.call is not None else AudioFormat()
    result = CallResult(target.name, target.mode, started_at=time.monotonic(), audio=line)
    caller = _Caller(transport, result)
    if target.call is not None:
        target.call.on_failure = caller.hear_failure
    spans: list[tuple[float, float]] = []  # each caller turn: its start and its last audible sample

    async def script() -> None:
        ready = asyncio.ensure_future(transport.ready.wait())
        await asyncio.wait([ready, asyncio.ensure_future(caller.hung_up.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():  # the call ended before it started (e.g. a provider failed at once)
            ready.cancel()
            result.ended_at = result.started_at = time.monotonic()
            return
        result.started_at = caller.next_frame_at = time.monotonic()
        upcoming = iter([*turns[1:], None])
        if opening:
            await target.worker.queue_frames(opening)
            first = turns[0] if turns else None
            await caller.silence_until(caller.bot_done(result.started_at, first, settle_secs), reply_timeout_secs)
        else:  # a line is open before anyone speaks; pipecat's VAD needs 0.4 s of audio to gauge volume
            await caller.send(b"\0" * caller.frame_bytes * LEAD_IN_FRAMES)
        for turn in turns:
            if caller.hung_up.is_set():
                break
            turn_start = caller.next_frame_at
            result.caller_turn_starts.append(turn_start)
            spans.append((turn_start, turn_start + (last_audible(turn.audio, INPUT_RATE) or 0.0)))
            await caller.send(caller.on_the_line(turn.audio))
            # A barge-in turn cut into the bot's speech: only what the bot says after it counts as the reply.
            since = turn_start if turn.barge_in_after_secs is None else caller.next_frame_at
            await caller.silence_until(caller.bot_done(since, next(upcoming), settle_secs), reply_timeout_secs)
            result.caller_texts.append(turn.text)
        result.bot_audio = list(transport.played)
        result.ended_at = time.monotonic()
        if not caller.hung_up.is_set():
            await target.worker.queue_frame(EndWorkerFrame())

    async def run() -> None:
        try:
            await runner.run()
        finally:
            caller.hung_up.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(target.worker)
    await asyncio.gather(run(), script())
    result.turns = target.turn_meter.turns()
    result.greeting = target.turn_meter.greeting()
    if target.meter is not None:
        result.usage = target.meter.usage()  # services report usage until they stop
        result.errors, result.fallbacks = target.meter.errors, target.meter.fallbacks
        result.failure = target.meter.failure
        result.turn_taking = target.meter.turn_taking()
    result.turn_taking.premature_replies = premature_replies(spans, result.bot_audio)
    return result
