"""A served call is routed, measured, recorded and counted the same way whatever transport carried it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from voxpipe.bench.simulated_call import FRAME_SECS, INPUT_RATE, CallerTurn
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.builder import CallContext, CallPipeline
from voxpipe.pipeline.experiment import ExperimentRouter
from voxpipe.pipeline.host import CallBookkeeping, run_measured_call
from voxpipe.records.prometheus import CallMetrics
from voxpipe.records.store import RecordStore
from voxpipe.transports.memory import MemoryTransport

DEPLOYMENT = """
name: served
agent: {instructions: You are a receptionist., greeting: Hello.}
turn: {timeout_secs: 0.2}
stt: {provider: testkit_stt, options: {transcripts: ["hello there"]}}
llm: {provider: testkit_llm, options: {default_reply: "Hi, how can I help?"}}
tts: {provider: testkit_tts}
"""


async def _speak_then_hang_up(transport: MemoryTransport, built: asyncio.Future[CallPipeline], audio: bytes) -> None:
    call_pipeline = await built
    await transport.ready.wait()
    frame = int(INPUT_RATE * FRAME_SECS) * 2
    stream = b"\0" * frame * 75 + audio + b"\0" * frame * 150  # 1.5 s, speech, 3 s to answer
    next_at = time.monotonic()
    for offset in range(0, len(stream), frame):
        next_at += FRAME_SECS
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await transport.feed(stream[offset : offset + frame].ljust(frame, b"\0"))
    await call_pipeline.hang_up()


async def test_a_served_call_is_recorded_and_counted(tmp_path: Path) -> None:
    bookkeeping = CallBookkeeping(RecordStore(tmp_path / "calls.db"), CallMetrics())
    transport = MemoryTransport()
    built: asyncio.Future[CallPipeline] = asyncio.get_running_loop().create_future()

    async def on_built(call_pipeline: CallPipeline) -> None:
        await call_pipeline.worker.queue_frames(call_pipeline.opening_frames())
        built.set_result(call_pipeline)

    speech = CallerTurn.from_text("Hello there.").audio
    router = ExperimentRouter(parse_deployment(DEPLOYMENT))
    record, _ = await asyncio.gather(
        run_measured_call(router, transport, CallContext(caller_id="+15550123"), bookkeeping, on_built),
        _speak_then_hang_up(transport, built, speech),
    )
    assert [t.heard for t in record.turns] == ["hello there"]
    assert record.turns[0].reply == "Hi, how can I help?"
    assert 200 < record.turns[0].voice_to_voice_ms < 1500
    assert record.cost_usd > 0 and record.errors == []
    assert [r.call_id for r in bookkeeping.records.list()] == [record.call_id]
    metrics = bookkeeping.metrics.render().decode()
    assert 'voxpipe_active_calls{deployment="served"} 0.0' in metrics
    assert (
        'voxpipe_turn_latency_seconds_count{deployment="served",provider="testkit_tts",stage="voice_to_voice"} 1.0'
        in metrics
    )
    assert (
        'voxpipe_turn_latency_seconds_count{deployment="served",provider="testkit_llm",stage="llm_first_token"} 1.0'
        in metrics
    )
    greeting_and_reply = len("Hello.") + len("Hi, how can I help?")
    tts_usage = 'voxpipe_usage_total{model="tone-1",provider="testkit_tts",role="tts",unit="characters"}'
    assert f"{tts_usage} {greeting_and_reply}.0" in metrics
