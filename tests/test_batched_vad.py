"""Silero VAD batched across calls (voxpipe.pipeline.batched_vad): pipecat's decisions, one session, no thread.

On the corpus (real speech, three voices, with pauses long enough for pipecat's model resets), the batched
analyzer decides that speech started and stopped at the same frame as pipecat's own ``SileroVADAnalyzer``
fed Twilio's 20 ms frames, at 8 and 16 kHz, whether it is fed 20 ms or 60 ms frames; the windows of the
calls running together are scored in shared runs. Served calls over the Twilio simulator share the process's
one ONNX session, start no thread per call, and answer as fast as with pipecat's per-call-thread analyzer.
"""

from __future__ import annotations

import asyncio
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

import voxpipe.pipeline.batched_vad as batched_vad
import voxpipe.transports.media_transport as media_transport
from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import RATE, TwilioMediaSimulator
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.batched_vad import BatchedSileroVADAnalyzer, SileroBatch
from voxpipe.pipeline.latency import first_audible
from voxpipe.pipeline.shared_models import silero_session
from voxpipe.web.app import create_app

CORPUS = Path(__file__).resolve().parent.parent / "benchmarks" / "corpus"
VOICES, NAMES = ("heart", "joe", "espeak"), ("deposit.wav", "flat-tire.wav")
UTTERANCES = [CORPUS / voice / name for voice in VOICES for name in NAMES]
PARAMS = VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.6)


def speech(path: Path, rate: int) -> bytes:
    """The utterance as PCM16 at ``rate``."""
    with wave.open(str(path)) as wav:
        source_rate, pcm = wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    return soxr.resample(pcm.astype(np.float32), source_rate, rate).clip(-32768, 32767).astype("<i2").tobytes()


def a_caller(path: Path, rate: int) -> bytes:
    """Silence, the utterance, a pause (> 2 s: pipecat resets the model's state in it), the utterance, silence."""
    pause = bytes(int(2.5 * rate) * 2)
    utterance = speech(path, rate)
    return pause + utterance + pause + utterance + pause


async def decisions(analyzer: Any, audio: bytes, frame_bytes: int, rate: int) -> list[tuple[int, str]]:
    """(byte offset of the end of the frame, SPEAKING or QUIET) at each change the VAD controller would act on."""
    analyzer.set_sample_rate(rate)
    changes, reported = [], VADState.QUIET
    for end in range(frame_bytes, len(audio) + 1, frame_bytes):
        state = await analyzer.analyze_audio(audio[end - frame_bytes : end])
        if state != reported and state in (VADState.SPEAKING, VADState.QUIET):
            changes.append((end, state.name))
            reported = state
    return changes


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [20, 60])
async def test_speech_starts_and_stops_where_pipecats_silero_says(rate: int, frame_ms: int) -> None:
    callers = [a_caller(path, rate) for path in UTTERANCES]
    twilio_frame = rate * 2 // 50  # pipecat's analyzer as a plain Twilio bot runs it: 20 ms frames
    expected = [await decisions(SileroVADAnalyzer(params=PARAMS), audio, twilio_frame, rate) for audio in callers]
    frame = rate * 2 * frame_ms // 1000
    got = await asyncio.gather(
        *(decisions(BatchedSileroVADAnalyzer(params=PARAMS), audio, frame, rate) for audio in callers)
    )
    for path, want, have in zip(UTTERANCES, expected, got, strict=True):
        assert [kind for _, kind in have] == [kind for _, kind in want] == ["SPEAKING", "QUIET"] * 2, path
        for (at, _), (expected_at, _) in zip(have, want, strict=True):
            assert expected_at <= at < expected_at + frame, f"{path}: decided at byte {at}, pipecat at {expected_at}"
    batch = SileroBatch.of_running_loop()
    assert batch.windows >= 3 * batch.runs  # the six calls' windows were scored together, not one by one


async def test_calls_share_the_process_session_and_start_no_thread() -> None:
    before = threading.active_count()
    analyzers = [BatchedSileroVADAnalyzer(params=PARAMS) for _ in UTTERANCES]
    callers = [a_caller(path, RATE) for path in UTTERANCES]
    await asyncio.gather(*(decisions(a, audio, 960, RATE) for a, audio in zip(analyzers, callers, strict=True)))
    assert threading.active_count() == before
    assert all(not analyzer._executor._threads for analyzer in analyzers)  # pipecat's per-call VAD thread
    assert silero_session.cache_info().currsize == 1


DEPLOYMENT = """
name: desk
agent: {instructions: You take bookings.}
vad: {provider: silero, start_secs: 0.2, stop_secs: 0.2}
turn: {strategy: silence, timeout_secs: 0.6}
stt: {provider: testkit_stt}
llm: {provider: testkit_llm, options: {default_reply: "Noted."}}
tts: {provider: testkit_tts}
insecure: true
transport: {twilio: {validate_signatures: false}}
sessions: {store: memory}
"""


class CountingSession:
    """The process's Silero session, counting the rows of each run."""

    def __init__(self) -> None:
        self.session = silero_session()
        self.batch_sizes: list[int] = []

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.batch_sizes.append(feeds["input"].shape[0])
        return self.session.run(outputs, feeds)


async def gaps_of_calls(calls: int, turns: int) -> tuple[list[float], int]:
    """Turn gaps heard by ``calls`` concurrent simulated Twilio callers (end of speech to first audible reply),
    and the most threads the server process had while they talked."""
    utterance = speech(CORPUS / "heart" / "tune-up-price.wav", RATE)
    app = create_app([parse_deployment(DEPLOYMENT)], warm_up=False)
    gaps: list[float] = []
    most_threads = 0
    with RunningServer(app) as server:

        async def caller(index: int) -> None:
            nonlocal most_threads
            url = f"{server.ws_url}/desk/media"
            async with TwilioMediaSimulator(url, "wss://x/desk/media", None, call_sid=f"CA-vad-{index}") as call:
                await asyncio.sleep(0.5 + 0.13 * index)
                for _ in range(turns):
                    spoke_until = await call.speak(utterance)
                    most_threads = max(most_threads, threading.active_count())
                    await call.wait_for(lambda at=spoke_until: _reply_after(call, at) is not None, what="a reply")
                    gaps.append(((_reply_after(call, spoke_until) or 0.0) - spoke_until) * 1000)
                    await asyncio.sleep(1.0)
                await call.stop()

        await asyncio.gather(*(caller(i) for i in range(calls)))
    return gaps, most_threads


def _reply_after(call: TwilioMediaSimulator, moment: float) -> float | None:
    """When the caller started hearing the first audible bot audio after ``moment``."""
    for played in call.heard_after(moment):
        offset = first_audible(played.pcm, RATE)
        if offset is not None:
            return played.at + offset
    return None


async def test_served_calls_are_scored_together_without_a_thread_each(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingSession()
    monkeypatch.setattr(batched_vad, "silero_session", lambda: counting)
    idle_threads = threading.active_count()
    gaps, most_threads = await gaps_of_calls(calls=6, turns=1)
    assert len(gaps) == 6  # every caller was answered
    assert most_threads <= idle_threads + 3  # the server's own thread (and its pools), none per call
    assert max(counting.batch_sizes) > 1 and sum(counting.batch_sizes) > 1.5 * len(counting.batch_sizes)


async def test_a_turn_is_answered_as_fast_as_with_pipecats_analyzer(monkeypatch: pytest.MonkeyPatch) -> None:
    """One call's turn gap, heard on the simulator, against pipecat's analyzer (a thread per call) fed Twilio's
    20 ms frames: the batch's tick (10 ms) and the 60 ms frames add at most ~50 ms, 25 on average."""
    batched, _ = await gaps_of_calls(calls=1, turns=3)
    with monkeypatch.context() as plain:
        plain.setattr(batched_vad, "BatchedSileroVADAnalyzer", SileroVADAnalyzer)
        plain.setattr(media_transport, "CALLER_CHUNK_SECS", 0.02)
        reference, _ = await gaps_of_calls(calls=1, turns=3)
    assert np.median(batched) <= np.median(reference) + 60, (batched, reference)


class FailingAnalyzer(BatchedSileroVADAnalyzer):
    """An analyzer whose per-window step breaks (a bug), to show it breaks only its own call."""

    def _run_analyzer(self, buffer: bytes) -> VADState:
        raise RuntimeError("a broken call")


async def test_one_calls_failure_leaves_the_others_batch_mates_alone() -> None:
    audio = a_caller(UTTERANCES[0], RATE)
    broken = FailingAnalyzer(params=PARAMS)
    broken.set_sample_rate(RATE)
    results = await asyncio.gather(
        broken.analyze_audio(audio[:960]),
        decisions(BatchedSileroVADAnalyzer(params=PARAMS), audio, 960, RATE),
        return_exceptions=True,
    )
    assert isinstance(results[0], RuntimeError)
    assert results[1] == (await decisions(BatchedSileroVADAnalyzer(params=PARAMS), audio, 960, RATE))
