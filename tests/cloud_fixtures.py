"""Fixtures and helpers of the cloud provider tests (``tests/test_cloud_*.py``).

A test module imports the fixtures it uses (``cloud_fixture``, ``fakes_fixture``, ``calls_fixture``,
``silent_server_fixture``: pytest knows them as ``cloud``, ``fakes``, ``calls`` and ``silent_server``) along with
the helpers.

The built-in cloud plugins are registered in the process-wide registry with ``add_plugin`` (as their entry
points would), every vendor is one of the protocol-faithful fakes in ``tests/fakes`` on 127.0.0.1, and the
deployments are the example files in ``configs/``, whose endpoints are ``${VAR:-default}`` and so point at
the fakes through ``environ``.

Two ways to drive a provider:
- a whole call: ``simulate_call`` (memory transport), with ``calls`` recording each call's pipeline and every
  ``ErrorFrame`` it carried; or a Twilio Media Streams call through voxpipe's server (``phone_server``);
- one service alone: ``drive_service`` runs it in a two-processor pipeline, sends it frames, and collects
  what comes out and the errors it reports, then ends the pipeline and fails if it does not end promptly.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from pipecat.frames.frames import EndFrame, ErrorFrame, Frame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

import voxpipe.pipeline.host as call_host
from tests.fakes import Behaviour, FakeServer
from voxpipe.bench.simulated_call import CallerTurn
from voxpipe.config.loader import load_deployment
from voxpipe.config.models import AgentConfig, Deployment, VADConfig
from voxpipe.pipeline.builder import CallPipeline
from voxpipe.pipeline.fallback import HEALTH
from voxpipe.providers.builtin import (
    bedrock,
    deepgram,
    elevenlabs,
    openai_llm,
    openai_realtime,
    openai_stt,
    openai_tts,
)
from voxpipe.providers.cloud import close_shared
from voxpipe.providers.registry import Registry
from voxpipe.providers.spec import AudioFormat, Provider, ServiceRequest

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CLOUD_PLUGINS = (deepgram, openai_stt, openai_llm, bedrock, elevenlabs, openai_tts, openai_realtime)
KEY = "test-key"
PHONE = AudioFormat(sample_rate_in=8000, sample_rate_out=8000, encoding="mulaw")

FakeT = TypeVar("FakeT", bound=FakeServer)


@pytest_asyncio.fixture(name="cloud")
async def cloud_fixture(registry: Registry) -> AsyncIterator[Registry]:
    """The process-wide registry with voxpipe's cloud plugins added, as their entry points will add them.

    Per test, earlier provider failures are forgotten, and the clients shared on the test's event loop closed.
    """
    for plugin in CLOUD_PLUGINS:
        if registry.get(plugin.PROVIDER.kind, plugin.PROVIDER.name) is None:
            registry.add_plugin(plugin, "voxpipe", "0.1.0", label=plugin.__name__)
    HEALTH.clear()
    yield registry
    await close_shared()
    HEALTH.clear()


@pytest.fixture(name="fakes")
def fakes_fixture() -> Iterator[Callable[..., Any]]:
    """``fakes(FakeOpenAI, Behaviour(...), replies=[...])``: a started fake, stopped after the test."""
    started: list[FakeServer] = []

    def start(kind: type[FakeT], behaviour: Behaviour | None = None, **kwargs: Any) -> FakeT:
        fake = kind(behaviour or Behaviour(api_key=KEY), **kwargs).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture(name="silent_server")
def silent_server_fixture() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a listener that accepts connections (the kernel's backlog) and never says a word:
    a hung handshake."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def environ(**fakes: FakeServer) -> dict[str, str]:
    """The environment the example configs read, with each named vendor pointing at its fake."""
    env = {
        "OPENAI_API_KEY": KEY,
        "DEEPGRAM_API_KEY": KEY,
        "ELEVENLABS_API_KEY": KEY,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": "test-secret",
    }
    urls = {
        "openai": ("OPENAI_BASE_URL", lambda f: f.url + "/v1"),
        "realtime": ("OPENAI_REALTIME_URL", lambda f: f.ws_url + "/v1/realtime"),
        "deepgram": ("DEEPGRAM_URL", lambda f: f.ws_url),
        "elevenlabs": ("ELEVENLABS_URL", lambda f: f.ws_url),
        "bedrock": ("BEDROCK_ENDPOINT_URL", lambda f: f.url),
    }
    for name, fake in fakes.items():
        variable, url = urls[name]
        env[variable] = url(fake)
    return env


def config(name: str, **fakes: FakeServer) -> Deployment:
    """``configs/<name>.yaml``, its endpoints pointing at ``fakes``."""
    return load_deployment(CONFIGS / f"{name}.yaml", environ=environ(**fakes))


@functools.cache
def said(text: str) -> CallerTurn:
    """A caller turn: ``text`` spoken by the local TTS (real speech, which Silero VAD hears)."""
    return CallerTurn.from_text(text)


# ------------------------------------------------------------------------------------------ whole calls


class ErrorLog(BaseObserver):
    """Every ``ErrorFrame`` pushed in a call, once each."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[ErrorFrame] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, ErrorFrame) and data.frame not in self.errors:
            self.errors.append(data.frame)


@dataclass
class CallLog:
    """The pipelines ``simulate_call`` built, and the errors each carried."""

    pipelines: list[CallPipeline] = field(default_factory=list)
    errors: list[list[ErrorFrame]] = field(default_factory=list)


@pytest.fixture(name="calls")
def calls_fixture(monkeypatch: pytest.MonkeyPatch) -> CallLog:
    """Record the pipeline of every ``simulate_call`` of the test (with an ``ErrorLog`` observing it)."""
    log = CallLog()
    build_call = call_host.build_call  # simulate_call builds through the call host, as served calls do

    def recording(*args: Any, observers: Any = (), **kwargs: Any) -> CallPipeline:
        errors = ErrorLog()
        pipeline = build_call(*args, observers=[*observers, errors], **kwargs)
        log.pipelines.append(pipeline)
        log.errors.append(errors.errors)
        return pipeline

    monkeypatch.setattr(call_host, "build_call", recording)
    return log


# ------------------------------------------------------------------------------------------ one service


def build(
    provider: Provider,
    options: dict[str, Any],
    *,
    model: str | None = None,
    instructions: str = "You are a test agent.",
    audio: AudioFormat | None = None,
    vad: VADConfig | None = None,
) -> Any:
    """The pipecat service ``provider`` builds for one call."""
    request = ServiceRequest(
        call_id="test",
        model=model or provider.default_model,
        options=provider.options.model_validate(options),
        agent=AgentConfig(instructions=instructions),
        vad=(vad or VADConfig()).resolved(),
        audio=audio or AudioFormat(),
    )
    return provider.build(request)


class _Collector(FrameProcessor):
    def __init__(self, frames: list[Frame]) -> None:
        super().__init__()
        self._frames = frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self._frames.append(frame)
        await self.push_frame(frame, direction)


@dataclass
class ServiceRun:
    """What a driven service produced: the frames it pushed downstream, its errors, and when each came."""

    frames: list[Frame] = field(default_factory=list)
    errors: list[ErrorFrame] = field(default_factory=list)
    error_secs: list[float] = field(default_factory=list)
    ended_secs: float = 0.0

    def of(self, kind: type[Frame] | tuple[type[Frame], ...]) -> list[Any]:
        return [f for f in self.frames if isinstance(f, kind)]


async def drive_service(
    service: FrameProcessor,
    send: Callable[[PipelineWorker, ServiceRun], Awaitable[None]],
    until: Callable[[ServiceRun], bool],
    *,
    timeout: float,
    rates: tuple[int, int] = (16000, 24000),
    observers: Sequence[BaseObserver] = (),
) -> ServiceRun:
    """Run ``service``, let ``send`` queue frames (it may watch the run), wait for ``until`` (at most ``timeout``),
    then end the run.

    Fails if the pipeline does not end within 10 s of the ``EndFrame``: a hung service would hang a call.
    """
    run = ServiceRun()
    worker = PipelineWorker(
        Pipeline([service, _Collector(run.frames)]),
        params=PipelineParams(
            audio_in_sample_rate=rates[0],
            audio_out_sample_rate=rates[1],
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
        enable_rtvi=False,
        cancel_on_idle_timeout=False,
        observers=list(observers),
    )
    started = time.monotonic()

    @worker.event_handler("on_pipeline_error")
    async def on_error(_: PipelineWorker, frame: ErrorFrame) -> None:
        run.errors.append(frame)
        run.error_secs.append(time.monotonic() - started)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await send(worker, run)
        deadline = time.monotonic() + timeout
        while not until(run) and time.monotonic() < deadline and not running.done():
            await asyncio.sleep(0.02)
        ending = time.monotonic()
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(asyncio.shield(running), 10)
        run.ended_secs = time.monotonic() - ending
    finally:
        if not running.done():
            running.cancel()
    return run
