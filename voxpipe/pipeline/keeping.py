"""What a call keeps besides its measurements: its stereo recording, its trace, and redaction of all of it.

One ``CallKeeping`` per call, made from the deployment (``recording:``, ``redact:``, tools marked
``sensitive``) and the environment (``OTEL_*``). It is the only seam the measured call path needs:

- the turn meter's ``tap``: the frames the turn meter already sees, so no observer of its own (pipecat wakes
  each observer through a queue and a task per frame): the audio the caller said and heard (the output
  transport's played frames, so barge-in cuts the bot channel where playback stopped) and, when tracing, the
  tool calls with their times. Nothing is tapped when nothing is kept: a plain call pays nothing. A text call
  (ConversationRelay) has no turn meter and no audio: when traced, ``observers`` watches its tool calls, and
  its turns come from the transport's ``TextTurnMeter``.
- ``processors``: with ``redact.before_llm``, a processor that masks transcripts before the model sees them.
- ``on_sensitive``: a ``sensitive`` tool's arguments become call secrets, masked everywhere, and the caller's
  audio since the last words before the entry is silenced (``muted``) in the recording and in any other copy
  of the call's audio (``voxpipe call --out``).
- ``active()``: log lines are redacted while the call runs.
- ``finish(record)``: the record of this connection redacted and pointing at its recording (a file of its own
  per connection, so a reconnected call keeps every connection's audio); the WAV handed to the uploader (built
  and stored off the call's path); the trace exported.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    InterimTranscriptionFrame,
    LLMMessagesAppendFrame,
    TranscriptionFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from voxpipe.config.models import Deployment
from voxpipe.pipeline import tracing
from voxpipe.pipeline.latency import FrameTap, TurnMeter
from voxpipe.pipeline.metering import CallMeter
from voxpipe.pipeline.text_latency import TextTurnMeter
from voxpipe.records import recording_store
from voxpipe.records.model import CallRecord, Recording
from voxpipe.records.recording import CallAudio
from voxpipe.records.recording_store import RecordingStore, open_recording_store, recording_name
from voxpipe.redaction import Redactor
from voxpipe.redaction.detect import number_runs
from voxpipe.redaction.logs import redacting_logs


class CallKeeping:
    """The recording, trace and redaction of one call (see the module docstring)."""

    def __init__(
        self, deployment: Deployment, turn_meter: TurnMeter | None = None, text_turns: TextTurnMeter | None = None
    ):
        """``turn_meter``: an audio call's; ``text_turns``: a text call's (traced, not recorded)."""
        self.deployment = deployment
        self.turn_meter = turn_meter
        self.text_turns = text_turns
        self.meter: CallMeter | None = None  # set by ``build_call``
        sensitive = any(tool.sensitive for tool in deployment.agent.tools)
        self.redactor = Redactor(deployment.redact) if deployment.redact or sensitive else None
        recording = deployment.recording
        audio_call = turn_meter is not None
        self.store: RecordingStore | None = (
            open_recording_store(recording.store, recording.retention_days)
            if recording.enabled and audio_call
            else None
        )
        self.muted: list[tuple[float, float]] = []  # (start, end) monotonic: sensitive entries, silenced
        self.audio = CallAudio(origin=0.0, muted=self.muted) if self.store else None
        self.tracing = (audio_call or text_turns is not None) and tracing.tracer() is not None
        self.tools: dict[str, tracing.ToolCall] = {}
        self._sensitive_calls: set[str] = set()
        if turn_meter is not None and (self.audio is not None or self.tracing):
            turn_meter.tap = self._tap  # the turn meter's frames, not an observer of our own (see ``FrameTap``)
        self.started = time.monotonic()

    def _tap(self, data: FramePushed, side: str | None, at: float) -> None:
        """Audio heard on either side, and (tracing) tool calls with their times."""
        frame = data.frame
        if side is not None:
            if self.audio is not None:
                (self.audio.caller if side == "caller" else self.audio.bot).add(at, frame.audio, frame.sample_rate)
            return
        if not self.tracing or not isinstance(frame, _TRACED):
            return
        if isinstance(frame, FunctionCallInProgressFrame) and frame.tool_call_id not in self.tools:
            self.tools[frame.tool_call_id] = tracing.ToolCall(frame.tool_call_id, frame.function_name, at)
        elif isinstance(frame, FunctionCallResultFrame):
            running = self.tools.get(frame.tool_call_id)
            if running is not None and running.ended is None:
                failed = frame.error is not None or (isinstance(frame.result, dict) and "error" in frame.result)
                self.tools[frame.tool_call_id] = tracing.ToolCall(
                    running.call_id, running.name, running.started, at, failed
                )

    def observers(self) -> list[BaseObserver]:
        """Observers a text call needs: its tool calls, when traced (an audio call's come through the tap)."""
        return [_ToolWatch(self._tap)] if self.tracing and self.turn_meter is None else []

    def processors(self) -> list[FrameProcessor]:
        """Processors to put between the STT and the user aggregator (cascade)."""
        return [TranscriptRedactor(self.redactor)] if self.redactor and self.redactor.before_llm else []

    @contextmanager
    def active(self) -> Iterator[None]:
        """Redact log lines while the call runs."""
        with redacting_logs(self.redactor) if self.redactor else nullcontext():
            yield

    def on_sensitive(self, tool_call_id: str, arguments: dict[str, Any]) -> None:
        """A ``sensitive`` tool was called: its arguments are never stored, nor the caller saying them."""
        if self.redactor is None or tool_call_id in self._sensitive_calls:  # (a redactor exists: a tool is sensitive)
            return
        self._sensitive_calls.add(tool_call_id)
        before = len(self.redactor.secrets)
        self.redactor.add_secret(arguments)
        if self.turn_meter is not None:  # an audio call
            self.muted.append((self._entry_start(self.redactor.secrets[before:]), time.monotonic()))

    def _entry_start(self, secrets: list[str]) -> float:
        """When the caller began the entry: right after the last transcript that does not mention it."""
        digits = [re.sub(r"\D", "", s) for s in secrets]
        heard = [e for e in self.turn_meter.events if e.stage == "stt_final"]

        def mentions(text: str) -> bool:
            runs = ["".join(t.digits for t in run) for run in number_runs(text)]
            return any(len(r) >= 3 and r in d for r in runs for d in digits if d) or any(
                s.lower() in text.lower() for s in secrets
            )

        first = next((i for i, e in enumerate(heard) if mentions(e.text)), len(heard))
        return heard[first - 1].at if first > 0 else self.turn_meter.clock.started_at

    def finish(self, record: CallRecord) -> CallRecord:
        """The record to store: redacted, with its recording's location; the recording and trace sent off."""
        if self.redactor:
            record = self.redactor.record(record)
        if self.store is not None and self.audio is not None:
            self.audio.origin = self.turn_meter.clock.started_at
            name = recording_name(record.call_id, record.started_at)  # this connection's own file
            kept = Recording(location=self.store.location(name), turns=[turn.index for turn in record.turns])
            record = record.model_copy(update={"recordings": [kept]})
            recording_store.uploader.submit(self.store, name, self.audio.wav)
        if self.tracing:
            try:
                tracing.export(self._trace(record))
            except Exception as exc:  # a broken exporter must never cost the call its record
                logger.error(f"trace of call {record.call_id} not exported: {exc!r}")
        return record

    def _trace(self, record: CallRecord) -> tracing.CallTrace:
        refs = self.meter.services if self.meter else {}
        primary = {
            role: tracing.StageService(role, configs[0].provider, configs[0].model)
            for role in self.deployment.roles()
            if (configs := self.deployment.services(role))
        }
        for ref in reversed(list(refs.values())):  # the primary's default model, when the file names none
            if ref.role in primary and primary[ref.role].provider == ref.provider.name:
                primary[ref.role] = tracing.StageService(ref.role, ref.provider.name, ref.model)
        usage = []
        offset = time.time() - time.monotonic()
        if self.turn_meter is not None:
            turns, started = self.turn_meter.turns(), self.turn_meter.clock.started_at or self.started
        else:
            turns, started = [t.measured() for t in self.text_turns.turns()] if self.text_turns else [], self.started
        for usage_record in self.meter.records if self.meter else []:
            ref = refs.get(usage_record.processor)
            if ref is not None:
                service = tracing.StageService(ref.role, ref.provider.name, ref.model or usage_record.model)
                counts = {
                    "gen_ai.usage.input_tokens": usage_record.prompt_tokens or 0,
                    "gen_ai.usage.output_tokens": usage_record.completion_tokens or 0,
                    "voxpipe.usage.characters": usage_record.characters or 0,
                }
                usage.append((usage_record.timestamp - offset, service, counts))
        return tracing.CallTrace(
            record=record,
            started=started,
            ended=time.monotonic(),
            turns=turns,
            services=primary,
            usage=usage,
            tools=list(self.tools.values()),
            text=self.turn_meter is None,
        )


_TRACED = (FunctionCallInProgressFrame, FunctionCallResultFrame)


class _ToolWatch(BaseObserver):
    """A text call's tool calls, with their times, for its trace (an audio call's come through its turn meter)."""

    def __init__(self, tap: FrameTap):
        super().__init__()
        self._tap = tap

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, _TRACED):
            self._tap(data, None, time.monotonic())


class TranscriptRedactor(FrameProcessor):
    """``redact.before_llm``: transcripts and caller messages (keypad entries) are masked before the model."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame | InterimTranscriptionFrame):
            frame.text = self.redactor.text(frame.text)
        elif isinstance(frame, LLMMessagesAppendFrame):
            frame.messages = self.redactor.messages(frame.messages)
        await self.push_frame(frame, direction)
