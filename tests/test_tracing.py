"""OpenTelemetry traces: one trace per call, spans call -> turn -> stt / llm / tts / tool (issue 18).

An in-memory span exporter receives the spans of real calls: a cascade call with a tool (testkit providers),
an OpenAI Realtime call against ``tests/fakes``, and a served ConversationRelay call with a tool (the relay
simulator plays Twilio). Errors and fallbacks are span events. With no ``OTEL_*``
variable set, tracing is off and the SDK is never imported.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.cloud_fixtures import cloud_fixture, config, fakes_fixture  # noqa: F401 (pytest fixtures, by name)
from tests.fakes import FakeOpenAIRealtime, ToolCall
from tests.test_cloud_providers import WEATHER_TOOL, with_weather_tool
from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline import tracing
from voxpipe.pipeline.latency import MeasuredTurn
from voxpipe.records.model import CallError, CallRecord, FallbackEvent, TurnRecord

CASCADE = f"""
name: traced
agent:
  instructions: You are a receptionist.
  tools: [{WEATHER_TOOL}]
vad: {{stop_secs: 0.2}}
turn: {{strategy: silence, timeout_secs: 0.2}}
stt: {{provider: testkit_stt, options: {{transcripts: ["hello", "weather in paris"]}}}}
llm:
  provider: testkit_llm
  options:
    latency_secs: 0.1
    default_reply: Hi, how can I help?
    replies:
      - when: weather
        tool_call: {{name: get_weather, arguments: {{city: Paris}}}}
        say: "It is {{result.temperature_c}} degrees."
tts: {{provider: testkit_tts, options: {{latency_secs: 0.05}}}}
"""


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    yield exporter
    tracing.use_tracer_provider(None)


@pytest.fixture(scope="module")
def caller() -> list[CallerTurn]:
    return [CallerTurn.from_text("Hello."), CallerTurn.from_text("What is the weather in Paris?")]


def _tree(finished: tuple[ReadableSpan, ...]) -> dict[str, Any]:
    """Spans by name, and the names of each span's children in start order."""
    by_id = {span.context.span_id: span for span in finished}
    children: dict[str, list[str]] = {}
    for span in sorted(finished, key=lambda s: s.start_time or 0):
        if span.parent is not None:
            children.setdefault(by_id[span.parent.span_id].name, []).append(span.name)
    return {"spans": {s.name: s for s in finished}, "children": children}


async def test_cascade_call_with_a_tool(spans: InMemorySpanExporter, caller: list[CallerTurn]) -> None:
    result = await simulate_call(parse_deployment(CASCADE), caller, settle_secs=0.6)
    record = result.kept_record(variant="b", experiment="exp")
    finished = spans.get_finished_spans()
    assert len({span.context.trace_id for span in finished}) == 1  # one trace per call
    tree = _tree(finished)
    assert tree["children"]["call traced"] == ["turn 1", "turn 2"]
    assert tree["children"]["turn 1"] == ["stt scripted-stt-1", "chat scripted-llm-1", "tts tone-1"]
    assert tree["children"]["turn 2"][0] == "stt scripted-stt-1"
    assert "execute_tool get_weather" in tree["children"]["turn 2"]
    named = tree["spans"]
    call = named["call traced"].attributes
    assert call["voxpipe.deployment"] == "traced" and call["voxpipe.variant"] == "b"
    assert call["voxpipe.experiment"] == "exp" and call["voxpipe.call_id"] == record.call_id
    assert call["voxpipe.cost_usd"] == pytest.approx(record.cost_usd) and record.cost_usd > 0
    turns = [s for s in finished if s.name.startswith("turn ")]
    for span, turn in zip(sorted(turns, key=lambda s: s.name), record.turns, strict=True):
        assert span.attributes["voxpipe.voice_to_voice_ms"] == turn.voice_to_voice_ms
        assert span.attributes["voxpipe.turn.heard"] == turn.heard
        # the turn span lasts the voice-to-voice latency (a tool's span may stretch it)
        assert (span.end_time - span.start_time) / 1e6 >= (turn.voice_to_voice_ms or 0) - 1
    llm = [s for s in finished if s.name == "chat scripted-llm-1"]
    assert all(s.attributes["gen_ai.system"] == "testkit" for s in llm)
    assert all(s.attributes["gen_ai.operation.name"] == "chat" for s in llm)
    assert all(s.attributes["gen_ai.request.model"] == "scripted-llm-1" for s in llm)
    assert sum(s.attributes.get("gen_ai.usage.input_tokens", 0) for s in llm) > 0
    assert sum(s.attributes.get("gen_ai.usage.output_tokens", 0) for s in llm) > 0
    tool = named["execute_tool get_weather"]
    assert tool.attributes["gen_ai.tool.name"] == "get_weather" and tool.attributes["gen_ai.tool.call.id"]
    assert "city" not in str(dict(tool.attributes))  # tool arguments are never exported
    stt, tts = named["stt scripted-stt-1"], named["tts tone-1"]
    assert stt.attributes["voxpipe.stage"] == "stt" and tts.attributes["gen_ai.request.model"] == "tone-1"
    assert tts.attributes["voxpipe.usage.characters"] > 0


async def test_conversation_relay_call_with_a_tool(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    """A relay call has no audio (Twilio speaks): its turns run from the prompt to the reply's last token."""
    from tests.simulators.server import RunningServer
    from tests.test_conversation_relay import DEPLOYMENT, TOKEN, relay
    from voxpipe.records.store import RecordStore
    from voxpipe.web.app import create_app

    text = DEPLOYMENT.replace("{db}", str(tmp_path / "s.db")).replace(
        "    - kind: end_call\n", f"    - kind: end_call\n    - {WEATHER_TOOL}\n"
    )
    text = text.replace(
        "      - {when: hours,",
        '      - {when: weather, tool_call: {name: get_weather, arguments: {city: Paris}}, say: "Sunny."}\n'
        "      - {when: hours,",
    )
    records = RecordStore(tmp_path / "calls.db")
    app = create_app([parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN})], warm_up=False, records=records)
    with RunningServer(app) as running:
        async with relay(running) as call:
            await call.prompt("what are your hours")
            assert (await call.reply())[0] == "We are open nine to five."
            await call.prompt("the weather in paris")
            assert (await call.reply())[0] == "Sunny."
        deadline = time.monotonic() + 10
        while not any(s.name == "call relay" for s in spans.get_finished_spans()):
            assert time.monotonic() < deadline, "no trace of the relay call"
            await asyncio.sleep(0.05)
    finished = spans.get_finished_spans()
    assert len({span.context.trace_id for span in finished}) == 1
    tree = _tree(finished)
    assert tree["children"]["call relay"] == ["turn 1", "turn 2"]
    assert tree["children"]["turn 1"] == ["chat scripted-llm-1"]
    assert tree["children"]["turn 2"] == ["chat scripted-llm-1", "execute_tool get_weather"]
    [record] = records.list()
    assert [t.heard for t in record.turns] == ["what are your hours", "the weather in paris"]  # the transcript
    call_span = tree["spans"]["call relay"].attributes
    assert call_span["voxpipe.call_id"] == record.call_id == call.session_id
    for span, turn in zip(
        sorted((s for s in finished if s.name.startswith("turn ")), key=lambda s: s.name), record.turns, strict=True
    ):
        assert (
            span.attributes["voxpipe.turn.heard"] == turn.heard and span.attributes["voxpipe.turn.reply"] == turn.reply
        )
        assert span.attributes["voxpipe.reply_complete_ms"] == turn.reply_complete_ms
        assert (span.end_time - span.start_time) / 1e6 == pytest.approx(turn.reply_complete_ms, abs=1.5)
    llm = [s for s in finished if s.name == "chat scripted-llm-1"]
    assert all(s.attributes["gen_ai.operation.name"] == "chat" for s in llm)
    assert sum(s.attributes.get("gen_ai.usage.input_tokens", 0) for s in llm) > 0


@pytest.mark.usefixtures("cloud")
async def test_realtime_call_against_the_fake(
    spans: InMemorySpanExporter, fakes: Callable[..., Any], caller: list[CallerTurn]
) -> None:
    realtime = fakes(
        FakeOpenAIRealtime,
        transcripts=["Hello.", "Weather in Paris?"],
        replies=["Hello there.", "Hi!", ToolCall("get_weather", {"city": "Paris"}), "21 degrees."],
    )
    deployment = with_weather_tool(config("realtime-openai", realtime=realtime))
    result = await simulate_call(deployment, caller, settle_secs=0.7)
    record = result.kept_record()
    assert [t.reply for t in record.turns] == ["Hi!", "21 degrees."]
    tree = _tree(spans.get_finished_spans())
    assert tree["children"]["call realtime-openai"] == ["turn 1", "turn 2"]
    assert tree["children"]["turn 1"] == ["chat gpt-realtime"]
    assert (
        tree["children"]["turn 2"][0] == "chat gpt-realtime"
        and "execute_tool get_weather" in tree["children"]["turn 2"]
    )
    chat = tree["spans"]["chat gpt-realtime"].attributes
    assert chat["gen_ai.system"] == "openai" and chat["gen_ai.request.model"] == "gpt-realtime"
    assert chat["voxpipe.stage"] == "realtime" and chat["voxpipe.provider"] == "openai_realtime"
    assert tree["spans"]["call realtime-openai"].attributes["voxpipe.cost_usd"] == pytest.approx(record.cost_usd)


def test_errors_and_fallbacks_are_span_events(spans: InMemorySpanExporter) -> None:
    now = time.monotonic()
    record = CallRecord(
        call_id="c1",
        deployment="d",
        mode="cascade",
        started_at="2026-12-01T00:00:00Z",
        duration_secs=3.0,
        turns=[TurnRecord(index=1, voice_to_voice_ms=800.0)],
        fallbacks=[
            FallbackEvent(role="llm", from_provider="openai_llm", to_provider="bedrock", reason="429", at_secs=1.0)
        ],
        errors=[
            CallError(
                role="llm", provider="openai_llm", kind="rate_limit", message="429 Too Many Requests", at_secs=0.9
            )
        ],
    )
    service = tracing.StageService("llm", "bedrock", "nova-lite")
    tracing.export(
        tracing.CallTrace(
            record=record,
            started=now,
            ended=now + 3,
            turns=[
                MeasuredTurn(
                    user_speech_end=now + 0.5,
                    audio_out_first=now + 1.3,
                    stt_final=now + 0.7,
                    llm_first_token=now + 1.1,
                    tts_first_audio=now + 1.25,
                )
            ],
            services={"stt": service, "llm": service, "tts": service},
        )
    )
    call = next(s for s in spans.get_finished_spans() if s.name == "call d")
    events = {event.name: event for event in call.events}
    assert events["voxpipe.fallback"].attributes["to"] == "bedrock"
    assert events["voxpipe.fallback"].attributes["reason"] == "429"
    error = events["exception"]
    assert error.attributes["exception.message"] == "429 Too Many Requests"
    assert error.attributes["exception.type"] == "rate_limit" and error.attributes["voxpipe.provider"] == "openai_llm"
    assert error.timestamp - call.start_time == pytest.approx(0.9e9, abs=1e6)
    assert call.status.status_code.name == "ERROR" and "429 Too Many Requests" in call.status.description
    chat = next(s for s in spans.get_finished_spans() if s.name == "chat nova-lite")
    assert chat.attributes["gen_ai.system"] == "aws.bedrock"


def test_without_otel_variables_tracing_is_off_and_free() -> None:
    assert not tracing.tracing_configured({})
    assert not tracing.tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert tracing.tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.tracing_configured({"OTEL_TRACES_EXPORTER": "otlp"})
    script = (
        "import sys\n"
        "from voxpipe.config.loader import parse_deployment\n"
        "from voxpipe.pipeline.keeping import CallKeeping\n"
        "from voxpipe.pipeline.latency import TurnMeter\n"
        "from voxpipe.transports.memory import MemoryTransport\n"
        f"deployment = parse_deployment('''{CASCADE}''')\n"
        "transport = MemoryTransport()\n"
        "meter = TurnMeter(transport.output())\n"
        "keeping = CallKeeping(deployment, meter)\n"
        "sdk = any(m.startswith('opentelemetry.sdk') for m in sys.modules)\n"
        "print(meter.tap is None, keeping.tracing, sdk)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(  # noqa: S603 — this interpreter on the fixed script above
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.split() == ["True", "False", "False"], done.stderr[-2000:]


def test_the_compose_tracing_profile_sends_traces_to_jaeger_through_a_collector() -> None:
    from ruamel.yaml import YAML

    deploy = Path(__file__).resolve().parent.parent / "deploy"
    services = YAML(typ="safe", pure=True).load((deploy / "compose.yaml").read_text())["services"]
    voxpipe = services["voxpipe"]
    assert "otel" in voxpipe["build"]["args"]["EXTRAS"].split(",")  # the SDK and the exporter are in the image
    assert voxpipe["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"  # off unset
    assert not tracing.tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    collector, jaeger = services["otel-collector"], services["jaeger"]
    assert collector["profiles"] == jaeger["profiles"] == ["tracing"]
    source = collector["volumes"][0].split(":")[0]
    config = YAML(typ="safe", pure=True).load((deploy / source).read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true" and "16686:16686" in jaeger["ports"]
