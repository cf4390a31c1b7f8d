"""The testkit's pipecat services: real subclasses of pipecat's STT, LLM and TTS bases and of its VAD analyzer.

Every service records what it received (``transcripts``, ``inferences``, ``spoken``, ...) so a test can
assert on it after a call.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FunctionCallFromLLM,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMServiceMetadataFrame,
    LLMTextFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.utils.time import time_now_iso8601

from voxpipe.providers.cloud import llm_settings
from voxpipe_testkit.audio import chunks, rms_dbfs, tone
from voxpipe_testkit.plugin import (
    ScriptedLLMOptions,
    ScriptedRealtimeOptions,
    ScriptedSTTOptions,
    ToneOptions,
    ToneTTSOptions,
)
from voxpipe_testkit.script import (
    CallTool,
    Say,
    Script,
    count_words,
    decode_tool_result,
    message_text,
    tokens_of,
)

AUDIO_CHUNK_SECS = 0.1


def _standard_messages(context: LLMContext) -> list[dict[str, Any]]:
    """A snapshot of the context's standard (dict) messages."""
    return [copy.deepcopy(m) for m in context.messages if isinstance(m, dict)]


def _prompt_tokens(messages: Sequence[Any], system_instruction: str | None) -> int:
    return count_words(system_instruction or "") + sum(count_words(message_text(m)) for m in messages)


def _tone_for(text: str, options: ToneOptions, sample_rate: int) -> bytes:
    return tone(len(text) * options.secs_per_char, sample_rate, options.frequency_hz, options.amplitude)


# --------------------------------------------------------------------------------------------- STT


class ScriptedSTTService(SegmentedSTTService):
    """``testkit_stt``: the n-th VAD utterance is transcribed as ``transcripts[n]`` (or ``"utterance n+1"``).

    Segmented like a batch STT: pipecat buffers the audio between the VAD's start and stop and calls
    ``run_stt`` once per utterance; TTFB (speech end -> final transcript) is measured by the base class.
    """

    def __init__(
        self,
        *,
        options: ScriptedSTTOptions,
        model: str | None = None,
        ttfs_p99_latency: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            settings=STTSettings(model=model, language=None),
            ttfs_p99_latency=options.latency_secs + 0.05 if ttfs_p99_latency is None else ttfs_p99_latency,
            **kwargs,
        )
        self._options = options
        self.segments: list[bytes] = []  # the PCM16 audio of each utterance, as received
        self.transcripts: list[str] = []

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        await self.start_processing_metrics()
        index = len(self.segments)
        self.segments.append(audio)
        scripted = self._options.transcripts
        text = scripted[index] if index < len(scripted) else f"utterance {index + 1}"
        if self._options.latency_secs:
            await asyncio.sleep(self._options.latency_secs)
        await self.stop_processing_metrics()
        self.transcripts.append(text)
        yield TranscriptionFrame(text=text, user_id=self._user_id, timestamp=time_now_iso8601())


# --------------------------------------------------------------------------------------------- LLM


@dataclass
class Inference:
    """One completion the scripted LLM ran: what it was given and what it decided."""

    system_instruction: str | None
    messages: list[dict[str, Any]]
    decision: Say | CallTool


class ScriptedLLMService(LLMService):
    """``testkit_llm``: answers an ``LLMContextFrame`` by its rules, the way pipecat's OpenAI service does.

    Text replies stream as ``LLMTextFrame`` tokens between ``LLMFullResponseStartFrame`` and
    ``LLMFullResponseEndFrame``; tool calls go through ``LLMService.run_function_calls``, so handlers
    registered with ``register_function`` run and their result comes back as a new context.
    """

    def __init__(
        self,
        *,
        options: ScriptedLLMOptions,
        model: str | None = None,
        system_instruction: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(settings=llm_settings(model, system_instruction), **kwargs)
        self._options = options
        self._script = Script(options.replies, options.default_reply)
        self.inferences: list[Inference] = []

    def can_generate_metrics(self) -> bool:
        return True

    @property
    def system_instruction(self) -> str | None:
        """The system instruction the next inference uses."""
        value = self._settings.system_instruction
        return value if isinstance(value, str) else None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            await self.start_processing_metrics()
            try:
                await self._process_context(frame.context)
            finally:
                await self.stop_processing_metrics()
                await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)

    async def _process_context(self, context: LLMContext) -> None:
        messages = _standard_messages(context)
        decision = self._script.decide(messages)
        self.inferences.append(Inference(self.system_instruction, messages, decision))
        prompt_tokens = _prompt_tokens(messages, self.system_instruction)
        await self.start_ttfb_metrics()
        if self._options.latency_secs:
            await asyncio.sleep(self._options.latency_secs)
        if isinstance(decision, CallTool):
            await self.stop_ttfb_metrics()
            await self.stop_ttfat_metrics()
            arguments = dict(decision.spec.arguments)
            await self._report_usage(prompt_tokens, count_words(json.dumps(arguments)) + 1)
            call = FunctionCallFromLLM(
                function_name=decision.spec.name,
                tool_call_id=f"call_{uuid.uuid4().hex[:12]}",
                arguments=arguments,
                context=context,
            )
            await self.run_function_calls([call])
            return
        tokens = tokens_of(decision.text)
        for index, token in enumerate(tokens):
            if index == 0:
                await self.stop_ttfb_metrics()
            elif self._options.tokens_per_sec:
                await asyncio.sleep(1 / self._options.tokens_per_sec)
            await self._push_llm_text(token)
        await self._report_usage(prompt_tokens, len(tokens))

    async def _report_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            )
        )

    async def run_inference(
        self,
        context: LLMContext,
        max_tokens: int | None = None,
        system_instruction: str | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> str | None:
        """Out-of-band inference (summaries and the like): the scripted text answer, never a tool call."""
        decision = self._script.decide(_standard_messages(context))
        return decision.text if isinstance(decision, Say) else None


# --------------------------------------------------------------------------------------------- TTS


class ToneTTSService(TTSService):
    """``testkit_tts``: speaks any text as a sine tone of ``len(text) * secs_per_char`` seconds."""

    def __init__(self, *, options: ToneTTSOptions, model: str | None = None, **kwargs: Any):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=model, voice=None, language=None),
            **kwargs,
        )
        self._options = options
        self.spoken: list[str] = []

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        await self.start_tts_usage_metrics(text)
        self.spoken.append(text)
        if self._options.latency_secs:
            await asyncio.sleep(self._options.latency_secs)
        audio = _tone_for(text, self._options, self.sample_rate)
        for chunk in chunks(audio, self.sample_rate, AUDIO_CHUNK_SECS):
            yield TTSAudioRawFrame(audio=chunk, sample_rate=self.sample_rate, num_channels=1, context_id=context_id)
        await self.stop_ttfb_metrics()


# --------------------------------------------------------------------------------------------- VAD


class EnergyVADAnalyzer(VADAnalyzer):
    """A pipecat VAD whose speech confidence is 1 above an RMS threshold, else 0 (32 ms windows)."""

    def __init__(
        self, *, threshold_dbfs: float = -40.0, sample_rate: int | None = None, params: VADParams | None = None
    ):
        super().__init__(sample_rate=sample_rate, params=params)
        self._threshold_dbfs = threshold_dbfs

    def num_frames_required(self) -> int:
        return int(self.sample_rate * 0.032)

    def voice_confidence(self, buffer: bytes) -> float:
        return 1.0 if rms_dbfs(buffer) >= self._threshold_dbfs else 0.0


# --------------------------------------------------------------------------------------------- realtime


def _tool_result(message: dict[str, Any]) -> tuple[str, str]:
    """(tool_call_id, content) of a tool message, or of the developer message pipecat delivers an asynchronous
    tool's result in once the conversation has moved on; ("", "") for any other message."""
    if message.get("role") == "tool":
        return str(message.get("tool_call_id", "")), message_text(message)
    payload = decode_tool_result(message_text(message))
    if isinstance(payload, dict) and payload.get("type") == "async_tool" and payload.get("status") == "finished":
        return str(payload.get("tool_call_id", "")), str(payload.get("result", ""))
    return "", ""


def _still_running(content: str) -> bool:
    """A tool message that is only pipecat's placeholder: a call still running (sync or asynchronous tools)."""
    if content == "IN_PROGRESS":
        return True
    placeholder = decode_tool_result(content)
    return (
        isinstance(placeholder, dict)
        and placeholder.get("type") == "async_tool"
        and placeholder.get("status") == "running"
    )


class ScriptedRealtimeService(LLMService):
    """``testkit_realtime``: a speech-to-speech stand-in that hears audio and answers in audio.

    Like a realtime API with server VAD: it runs an energy VAD on ``InputAudioRawFrame``s and proposes the
    user's turn boundaries (``ProposedUserStarted/StoppedSpeakingFrame``); when an utterance ends it pushes
    the user's ``TranscriptionFrame`` upstream, then answers: ``LLMFullResponseStartFrame``,
    ``TTSStartedFrame``, tone ``TTSAudioRawFrame``s, the reply as ``LLMTextFrame`` (not for the context) and
    ``TTSTextFrame``, ``TTSStoppedFrame``, ``LLMFullResponseEndFrame``. Tool calls go through
    ``run_function_calls``; the answer follows when the assistant aggregator sends the context with the
    result back (upstream), as it does for pipecat's realtime services. A user message written into the
    context by the application (the greeting request) is answered on the context frame.
    """

    def __init__(
        self,
        *,
        options: ScriptedRealtimeOptions,
        model: str | None = None,
        system_instruction: str | None = None,
        start_secs: float = 0.2,
        stop_secs: float = 0.2,
        **kwargs: Any,
    ):
        super().__init__(settings=llm_settings(model, system_instruction), **kwargs)
        self._options = options
        self._script = Script(options.replies, options.default_reply)
        self._start_secs = start_secs
        self._stop_secs = stop_secs
        self._out_rate = 24000
        # Energy VAD state.
        self._speaking = False
        self._speech_run_secs = 0.0
        self._silence_run_secs = 0.0
        self._utterance_secs = 0.0
        # Conversation state.
        self._context: LLMContext | None = None
        self._unseen_transcripts: list[str] = []  # ours, not yet seen back in the context
        self._answered: set[int] = set()  # id() of context messages already answered
        self._pending_calls: dict[str, str] = {}  # tool_call_id -> the user text that caused it
        self._responses: asyncio.Queue[tuple[str, Any]] | None = None
        self._responder: asyncio.Task | None = None
        self._in_response = False
        self._in_audio = False
        # What happened, for tests.
        self.transcripts: list[str] = []
        self.replies: list[str] = []
        self.system_instructions_seen: list[str | None] = []

    def can_generate_metrics(self) -> bool:
        return True

    def service_metadata_frame(self) -> LLMServiceMetadataFrame:
        return LLMServiceMetadataFrame(
            service_name=self.name, is_realtime_service=True, user_turn_strategies=ExternalUserTurnStrategies()
        )

    @property
    def system_instruction(self) -> str | None:
        value = self._settings.system_instruction
        return value if isinstance(value, str) else None

    async def setup(self, setup: FrameProcessorSetup) -> None:
        await super().setup(setup)
        self._out_rate = setup.audio_out_sample_rate  # answer at the pipeline's output rate

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._responses = asyncio.Queue()
        self._responder = self.create_task(self._respond_loop(), name="testkit_realtime_responder")

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._stop_responder()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._stop_responder()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop_responder()

    async def _stop_responder(self) -> None:
        if self._responder is not None:
            await self.cancel_task(self._responder)
            self._responder = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._handle_context(frame.context)
            return  # consumed, as an LLM service does
        if isinstance(frame, InputAudioRawFrame):
            await self._handle_audio(frame)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
        await self.push_frame(frame, direction)

    # -- hearing

    async def _handle_audio(self, frame: InputAudioRawFrame) -> None:
        duration = len(frame.audio) / (2 * frame.num_channels * frame.sample_rate)
        loud = rms_dbfs(frame.audio) >= self._options.energy_threshold_dbfs
        if loud:
            self._speech_run_secs += duration
            self._silence_run_secs = 0.0
        else:
            self._silence_run_secs += duration
            if not self._speaking:
                self._speech_run_secs = 0.0
        if self._speaking:
            self._utterance_secs += duration
            if self._silence_run_secs >= self._stop_secs:
                self._speaking = False
                self._speech_run_secs = 0.0
                await self._utterance_ended(self._utterance_secs - self._silence_run_secs)
        elif self._speech_run_secs >= self._start_secs:
            self._speaking = True
            self._utterance_secs = self._speech_run_secs
            await self.broadcast_frame(ProposedUserStartedSpeakingFrame)

    async def _utterance_ended(self, speech_secs: float) -> None:
        await self.broadcast_frame(ProposedUserStoppedSpeakingFrame)
        await self.start_ttfb_metrics()
        await self.start_processing_metrics()
        index = len(self.transcripts)
        scripted = self._options.transcripts
        text = scripted[index] if index < len(scripted) else f"utterance {index + 1}"
        self.transcripts.append(text)
        self._unseen_transcripts.append(text)
        await self.push_frame(
            TranscriptionFrame(text=text, user_id="", timestamp=time_now_iso8601(), finalized=True),
            FrameDirection.UPSTREAM,
        )
        await self._enqueue("heard", (text, speech_secs))

    # -- the context (greeting requests and tool results)

    async def _handle_context(self, context: LLMContext) -> None:
        self._context = context
        messages = [m for m in context.messages if isinstance(m, dict)]
        for message in messages:
            call_id, content = _tool_result(message)
            if call_id in self._pending_calls and not _still_running(content):
                await self._enqueue("tool", (call_id, self._pending_calls.pop(call_id), content))
        last = messages[-1] if messages else None
        if last is None or last.get("role") != "user" or id(last) in self._answered:
            return
        self._answered.add(id(last))
        text = message_text(last)
        if text in self._unseen_transcripts:  # our own transcript, already answered when heard
            self._unseen_transcripts.remove(text)
            return
        await self._enqueue("user", (text, 0.0))

    # -- answering, one response at a time

    async def _enqueue(self, kind: str, payload: Any) -> None:
        if self._responses is not None:
            await self._responses.put((kind, payload))

    async def _respond_loop(self) -> None:
        assert self._responses is not None
        while True:
            kind, payload = await self._responses.get()
            if kind != "heard":  # answering the context: the response starts now (heard speech: at its end)
                await self.start_ttfb_metrics()
                await self.start_processing_metrics()
            if kind in ("heard", "user"):
                text, speech_secs = payload
                await self._answer_user(text, speech_secs)
            else:
                call_id, user_text, content = payload
                function_name = self._function_name(call_id)
                decision = self._script.answer_tool_result(function_name, user_text, decode_tool_result(content))
                await self._speak(decision.text, input_audio_secs=0.0)

    def _function_name(self, call_id: str) -> str:
        for message in self._context.messages if self._context else []:
            if isinstance(message, dict):
                for call in message.get("tool_calls") or []:
                    if call.get("id") == call_id:
                        return str(call.get("function", {}).get("name", ""))
        return ""

    async def _answer_user(self, text: str, speech_secs: float) -> None:
        self.system_instructions_seen.append(self.system_instruction)
        decision = self._script.answer(text)
        if isinstance(decision, Say):
            await self._speak(decision.text, input_audio_secs=speech_secs)
            return
        self._in_response = True
        await self.push_frame(LLMFullResponseStartFrame())
        if self._options.latency_secs:
            await asyncio.sleep(self._options.latency_secs)
        await self.stop_ttfb_metrics()
        arguments = dict(decision.spec.arguments)
        await self._report_usage(speech_secs, 0.0, count_words(json.dumps(arguments)) + 1)
        await self.stop_processing_metrics()
        # The response ends before the call runs, so the user's turn is in the context before the call.
        await self.push_frame(LLMFullResponseEndFrame())
        self._in_response = False
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        self._pending_calls[call_id] = text
        context = self._context or LLMContext()
        await self.run_function_calls(
            [
                FunctionCallFromLLM(
                    function_name=decision.spec.name, tool_call_id=call_id, arguments=arguments, context=context
                )
            ]
        )

    async def _speak(self, text: str, *, input_audio_secs: float) -> None:
        self._in_response = True
        await self.push_frame(LLMFullResponseStartFrame())
        if self._options.latency_secs:
            await asyncio.sleep(self._options.latency_secs)
        audio = _tone_for(text, self._options, self._out_rate)
        self._in_audio = True
        await self.push_frame(TTSStartedFrame())
        for index, chunk in enumerate(chunks(audio, self._out_rate, AUDIO_CHUNK_SECS)):
            if index == 0:
                await self.stop_ttfb_metrics()
            await self.push_frame(TTSAudioRawFrame(audio=chunk, sample_rate=self._out_rate, num_channels=1))
        # As pipecat's realtime services do: LLMTextFrame for observers (not the context), TTSTextFrame
        # for the assistant aggregator, which writes it to the context once the audio before it played.
        llm_text = LLMTextFrame(text)
        llm_text.append_to_context = False
        await self.push_frame(llm_text)
        spoken = TTSTextFrame(text, text_type=TextType.SENTENCE)
        spoken.includes_inter_frame_spaces = True
        await self.push_frame(spoken)
        await self.push_frame(TTSStoppedFrame())
        self._in_audio = False
        self.replies.append(text)
        await self._report_usage(input_audio_secs, len(audio) / (2 * self._out_rate), count_words(text))
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())
        self._in_response = False

    async def _report_usage(self, input_audio_secs: float, output_audio_secs: float, text_tokens: int) -> None:
        messages = self._context.messages if self._context else []
        prompt = _prompt_tokens(messages, self.system_instruction)
        audio_in = round(input_audio_secs * 10)
        audio_out = round(output_audio_secs * 20)
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=prompt + audio_in,
                completion_tokens=text_tokens + audio_out,
                total_tokens=prompt + audio_in + text_tokens + audio_out,
                input_audio_tokens=audio_in,
                output_audio_tokens=audio_out,
            )
        )

    async def _interrupt(self) -> None:
        """The caller barged in: drop the response being produced (and the queued ones)."""
        if not self._in_response or self._responder is None:
            return
        await self.cancel_task(self._responder)
        if self._in_audio:
            await self.push_frame(TTSStoppedFrame())
        await self.push_frame(LLMFullResponseEndFrame())
        self._in_response = self._in_audio = False
        await self.stop_all_metrics()
        self._responses = asyncio.Queue()
        self._responder = self.create_task(self._respond_loop(), name="testkit_realtime_responder")
