"""A call that cannot go on, end to end: build errors (finding 3), and what ``voxpipe call`` shows (findings 1, 8).

The provider faults of every kind are in ``test_fault_matrix.py``; here the call is driven the way a user
does it (``simulate_call``, the ``voxpipe call`` command), and its outputs are checked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel
from voxpipe_testkit.audio import tone

from tests.cloud_fixtures import CONFIGS, environ, fakes_fixture  # noqa: F401 (pytest fixtures, by name)
from tests.fakes import FakeOpenAI
from tests.fakes.openai_http import error_response, injected_failure
from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.builder import CallContext
from voxpipe.pipeline.experiment import ExperimentRouter
from voxpipe.pipeline.host import CallBookkeeping, run_measured_call
from voxpipe.providers.registry import Registry
from voxpipe.providers.spec import Provider, ServiceRequest, hookimpl
from voxpipe.records.model import CallFailure
from voxpipe.records.prometheus import CallMetrics
from voxpipe.records.store import RecordStore
from voxpipe.transports.memory import MemoryTransport

CASCADE = (
    "name: build-errors\nagent: {instructions: Only say scripted things.}\n"
    "vad: {provider: testkit_vad, options: {energy_threshold_dbfs: -35}}\n"
    "stt: {provider: testkit_stt, options: {transcripts: [hello]}}\nllm: LLM\n"
    "tts: {provider: testkit_tts, options: {secs_per_char: 0.01}}\n"
    'on_failure: {say: "Sorry, please hold for a colleague.", then: {transfer: {to: "+15550100"}}}\n'
)
GREETING = "  greeting: Hello, Harbor Bikes, how can I help you?\n"
TESTKIT_LLM = "{provider: testkit_llm, options: {replies: [{when: hello, say: Hi there}]}}"


class _NoOptions(BaseModel):
    pass


def _raise(request: ServiceRequest[Any]) -> Any:
    raise RuntimeError("the SDK refused the model name")


class _BrokenBuildPlugin:
    @hookimpl
    def voxpipe_providers(self) -> list[Provider]:
        return [Provider(name="raises_on_build", kind="llm", options=_NoOptions, build=_raise)]


@pytest.fixture
def with_broken_build(registry: Registry) -> Registry:
    if registry.get("llm", "raises_on_build") is None:
        registry.add_plugin(_BrokenBuildPlugin(), "tests", "0", label="raises_on_build")
    return registry


def hello() -> CallerTurn:
    return CallerTurn(tone(0.8, 16000), "hello")


async def test_a_build_error_moves_a_chain_on_and_with_no_backup_ends_the_call(with_broken_build: Registry) -> None:
    """Finding 3: a ``build()`` that raised crashed the call with a traceback, and nothing was recorded."""
    chain = parse_deployment(CASCADE.replace("LLM", f"[{{provider: raises_on_build}}, {TESTKIT_LLM}]"), environ={})
    result = await simulate_call(chain, [hello()], settle_secs=0.5, reply_timeout_secs=5)

    assert result.failure is None
    assert [(turn.heard, turn.reply) for turn in result.turns] == [("hello", "Hi there")]
    assert [(e.role, e.from_provider, e.to_provider) for e in result.fallbacks] == [
        ("llm", "raises_on_build", "testkit_llm")
    ]
    (error,) = result.errors
    assert (error.role, error.provider, error.kind, error.fatal) == ("llm", "raises_on_build", "build", False)
    assert "RuntimeError: the SDK refused the model name" in error.message

    alone = parse_deployment(CASCADE.replace("LLM", "{provider: raises_on_build}"), environ={})
    started = time.monotonic()
    result = await simulate_call(alone, [hello()], settle_secs=0.5, reply_timeout_secs=5)

    assert time.monotonic() - started < 2.0  # ended as it started: no reply timeout waited out
    failure = result.failure
    assert failure is not None and failure.say == "Sorry, please hold for a colleague."
    assert (failure.then, failure.transfer_to) == ("transfer", "+15550100")
    assert failure.error.summary() == (
        "llm raises_on_build: build: could not build the llm provider 'raises_on_build': "
        "RuntimeError: the SDK refused the model name"
    )
    assert result.record().failed and result.record().errors == [failure.error]


async def test_a_served_call_that_fails_is_recorded_with_its_failure_and_told_to_the_transport(
    with_broken_build: Registry, tmp_path: Path
) -> None:
    """The seam every transport uses: ``run_measured_call`` hands the failure to ``CallContext.on_failure`` once,
    ends the call, and saves the record with it."""
    told: list[CallFailure] = []

    async def transport_says(failure: CallFailure) -> None:
        told.append(failure)

    router = ExperimentRouter(parse_deployment(CASCADE.replace("LLM", "{provider: raises_on_build}"), environ={}))
    bookkeeping = CallBookkeeping(RecordStore(tmp_path / "calls.db"), CallMetrics())
    call = CallContext(on_failure=transport_says)

    record = await asyncio.wait_for(run_measured_call(router, MemoryTransport(), call, bookkeeping), 5)

    assert [f.error for f in told] == [record.failure.error] and record.failed
    assert bookkeeping.records.list()[0].failure == record.failure
    assert (
        'voxpipe_failed_calls_total{deployment="build-errors",kind="build",provider="raises_on_build",role="llm"} 1.0'
        in bookkeeping.metrics.render().decode()
    )


class SpeechRefusingOpenAI(FakeOpenAI):
    """``FakeOpenAI`` whose speech route alone rejects the key (401): transcription and chat work, and bill."""

    async def speech(self, request: web.Request) -> web.StreamResponse:
        self.record("http", method="POST", path=request.path, failed=401)
        return error_response(*injected_failure(401))


@pytest.mark.timeout(120)
def test_cli_call_that_fails_exits_1_fast_with_one_line_and_full_json(
    fakes: Callable[..., Any], run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    """Findings 1 and 8: a dead TTS gave an empty table, ~20 s per turn and exit 0; the JSON had no errors."""
    openai = fakes(SpeechRefusingOpenAI, transcripts=["When do you open?"], replies=["At nine."])
    path = tmp_path / "cascade.yaml"
    path.write_text((CONFIGS / "cascade-openai.yaml").read_text().replace(GREETING, ""))  # the fault meets a turn

    started = time.monotonic()
    done = run_cli(
        "call", str(path), "--say", "When do you open?", "--say", "And on Sunday?", "--json",
        "--records", str(tmp_path / "calls.db"), env=environ(openai=openai), timeout=100,
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("call failed: tts openai: authentication: ")
    assert elapsed < 30, elapsed  # startup, one caller turn and at once the end: not 20 s per turn
    report = json.loads(done.stdout)
    assert report["failed"] is True
    assert report["failure"]["error"]["role"] == "tts" and report["failure"]["then"] == "hangup"
    assert [(e["role"], e["provider"], e["kind"], e["fatal"]) for e in report["errors"]] == [
        ("tts", "openai", "authentication", True)
    ]
    assert report["fallbacks"] == []
    # The turn whose STT and LLM worked is kept, with what they cost.
    (turn,) = report["turns"]
    assert (turn["heard"], turn["reply"], turn["voice_to_voice_ms"]) == ("When do you open?", "At nine.", None)
    assert report["cost_usd"] > 0 and {u["role"] for u in report["usage"]} >= {"stt", "llm"}
