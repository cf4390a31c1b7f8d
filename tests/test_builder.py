"""Whole calls, built from YAML by ``build_call`` with the voxpipe-testkit providers, in both modes.

A scripted caller streams real-time 20 ms frames of 16 kHz PCM16 into voxpipe's in-memory transport: a tone
for each utterance, silence in between, waiting for the bot to finish each reply as a person would. The
testkit's energy VAD hears the tone as speech (cascade), or the realtime service's own VAD does (realtime).
Each call runs once per module; the tests assert on what it left behind: the LLM context, the audio played
to the caller, what each service received, and the metrics it reported.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import tool_functions
from pipecat.frames.frames import MetricsFrame
from pipecat.metrics.metrics import LLMUsageMetricsData, MetricsData, TTFBMetricsData, TTSUsageMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from voxpipe_testkit.audio import tone
from voxpipe_testkit.services import ScriptedLLMService, ScriptedRealtimeService, ScriptedSTTService, ToneTTSService

from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import Deployment
from voxpipe.pipeline.builder import CallContext, CallPipeline, build_call, run_call
from voxpipe.providers.registry import Registry
from voxpipe.transports.memory import MemoryTransport

pytestmark = pytest.mark.usefixtures("registry")

INSTRUCTIONS = "You are the voxpipe builder test agent. Answer from the script."
GREETING = "Hello, thanks for calling."
HEARD = ["good morning", "what's the weather in Paris"]
SECS_PER_CHAR = 0.015
BOT_TONE_HZ = 440.0
CALLER_TONE_HZ = 300.0
INPUT_RATE, OUTPUT_RATE = 16000, 24000
AUDIBLE = 500  # |sample| above this counts as sound

AGENT = f"""\
agent:
  instructions: {INSTRUCTIONS}
  greeting: {GREETING}
  tools:
    - kind: python
      name: get_weather
      description: The current weather of a city.
      parameters: {{type: object, properties: {{city: {{type: string}}}}, required: [city]}}
      options: {{function: "{tool_functions.__name__}:get_weather"}}
"""

# Shared by both modes. The first rule answers voxpipe's request to a realtime model to say the greeting.
REPLIES = f"""\
    replies:
      - when: "{GREETING}"
        say: "{GREETING}"
      - when: weather
        tool_call: {{name: get_weather, arguments: {{city: Paris}}}}
        say: "It is {{result.temperature_c}} degrees in {{result.city}}."
      - when: morning
        say: "Good morning! How can I help?"
"""

CASCADE = f"""\
name: builder-cascade
mode: cascade
{AGENT}vad: {{provider: testkit_vad}}
turn: {{strategy: silence, timeout_secs: 0.2}}
stt:
  provider: testkit_stt
  options: {{transcripts: {json.dumps(HEARD)}}}
llm:
  provider: testkit_llm
  options:
    latency_secs: 0.05
    tokens_per_sec: 100
{REPLIES}tts:
  provider: testkit_tts
  options: {{secs_per_char: {SECS_PER_CHAR}, frequency_hz: {BOT_TONE_HZ}}}
"""

REALTIME = f"""\
name: builder-realtime
mode: realtime
{AGENT}vad: {{stop_secs: 0.3}}
realtime:
  provider: testkit_realtime
  options:
    transcripts: {json.dumps(HEARD)}
    latency_secs: 0.05
    secs_per_char: {SECS_PER_CHAR}
    frequency_hz: {BOT_TONE_HZ}
{REPLIES}"""

YAML = {"cascade": CASCADE, "realtime": REALTIME}
WEATHER = tool_functions.get_weather("Paris")


class MetricsLog(BaseObserver):
    """Every metrics datum pushed in the call (first push only)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: list[MetricsData] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        if data.first_push and isinstance(data.frame, MetricsFrame):
            self.data.extend(data.frame.data)

    def of(self, processor: str, kind: type[MetricsData]) -> list[Any]:
        return [d for d in self.data if d.processor == processor and isinstance(d, kind)]


FRAME_SECS = 0.02
SETTLE_SECS = 0.4  # bot silence after which the caller takes its turn
REPLY_TIMEOUT_SECS = 10.0


def audible_span(pcm: bytes, rate: int) -> tuple[float, float] | None:
    """Seconds from the start of ``pcm`` to its first audible sample and to just after its last one."""
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype=np.int16).astype(np.int32)) > AUDIBLE)
    return (loud[0] / rate, (loud[-1] + 1) / rate) if loud.size else None


class Caller:
    """Streams PCM16 into a ``MemoryTransport`` as a phone line would: one 20 ms frame every 20 ms."""

    def __init__(self, transport: MemoryTransport):
        self.transport = transport
        self.frame_bytes = int(INPUT_RATE * FRAME_SECS) * 2
        self.next_frame_at = time.monotonic()
        self.sent: list[tuple[float, bytes]] = []  # (time the frame was due, frame)

    async def send(self, pcm: bytes) -> None:
        for offset in range(0, len(pcm), self.frame_bytes):
            frame = pcm[offset : offset + self.frame_bytes].ljust(self.frame_bytes, b"\0")
            await asyncio.sleep(max(0.0, self.next_frame_at - time.monotonic()))
            await self.transport.feed(frame)
            self.sent.append((self.next_frame_at, frame))
            self.next_frame_at += FRAME_SECS

    async def silence_until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + REPLY_TIMEOUT_SECS
        while not done():
            assert time.monotonic() < deadline, "the bot did not answer in time"
            await self.send(bytes(self.frame_bytes))

    def speech_end(self) -> float:
        """When the caller's last audible sample was due."""
        for due, frame in reversed(self.sent):
            span = audible_span(frame, INPUT_RATE)
            if span is not None:
                return due + span[1]
        raise AssertionError("the caller never made a sound")


def bot_audible(transport: MemoryTransport) -> list[tuple[float, float]]:
    """(start, end) of every audible stretch of played bot audio, chunk by chunk, in play order."""
    spans = []
    for chunk in transport.played:
        span = audible_span(chunk.audio, chunk.sample_rate)
        if span is not None:
            spans.append((chunk.started_at + span[0], chunk.started_at + span[1]))
    return spans


def bot_finished_after(transport: MemoryTransport, moment: float) -> Callable[[], bool]:
    """True once the bot started speaking after ``moment`` and has been quiet for ``SETTLE_SECS``."""

    def done() -> bool:
        spans = [s for s in bot_audible(transport) if s[0] >= moment]
        return bool(spans) and time.monotonic() - spans[-1][1] > SETTLE_SECS

    return done


@dataclass
class Call:
    """One finished call and everything the tests look at."""

    deployment: Deployment
    pipeline: CallPipeline
    transport: MemoryTransport
    caller: Caller
    metrics: MetricsLog
    secs: float
    speech_ends: list[float] = field(default_factory=list)  # per caller turn
    messages: list[dict[str, Any]] = field(default_factory=list)

    def service(self, role: str) -> Any:
        return self.pipeline.services[role]

    def reply_starts(self) -> list[float]:
        """When the bot's first audible sample after each caller turn was played."""
        spans = bot_audible(self.transport)
        return [next(start for start, _ in spans if start >= end) for end in self.speech_ends]


async def place_call(text: str, turns: int, *, greeting: bool = True) -> Call:
    """Build the call from YAML and play ``turns`` caller utterances into it (after the greeting, if any)."""
    deployment = parse_deployment(text if greeting else text.replace(f"  greeting: {GREETING}\n", ""), environ={})
    transport = MemoryTransport(INPUT_RATE, OUTPUT_RATE)
    metrics = MetricsLog()
    pipeline = build_call(deployment, transport, CallContext(), observers=[metrics])
    caller = Caller(transport)
    speech = tone(0.5, INPUT_RATE, CALLER_TONE_HZ, 0.3)
    speech_ends: list[float] = []

    async def script() -> None:
        await transport.ready.wait()
        caller.next_frame_at = started = time.monotonic()
        if greeting:
            await pipeline.worker.queue_frames(pipeline.opening_frames())
            await caller.silence_until(bot_finished_after(transport, started))
        else:
            # pipecat's VAD reads no volume until it has 0.4 s of audio: a real caller does not speak at once.
            await caller.send(bytes(int(0.5 * INPUT_RATE) * 2))
        for _ in range(turns):
            await caller.send(speech)
            speech_ends.append(caller.speech_end())
            await caller.silence_until(bot_finished_after(transport, speech_ends[-1]))
        await pipeline.hang_up()

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(run_call(pipeline), script()), timeout=30)
    messages = [m for m in pipeline.context.messages if isinstance(m, dict)]
    return Call(deployment, pipeline, transport, caller, metrics, time.monotonic() - started, speech_ends, messages)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["cascade", "realtime"])
async def call(request: pytest.FixtureRequest, registry: Registry) -> AsyncIterator[Call]:
    """A two-turn call with a greeting: small talk, then a question answered through a tool."""
    yield await place_call(YAML[request.param], turns=2)


# --------------------------------------------------------------------------------------------- helpers


def bot_samples(call: Call) -> np.ndarray:
    assert call.transport.played, "no audio came out of the transport"
    assert {c.sample_rate for c in call.transport.played} == {OUTPUT_RATE}
    return np.frombuffer(b"".join(c.audio for c in call.transport.played), dtype=np.int16)


def spoken_texts(call: Call) -> list[str]:
    """What the bot synthesized, in order (TTS requests, or the realtime service's replies)."""
    if call.deployment.mode == "cascade":
        tts = call.service("tts")
        assert isinstance(tts, ToneTTSService)
        return tts.spoken
    realtime = call.service("realtime")
    assert isinstance(realtime, ScriptedRealtimeService)
    return realtime.replies


def without_call_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = {c["id"] for m in messages for c in m.get("tool_calls") or []}
    text = json.dumps(messages)
    for number, call_id in enumerate(sorted(ids)):
        text = text.replace(call_id, f"call-{number}")
    return json.loads(text)


# --------------------------------------------------------------------------------------------- the two-turn call


def test_call_is_short(call: Call) -> None:
    assert call.secs < 12, f"{call.deployment.mode} call took {call.secs:.1f}s"


def test_transcripts_and_replies_land_in_the_context_in_order(call: Call) -> None:
    messages = without_call_ids(call.messages)
    if call.deployment.mode == "realtime":
        # voxpipe asks a realtime model to say the greeting with a user message, answered like any other.
        request = messages.pop(0)
        assert request["role"] == "user" and GREETING in request["content"]

    assert messages == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": "good morning"},
        {"role": "assistant", "content": "Good morning! How can I help?"},
        {"role": "user", "content": "what's the weather in Paris"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call-0",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    "type": "function",
                }
            ],
        },
        {"role": "tool", "content": json.dumps(WEATHER), "tool_call_id": "call-0"},
        {"role": "assistant", "content": "It is 21 degrees in Paris."},
    ]


def test_each_utterance_was_heard_once(call: Call) -> None:
    if call.deployment.mode == "cascade":
        stt = call.service("stt")
        assert isinstance(stt, ScriptedSTTService)
        assert stt.transcripts == HEARD
        # Each segment holds the 0.5 s utterance (plus pipecat's pre-roll and trailing-silence padding).
        assert all(0.5 <= len(segment) / 2 / INPUT_RATE <= 2.5 for segment in stt.segments)
    else:
        realtime = call.service("realtime")
        assert isinstance(realtime, ScriptedRealtimeService)
        assert realtime.transcripts == HEARD
    assert len(call.speech_ends) == len(HEARD)


def test_greeting_is_spoken_first(call: Call) -> None:
    assert spoken_texts(call)[0].strip() == GREETING
    caller_starts = min(due + span[0] for due, frame in call.caller.sent if (span := audible_span(frame, INPUT_RATE)))
    before_caller = [(start, end) for start, end in bot_audible(call.transport) if start < caller_starts]
    assert before_caller, "the bot said nothing before the caller spoke"
    greeting_secs = sum(end - start for start, end in before_caller)
    assert abs(greeting_secs - len(GREETING) * SECS_PER_CHAR) < 0.05


def test_bot_audio_came_out_of_the_transport(call: Call) -> None:
    samples = bot_samples(call).astype(np.float64)
    audible = samples[np.abs(samples) > AUDIBLE]

    # As long as everything the bot said (each text's tone is len(text) * secs_per_char).
    expected_secs = sum(len(text.strip()) for text in spoken_texts(call)) * SECS_PER_CHAR
    assert abs(len(audible) / OUTPUT_RATE - expected_secs) < 0.1 * expected_secs
    # And it is the TTS's tone, not the caller's audio coming back.
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.fft.rfftfreq(len(samples), 1 / OUTPUT_RATE)[int(np.argmax(spectrum))]
    assert abs(peak_hz - BOT_TONE_HZ) < 5


def test_each_reply_follows_its_turn(call: Call) -> None:
    replies = ["Good morning! How can I help?", "It is 21 degrees in Paris."]
    bounds = [*call.speech_ends, float("inf")]
    for index, (speech_end, reply_start) in enumerate(zip(call.speech_ends, call.reply_starts(), strict=True)):
        # voice to voice: end of the caller's speech to the first audible sample of the reply
        assert 0.2 < reply_start - speech_end < 3.0
        reply_secs = sum(e - s for s, e in bot_audible(call.transport) if bounds[index] <= s < bounds[index + 1])
        assert abs(reply_secs - len(replies[index]) * SECS_PER_CHAR) < 0.05


def test_tool_call_round_trip(call: Call) -> None:
    tool_results = [m for m in call.messages if m.get("role") == "tool"]
    assert [json.loads(m["content"]) for m in tool_results] == [WEATHER]
    if call.deployment.mode == "cascade":
        llm = call.service("llm")
        assert isinstance(llm, ScriptedLLMService)
        # Third inference: pipecat re-ran the LLM with the tool result as the last message.
        assert [i.messages[-1]["role"] for i in llm.inferences] == ["user", "user", "tool"]
        assert json.loads(llm.inferences[-1].messages[-1]["content"]) == WEATHER
    assert spoken_texts(call)[-1].strip() == "It is 21 degrees in Paris."


def test_instructions_reached_the_llm(call: Call) -> None:
    if call.deployment.mode == "cascade":
        llm = call.service("llm")
        assert isinstance(llm, ScriptedLLMService)
        seen = [inference.system_instruction for inference in llm.inferences]
        assert len(seen) == 3
    else:
        realtime = call.service("realtime")
        assert isinstance(realtime, ScriptedRealtimeService)
        seen = realtime.system_instructions_seen
        assert len(seen) == 3  # the greeting request and both caller turns
    # The deployment's instructions, and nothing else but (with tools that keep running when the caller speaks)
    # pipecat's note on how their results arrive.
    assert all(s is not None and (s == INSTRUCTIONS or s.startswith(INSTRUCTIONS + "\n\nASYNC TOOLS:")) for s in seen)


def test_services_report_pipecat_metrics(call: Call) -> None:
    log = call.metrics
    if call.deployment.mode == "cascade":
        stt, llm, tts = (call.service(role).name for role in ("stt", "llm", "tts"))
        assert len(log.of(stt, TTFBMetricsData)) == 2
        assert len(log.of(llm, TTFBMetricsData)) == 3
        assert all(d.value >= 0.05 for d in log.of(llm, TTFBMetricsData))  # latency_secs before the first token
        assert log.of(tts, TTFBMetricsData)
        assert sum(d.value for d in log.of(tts, TTSUsageMetricsData)) == sum(len(t) for t in spoken_texts(call))
        usage = log.of(llm, LLMUsageMetricsData)
        assert len(usage) == 3  # small talk, the tool call, the answer with its result
    else:
        realtime = call.service("realtime").name
        # one per response: the greeting, small talk, the tool call, the answer with its result
        assert len(log.of(realtime, TTFBMetricsData)) == 4
        assert all(d.value >= 0.05 for d in log.of(realtime, TTFBMetricsData))  # latency_secs
        usage = log.of(realtime, LLMUsageMetricsData)
        assert len(usage) == 4
        assert sum(d.value.output_audio_tokens or 0 for d in usage) > 0
    assert all(d.value.prompt_tokens > 0 and d.value.total_tokens > d.value.prompt_tokens for d in usage)


# --------------------------------------------------------------------------------------------- without a greeting


@pytest.mark.parametrize("mode", ["cascade", "realtime"])
async def test_without_greeting_the_caller_speaks_first(mode: str) -> None:
    call = await place_call(YAML[mode], turns=1, greeting=False)

    assert [m["role"] for m in call.messages] == ["user", "assistant"]
    assert call.messages[0]["content"] == "good morning"
    assert " ".join(text.strip() for text in spoken_texts(call)) == "Good morning! How can I help?"
    (speech_end,) = call.speech_ends
    assert bot_audible(call.transport)[0][0] > speech_end
