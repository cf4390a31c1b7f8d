"""Every cloud provider against its fake failing in each way a vendor fails: a bad key (401), throttling (429),
a server error (503), a stream cut mid-response, and a first byte slower than ``response_timeout_secs``.

Each service runs alone in a pipeline (``drive_service``) and is sent one request. Each failure must end in a
clear, classified error within a few seconds (the category is what a fallback switches on), and the pipeline
must still end promptly afterwards: no failure may leave a call hanging.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pipecat.frames.frames import (
    InputAudioRawFrame,
    LLMContextFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.utils.errors import ErrorCategory
from voxpipe_testkit.audio import tone

from tests.cloud_fixtures import (  # noqa: F401 (pytest fixtures, by name)
    KEY,
    ServiceRun,
    build,
    cloud_fixture,
    drive_service,
    fakes_fixture,
    silent_server_fixture,
)
from tests.fakes import Behaviour, FakeBedrock, FakeDeepgram, FakeElevenLabs, FakeOpenAI, FakeOpenAIRealtime, FakeServer
from voxpipe.providers.builtin import bedrock, deepgram, elevenlabs, openai_llm, openai_realtime, openai_stt, openai_tts
from voxpipe.providers.spec import Provider

pytestmark = pytest.mark.usefixtures("cloud")

RATE = 16000
FRAME_BYTES = RATE // 50 * 2  # 20 ms of PCM16
RESPONSE_TIMEOUT_SECS = 1.0
ERROR_WITHIN_SECS = 6.0


async def ask_llm(worker: PipelineWorker, _: ServiceRun) -> None:
    await worker.queue_frame(LLMContextFrame(LLMContext([{"role": "user", "content": "When do you open?"}])))


async def ask_tts(worker: PipelineWorker, _: ServiceRun) -> None:
    await worker.queue_frame(TTSSpeakFrame("Hello, and thanks for calling Harbor Bikes today."))


async def speak(worker: PipelineWorker, _: ServiceRun, *, vad_frames: bool = True) -> None:
    """One second of 'speech' then one of silence, as 20 ms input frames (with the VAD's frames around it)."""
    pcm = tone(1.0, RATE) + bytes(2 * RATE)
    frames: list[Any] = [VADUserStartedSpeakingFrame(start_secs=0.2)] if vad_frames else []
    frames += [InputAudioRawFrame(pcm[i : i + FRAME_BYTES], RATE, 1) for i in range(0, len(pcm), FRAME_BYTES)]
    frames += [VADUserStoppedSpeakingFrame(stop_secs=0.2)] if vad_frames else []
    await worker.queue_frames(frames)


async def speak_to_realtime(worker: PipelineWorker, run: ServiceRun) -> None:
    await speak(worker, run, vad_frames=False)  # the server's VAD finds the turn


def produced(kind: type) -> Callable[[ServiceRun], bool]:
    return lambda run: bool(run.of(kind))


@dataclass(frozen=True)
class Vendor:
    """A provider, its fake, how to point the provider at the fake, and what to ask it."""

    provider: Provider
    fake: type[FakeServer]
    endpoint: Callable[[FakeServer], dict[str, Any]]
    ask: Callable[[PipelineWorker, ServiceRun], Awaitable[None]]
    answer: type
    fake_kwargs: dict[str, Any] = field(default_factory=dict)
    cannot: frozenset[str] = frozenset()  # failure modes the fake cannot produce for this provider
    heals: frozenset[str] = frozenset()  # failure modes the provider recovers from by itself (reconnecting)


OPENAI_HTTP = {"base_url": lambda f: {"base_url": f.url + "/v1"}}
VENDORS = {
    "deepgram": Vendor(
        deepgram.PROVIDER,
        FakeDeepgram,
        lambda f: {"base_url": f.ws_url},
        speak,
        TranscriptionFrame,
        {"transcripts": ["when do you open"]},
    ),
    "openai_stt": Vendor(
        openai_stt.PROVIDER,
        FakeOpenAI,
        OPENAI_HTTP["base_url"],
        speak,
        TranscriptionFrame,
        {"transcripts": ["when do you open"]},
        # The transcription is one JSON body (pipecat does not stream it): there is no chunk to cut after.
        cannot=frozenset({"cut"}),
    ),
    "openai_llm": Vendor(
        openai_llm.PROVIDER,
        FakeOpenAI,
        OPENAI_HTTP["base_url"],
        ask_llm,
        LLMTextFrame,
        {"replies": ["We open at nine in the morning, every day but Sunday."]},
    ),
    "bedrock": Vendor(
        bedrock.PROVIDER,
        FakeBedrock,
        lambda f: {"endpoint_url": f.url, "aws_access_key_id": KEY, "aws_secret_access_key": "test-secret"},
        ask_llm,
        LLMTextFrame,
        {"replies": ["We open at nine in the morning, every day but Sunday."]},
    ),
    "openai_tts": Vendor(openai_tts.PROVIDER, FakeOpenAI, OPENAI_HTTP["base_url"], ask_tts, TTSAudioRawFrame),
    "elevenlabs": Vendor(elevenlabs.PROVIDER, FakeElevenLabs, lambda f: {"url": f.ws_url}, ask_tts, TTSAudioRawFrame),
    "openai_realtime": Vendor(
        openai_realtime.PROVIDER,
        FakeOpenAIRealtime,
        lambda f: {"base_url": f.ws_url + "/v1/realtime"},
        speak_to_realtime,
        TTSAudioRawFrame,
        {"replies": ["We open at nine."]},
        # A dropped session is reopened (tests/test_cloud_realtime.py has the drop it cannot come back from).
        heals=frozenset({"cut"}),
    ),
}

FAILURES = {
    "401": (Behaviour(api_key="another-key"), {ErrorCategory.AUTHENTICATION}),
    "429": (Behaviour(api_key=KEY, fail_status=429, fail_count=100), {ErrorCategory.RATE_LIMIT}),
    "503": (Behaviour(api_key=KEY, fail_status=503, fail_count=100), {ErrorCategory.SERVER}),
    "cut": (Behaviour(api_key=KEY, cut_after_n_chunks=1), {ErrorCategory.CONNECTIVITY}),
    "slow": (Behaviour(api_key=KEY, first_byte_delay_s=3 * RESPONSE_TIMEOUT_SECS), {ErrorCategory.CONNECTIVITY}),
}


def options(vendor: Vendor, fake: FakeServer) -> dict[str, Any]:
    keys = {} if vendor.provider is bedrock.PROVIDER else {"api_key": KEY}
    return {**keys, **vendor.endpoint(fake), "response_timeout_secs": RESPONSE_TIMEOUT_SECS}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("name", list(VENDORS))
async def test_failure_ends_in_a_clear_error(name: str, failure: str, fakes: Callable[..., Any]) -> None:
    vendor = VENDORS[name]
    if failure in vendor.cannot:
        pytest.skip(f"the {vendor.fake.name} fake cannot {failure} this request")
    behaviour, categories = FAILURES[failure]
    fake = fakes(vendor.fake, behaviour, **vendor.fake_kwargs)
    service = build(vendor.provider, options(vendor, fake))

    if failure in vendor.heals:
        run = await drive_service(service, vendor.ask, lambda run: len(fake.entries("ws_connect")) > 1, timeout=5)
        assert len(fake.entries("ws_connect")) == 2 and run.errors == [], f"{name} did not heal a {failure}"
        return
    run = await drive_service(service, vendor.ask, lambda run: bool(run.errors), timeout=ERROR_WITHIN_SECS)

    assert run.errors, f"{name}: no error within {ERROR_WITHIN_SECS} s of a {failure}"
    first = run.errors[0]
    assert first.category in categories, f"{name} {failure}: {first.category}: {first.error}"
    assert first.processor is service and first.error
    if failure == "401":
        assert not service.is_usable  # a rejected key never comes right: the service takes no more work
    if failure == "slow":
        assert "within" in first.error or "timed out" in first.error.lower(), first.error
    if failure != "cut":
        assert not run.of(vendor.answer), "a failed request must not look answered"
    assert run.ended_secs < 10


@pytest.mark.parametrize("name", list(VENDORS))
async def test_each_provider_answers_its_fake(name: str, fakes: Callable[..., Any]) -> None:
    """The control case of the failure matrix: the same request, a healthy fake, an answer and no error."""
    vendor = VENDORS[name]
    fake = fakes(vendor.fake, **vendor.fake_kwargs)
    service = build(vendor.provider, options(vendor, fake) | {"response_timeout_secs": 5.0})

    run = await drive_service(service, vendor.ask, produced(vendor.answer), timeout=8.0)

    assert run.of(vendor.answer), f"{name} did not answer; errors: {[e.error for e in run.errors]}"
    assert not run.errors
    assert fake.errors == []


@pytest.mark.parametrize("name", ["deepgram", "elevenlabs", "openai_realtime"])
async def test_a_hung_handshake_ends_at_the_connect_timeout(name: str, silent_server: str) -> None:
    vendor = VENDORS[name]
    endpoint = {"deepgram": "base_url", "elevenlabs": "url"}.get(name, "base_url")
    options = {"api_key": KEY, endpoint: f"ws://{silent_server}", "connect_timeout_secs": 1.0}
    service = build(vendor.provider, options)

    run = await drive_service(service, vendor.ask, lambda run: bool(run.errors), timeout=ERROR_WITHIN_SECS)

    assert run.errors and run.errors[0].category is ErrorCategory.CONNECTIVITY, [e.error for e in run.errors]
    assert run.error_secs[0] < 3.0
