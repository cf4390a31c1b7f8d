"""The offline providers with their real packaged models, driven through pipecat (no mocks).

Each model loads once per process (about 1 s each); the whole file runs in about 10 s on two cores.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import numpy as np
import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import run_test
from pipecat.workers.runner import WorkerRunner

from voxpipe.config.models import VAD_PRESETS, AgentConfig, ToolConfig
from voxpipe.providers import AudioFormat, ProviderOptions, ServiceRequest
from voxpipe.providers.builtin import local_llm, local_tts, local_whisper
from voxpipe.providers.builtin._llama_llm import (
    conversation,
    load_llama,
    packaged_gguf,
    prompt_header,
    render_prompt,
)
from voxpipe.providers.builtin._whisper_stt import _repeats_itself, cut_repetition

DENTIST = (
    "You are the receptionist of Sunny Dental, a dental clinic. "
    "Opening hours are 9 am to 5 pm Monday to Friday. The clinic is at 12 High Street."
)


def request(
    options: ProviderOptions, *, instructions: str = DENTIST, audio: AudioFormat | None = None, **agent
) -> ServiceRequest:
    return ServiceRequest(
        call_id="test",
        model=None,
        options=options,
        agent=AgentConfig(instructions=instructions, **agent),
        vad=VAD_PRESETS[None],
        audio=audio or AudioFormat(),
    )


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length, ignoring case and punctuation."""
    ref, hyp = (re.sub(r"[^a-z0-9' ]", " ", text.lower()).split() for text in (reference, hypothesis))
    distances = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        previous_diagonal, distances[0] = distances[0], i
        for j, hyp_word in enumerate(hyp, 1):
            substitution = previous_diagonal + (ref_word != hyp_word)
            previous_diagonal = distances[j]
            distances[j] = min(distances[j] + 1, distances[j - 1] + 1, substitution)
    return distances[-1] / max(len(ref), 1)


async def speak(text: str, sample_rate: int) -> list[TTSAudioRawFrame]:
    tts = local_tts.build(request(local_tts.LocalTTSOptions(), audio=AudioFormat(sample_rate_out=sample_rate)))
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame(text)])
    return [frame for frame in down if isinstance(frame, TTSAudioRawFrame)]


async def test_tts_speaks_a_sentence_at_24khz() -> None:
    frames = await speak("Thank you for calling Sunny Dental, how can I help you today?", 24000)

    assert frames and {frame.sample_rate for frame in frames} == {24000}
    audio = np.frombuffer(b"".join(frame.audio for frame in frames), np.int16).astype(np.float32) / 32768
    assert 2.0 < len(audio) / 24000 < 6.0  # about 12 words at a normal pace
    assert np.sqrt(np.mean(audio**2)) > 0.02  # speech, not silence
    assert max(len(frame.audio) for frame in frames) <= 2 * int(24000 * 0.1)  # sent in short chunks


@pytest.mark.parametrize("trim_window", [True, False])
async def test_whisper_transcribes_tts_speech(trim_window: bool) -> None:
    text = (
        "Hello, I would like to book an appointment for next Tuesday morning. "
        "My name is John Smith. Could you please call me back this afternoon?"
    )
    frames = await speak(text, 16000)  # resampled by local_tts to the pipeline's input rate
    pcm = b"".join(frame.audio for frame in frames)
    stt = local_whisper.build(request(local_whisper.LocalWhisperOptions(trim_window=trim_window)))
    chunk = 2 * 320  # 20 ms at 16 kHz, as a transport delivers it
    audio = [InputAudioRawFrame(pcm[i : i + chunk], 16000, 1) for i in range(0, len(pcm), chunk)]

    down, _ = await run_test(
        stt,
        frames_to_send=[
            VADUserStartedSpeakingFrame(),
            *audio,
            VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=time.time()),
        ],
    )

    transcripts = [frame for frame in down if isinstance(frame, TranscriptionFrame)]
    assert len(transcripts) == 1 and transcripts[0].finalized
    assert word_error_rate(text, transcripts[0].text) <= 0.10, transcripts[0].text


def test_beams_run_only_for_a_transcript_greedy_decoding_is_unsure_of() -> None:
    """espeak-ng's "Hi, are you open on Sunday?" is heard as "High, ..." greedily (average log-prob about -0.4)
    and better with 5 beams; a bar above that takes the beams, a bar below it keeps the greedy words."""
    from voxpipe.bench.corpus import load_corpus
    from voxpipe.providers.builtin._whisper_stt import Decoding, load_whisper

    corpus = Path(__file__).resolve().parent.parent / "benchmarks" / "corpus"
    (utterance,) = [u for u in load_corpus(corpus) if u.name == "espeak/open-sunday.wav"]
    whisper = load_whisper(str(local_whisper.packaged_model_path()), 2, True)
    prompt = "Harbor Bikes, a bicycle repair shop. Opening hours, a tune-up, a flat tire repair, bookings and prices."

    def heard(beam_size: int, beam_below_log_prob: float | None = None) -> str:
        return whisper.transcribe(utterance.turn.audio, 16000, "en", Decoding(beam_size, prompt, beam_below_log_prob))

    greedy, beams = heard(1), heard(5)
    assert greedy.startswith("High") and beams.startswith("Hi,")  # the two searches differ on this utterance
    assert heard(5, beam_below_log_prob=-0.2) == beams  # unsure: the beams run
    assert heard(5, beam_below_log_prob=-1.0) == greedy  # sure enough for this bar: the greedy words stay


@pytest.mark.parametrize(
    ("text", "looped"),
    [
        ("Yes? Yes? Yes?", True),
        ("Where is the shop? Where is the shop?", True),
        ("Yes, yes.", False),
        ("That that is fine.", False),
        ("Can I come in at nine thirty tomorrow?", False),
    ],
)
def test_a_looping_trimmed_window_transcript_is_recognised(text: str, looped: bool) -> None:
    assert _repeats_itself(text) is looped


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (
            "Can you repair a flat tire while I wait? Can you repair a flat tire while",
            "Can you repair a flat tire while I wait?",
        ),
        ("How long does a tune-up take? How long does a tu", "How long does a tune-up take?"),
        ("Where is the shop? Where is the shop? Where is", "Where is the shop?"),
        ("My number is five five five five.", "My number is five five five five."),
        ("I want to, I want to book a tune-up.", "I want to, I want to book a tune-up."),
    ],
)
def test_a_decoding_loop_at_the_end_is_cut_off(text: str, kept: str) -> None:
    assert cut_repetition(text) == kept


async def ask(question: str) -> tuple[str, LLMContext]:
    """One turn through local_llm and the assistant aggregator; returns the streamed reply and the context."""
    llm = local_llm.build(request(local_llm.LocalLLMOptions(), tools=[ToolConfig(kind="end_call")]))
    end_call = FunctionSchema(name="end_call", description="Hang up.", properties={}, required=[])
    context = LLMContext([{"role": "user", "content": question}], tools=ToolsSchema([end_call]))
    recorder = Recorder()
    await run_test(
        Pipeline([llm, recorder, LLMContextAggregatorPair(context).assistant()]),
        frames_to_send=[LLMContextFrame(context)],
    )
    return "".join(frame.text for _, frame in recorder.frames if isinstance(frame, LLMTextFrame)), context


class Recorder(FrameProcessor):
    """Passes frames on and notes when each downstream one went by."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append((time.perf_counter(), frame))
        await self.push_frame(frame, direction)


async def test_llm_answers_from_the_instructions_deterministically() -> None:
    reply, context = await ask("What are your opening hours?")

    assert reply.strip() and reply == reply.strip() and "\n" not in reply
    assert re.search(r"\b(9|nine)\b", reply.lower()), reply
    assert context.get_messages()[-1] == {"role": "assistant", "content": reply}
    again, _ = await ask("What are your opening hours?")
    assert again == reply


def test_conversation_turns_the_context_into_transcript_lines() -> None:
    instructions, turns = conversation(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "Sunny Dental, hello!"},
            {"role": "user", "content": "Hi.\nI have a question."},
            {"role": "user", "content": [{"type": "text", "text": "Are you open?"}]},
            {"role": "assistant", "tool_calls": [{"id": "1", "type": "function"}]},
            {"role": "tool", "tool_call_id": "1", "content": "{}"},
        ],
        DENTIST,
    )
    assert instructions == f"{DENTIST}\nBe brief."
    assert turns == [("Agent", "Sunny Dental, hello!"), ("Caller", "Hi. I have a question. Are you open?")]


def test_the_prompt_is_a_transcript_ending_with_the_agents_turn() -> None:
    header = prompt_header("Opening hours are 9 to 5.", [("Hello?", "Hello! How can I help?")])
    assert render_prompt(header, [("Agent", "Sunny Dental, hello!"), ("Caller", "Are you open?")]) == (
        "Agent instructions: Opening hours are 9 to 5.\n\n"
        "Example exchanges:\nCaller: Hello?\nAgent: Hello! How can I help?\n\n"
        "The phone call, where the agent answers in one short sentence using only the information in the "
        "instructions:\nAgent: Sunny Dental, hello!\nCaller: Are you open?\nAgent:"
    )


class StopProbe(FrameProcessor):
    """Notes when an interruption or cancel passes, and asks the model's thread when it is free again."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_at = 0.0
        self.freed_at: asyncio.Future[float] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame | CancelFrame) and self.freed_at is None:
            self.sent_at = time.perf_counter()
            executor = load_llama(str(packaged_gguf()), 2048, 2).executor
            self.freed_at = asyncio.wrap_future(executor.submit(time.perf_counter))
        await self.push_frame(frame, direction)


async def interrupt_mid_reply(llm: FrameProcessor, stop: type[Frame]) -> tuple[StopProbe, Recorder]:
    """Start a reply, send ``stop`` once five tokens have streamed, and let the pipeline finish."""
    probe, recorder = StopProbe(), Recorder()
    worker = PipelineWorker(Pipeline([probe, llm, recorder]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(*_: object) -> None:
        started.set()

    async def drive() -> None:
        await asyncio.wait_for(started.wait(), timeout=5)
        context = LLMContext([{"role": "user", "content": "Tell me everything about the clinic, please."}])
        await worker.queue_frame(LLMContextFrame(context))
        async with asyncio.timeout(10):
            while sum(isinstance(frame, LLMTextFrame) for _, frame in recorder.frames) < 5:
                await asyncio.sleep(0.005)
        await worker.queue_frame(stop())
        if stop is not CancelFrame:
            await worker.queue_frame(EndFrame())

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())
    return probe, recorder


@pytest.mark.parametrize("stop", [InterruptionFrame, CancelFrame])
async def test_llm_stops_generating_when_interrupted(stop: type[Frame]) -> None:
    # No stop string: the model would go on writing the call for 400 tokens (about 6 s).
    llm = local_llm.build(request(local_llm.LocalLLMOptions(max_tokens=400, stop=[])))

    probe, recorder = await interrupt_mid_reply(llm, stop)

    assert probe.freed_at is not None
    assert await probe.freed_at - probe.sent_at < 0.3  # the model's thread is free again
    assert not any(isinstance(frame, LLMTextFrame) and at > probe.sent_at for at, frame in recorder.frames)
