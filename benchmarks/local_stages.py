"""First-result latency of each offline stage (local_whisper, local_llm, local_tts), through pipecat.

Ten caller lines are spoken by local_tts at 16 kHz, transcribed by local_whisper, and answered turn after
turn by local_llm (one growing conversation, as in a call, with the deployment's instructions and
examples); local_tts then speaks the replies at 24 kHz. Each service runs in its own pipeline, fed
frames as a call would feed it, and is timed from the frame that starts its work to its first output.
The LLM turns are run twice: reusing llama.cpp's KV cache (the default) and with the cache reset
before each turn, to show what the reuse saves. From the repository root::

    python benchmarks/local_stages.py                    # the offline deployment's agent
    python benchmarks/local_stages.py path/to/deployment.yaml

Models load before timing starts. Other processes on the machine slow every number: the load average is
printed with them.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path
from types import TracebackType

from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

import voxpipe
from voxpipe.config.loader import load_deployment
from voxpipe.config.models import Deployment
from voxpipe.providers import AudioFormat, ProviderOptions, ServiceRequest
from voxpipe.providers.builtin import local_llm, local_tts, local_whisper
from voxpipe.providers.builtin._llama_llm import load_llama, packaged_gguf

OFFLINE = Path(voxpipe.__file__).parent / "configs" / "offline.yaml"
STT_RATE, TTS_RATE = 16000, 24000
VAD_STOP_SECS = 0.2  # silence the VAD waits for before it reports the end of speech
CHUNK = 2 * STT_RATE // 50  # 20 ms of 16-bit audio, as a transport delivers it
GREETING_SECS = 2.0  # a call's first request comes after the greeting and the caller's first line
SENTENCE_END = re.compile(r"[.!?](\s|$)")

CALLER_LINES = [
    "Hi, are you open on Sunday?",
    "How much does a basic tune-up cost?",
    "I'd like to book a repair for Saturday morning.",
    "Can I bring my bike in at nine thirty tomorrow?",
    "My back wheel is making a clicking noise.",
    "Do you need a deposit for a booking?",
    "What time do you close on Friday?",
    "Do you fix electric bikes?",
    "How long does a tune-up take?",
    "Where is the shop?",
]


class Probe(FrameProcessor):
    """Passes frames on and queues each downstream one with the time it went by."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[tuple[float, Frame]] = asyncio.Queue()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.put_nowait((time.perf_counter(), frame))
        await self.push_frame(frame, direction)


class Running:
    """A service (then a ``Probe``, then any ``after`` it) running in the background while frames are fed in."""

    def __init__(self, service: FrameProcessor, *after: FrameProcessor) -> None:
        self.probe = Probe()
        pipeline = Pipeline([service, self.probe, *after])
        params = PipelineParams(enable_metrics=True, enable_usage_metrics=True)
        self._worker = PipelineWorker(pipeline, params=params, cancel_on_idle_timeout=False)
        self._runner = WorkerRunner()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        started = asyncio.Event()

        @self._worker.event_handler("on_pipeline_started")
        async def _started(*_: object) -> None:
            started.set()

        await self._runner.add_workers(self._worker)
        self._task = asyncio.create_task(self._runner.run())
        await asyncio.wait_for(started.wait(), timeout=10)
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self._worker.queue_frame(EndFrame())
        assert self._task is not None  # noqa: S101 — narrows the type: __aenter__ set it
        await self._task

    async def send(self, *frames: Frame) -> float:
        """Queue frames; returns when the last one was queued."""
        for frame in frames:
            await self._worker.queue_frame(frame)
        return time.perf_counter()

    async def until(self, last: type[Frame]) -> list[tuple[float, Frame]]:
        """The frames that come out up to and including the first ``last``."""
        frames = []
        while True:
            at, frame = await asyncio.wait_for(self.probe.frames.get(), timeout=60)
            frames.append((at, frame))
            if isinstance(frame, last):
                return frames


def request(options: ProviderOptions, deployment: Deployment, audio: AudioFormat | None = None) -> ServiceRequest:
    return ServiceRequest("bench", None, options, deployment.agent, deployment.vad.resolved(), audio or AudioFormat())


async def speak_all(deployment: Deployment, texts: list[str], rate: int) -> tuple[list[bytes], list[float]]:
    """Each text spoken by local_tts at ``rate``: the audio, and the time to its first audio frame."""
    tts = local_tts.build(request(local_tts.LocalTTSOptions(), deployment, AudioFormat(sample_rate_out=rate)))
    audio, first = [], []
    async with Running(tts) as running:
        for text in texts:
            sent = await running.send(TTSSpeakFrame(text))
            frames = await running.until(TTSStoppedFrame)
            chunks = [(at, frame) for at, frame in frames if isinstance(frame, TTSAudioRawFrame)]
            first.append(chunks[0][0] - sent)
            audio.append(b"".join(frame.audio for _, frame in chunks))
    return audio, first


async def transcribe_all(deployment: Deployment, utterances: list[bytes]) -> tuple[list[str], list[float]]:
    """Each utterance through local_whisper: the text, and seconds from the VAD's stop to the transcript."""
    stt = local_whisper.build(request(local_whisper.LocalWhisperOptions(), deployment))
    texts, seconds = [], []
    async with Running(stt) as running:
        for pcm in utterances:
            chunks = [InputAudioRawFrame(pcm[i : i + CHUNK], STT_RATE, 1) for i in range(0, len(pcm), CHUNK)]
            await running.send(VADUserStartedSpeakingFrame(), *chunks)
            stopped = await running.send(VADUserStoppedSpeakingFrame(stop_secs=VAD_STOP_SECS, timestamp=time.time()))
            at, frame = (await running.until(TranscriptionFrame))[-1]
            texts.append(frame.text)  # type: ignore[attr-defined]
            seconds.append(at - stopped)
    return texts, seconds


async def converse(
    deployment: Deployment, options: local_llm.LocalLLMOptions, lines: list[str], *, reuse_cache: bool
) -> tuple[list[str], list[dict[str, float]]]:
    """One call's turns through local_llm and the assistant aggregator: the replies and their timings."""
    llm = local_llm.build(request(options, deployment))
    shared = load_llama(options.model_path or str(packaged_gguf()), options.n_ctx, options.n_threads)
    context = LLMContext()
    replies, timings = [], []
    async with Running(llm, LLMContextAggregatorPair(context).assistant()) as running:
        await asyncio.sleep(GREETING_SECS)
        for line in lines:
            if not reuse_cache:  # forget the previous prompt, so the whole prompt is evaluated again
                await asyncio.wrap_future(shared.executor.submit(shared.llama.reset))
            context.add_message({"role": "user", "content": line})
            sent = await running.send(LLMContextFrame(context))
            frames = await running.until(LLMFullResponseEndFrame)
            texts = [(at, frame.text) for at, frame in frames if isinstance(frame, LLMTextFrame)]
            usage = next(
                data.value
                for _, frame in frames
                if isinstance(frame, MetricsFrame)
                for data in frame.data
                if isinstance(data, LLMUsageMetricsData)
            )
            reply, sentence_at = "", texts[-1][0]
            for at, text in texts:
                reply += text
                if SENTENCE_END.search(reply):
                    sentence_at = at
                    break
            streaming = texts[-1][0] - texts[0][0]
            timings.append(
                {
                    "first_token": texts[0][0] - sent,
                    "first_sentence": sentence_at - sent,
                    "tokens_per_sec": (usage.completion_tokens - 1) / streaming if streaming > 0 else 0.0,
                    "prompt_tokens": usage.prompt_tokens,
                }
            )
            replies.append("".join(text for _, text in texts))
    return replies, timings


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = (re.sub(r"[^a-z0-9' ]", " ", text.lower()).split() for text in (reference, hypothesis))
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1] / max(len(ref), 1)


def p50_p90(values: list[float]) -> str:
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return f"p50 {statistics.median(values):.3f}  p90 {deciles[8]:.3f}"


async def main(deployment_path: Path) -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    deployment = load_deployment(deployment_path)
    llm_options = local_llm.LocalLLMOptions(**deployment.services("llm")[0].options)

    utterances, caller_tts = await speak_all(deployment, CALLER_LINES, STT_RATE)
    heard, stt_secs = await transcribe_all(deployment, utterances)
    speech_secs = [len(pcm) / 2 / STT_RATE for pcm in utterances]
    replies, warm = await converse(deployment, llm_options, heard, reuse_cache=True)
    _, cold = await converse(deployment, llm_options, heard, reuse_cache=False)
    _, reply_tts = await speak_all(deployment, replies, TTS_RATE)

    print(f"deployment {deployment_path}  load average {os.getloadavg()[0]:.2f}  cpus {os.cpu_count()}")
    for line, text, reply in zip(CALLER_LINES, heard, replies, strict=True):
        print(f"  caller {line!r}  heard {text!r}  agent {reply!r}")
    print(f"stt seconds after VAD stop        {p50_p90(stt_secs)}")
    print(f"stt real-time factor              {p50_p90([s / d for s, d in zip(stt_secs, speech_secs, strict=True)])}")
    print(f"stt word error rate (mean)        {statistics.mean(map(word_error_rate, CALLER_LINES, heard)):.3f}")
    prompt_tokens = [t["prompt_tokens"] for t in warm]
    print(f"llm prompt tokens                 min {min(prompt_tokens):.0f}  max {max(prompt_tokens):.0f}")
    for name, turns in (("kv cache reused", warm), ("kv cache reset ", cold)):
        print(
            f"llm first token, {name}  first turn {turns[0]['first_token']:.3f}  "
            f"later turns {p50_p90([t['first_token'] for t in turns[1:]])}"
        )
    print(f"llm first sentence                {p50_p90([t['first_sentence'] for t in warm])}")
    print(f"llm tokens per second             {p50_p90([t['tokens_per_sec'] for t in warm])}")
    print(f"tts first audio, 16 kHz callers   {p50_p90(caller_tts)}")
    print(f"tts first audio, 24 kHz replies   {p50_p90(reply_tts)}")
    stt, tts = statistics.median(stt_secs), statistics.median(reply_tts)
    by_token = VAD_STOP_SECS + stt + statistics.median(t["first_token"] for t in warm) + tts
    by_sentence = VAD_STOP_SECS + stt + statistics.median(t["first_sentence"] for t in warm) + tts
    print(
        f"voice-to-voice p50 estimate       {by_token:.3f} (tts on the first token)  "
        f"{by_sentence:.3f} (tts on the first sentence)"
    )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OFFLINE))
