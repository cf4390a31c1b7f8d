"""Print the trace of one call as a waterfall: every span with its start and end in seconds from the call's start.

The call is the testkit cascade with a tool (scripted STT, an LLM that waits ``--llm-latency`` before
answering and calls ``get_weather`` when asked about the weather, a tone TTS), spoken to by the local TTS in
real time. Spans are the ones an OTLP collector would receive, read from the SDK's in-memory exporter.
docs/records.md shows this script's output.

    python benchmarks/trace_waterfall.py [--llm-latency 0.3]

Needs: pip install -e ".[local,otel,dev]" -e tests/plugins/voxpipe-testkit
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline import tracing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the get_weather tool function

YAML = """
name: front-desk
agent:
  instructions: You are a receptionist.
  tools:
    - kind: python
      name: get_weather
      parameters: {type: object, properties: {city: {type: string}}, required: [city]}
      options: {function: "tool_functions:get_weather"}
vad: {stop_secs: 0.2}
turn: {strategy: silence, timeout_secs: 0.2}
stt: {provider: testkit_stt, options: {transcripts: ["when do you open", "weather in paris"], latency_secs: 0.1}}
llm:
  provider: testkit_llm
  options:
    latency_secs: LLM_LATENCY
    default_reply: We open at nine.
    replies:
      - when: weather
        tool_call: {name: get_weather, arguments: {city: Paris}}
        say: "It is {result.temperature_c} degrees."
tts: {provider: testkit_tts, options: {latency_secs: 0.1}}
"""


async def main(llm_latency: float) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    deployment = parse_deployment(YAML.replace("LLM_LATENCY", str(llm_latency)))
    caller = [CallerTurn.from_text("When do you open?"), CallerTurn.from_text("What is the weather in Paris?")]
    result = await simulate_call(deployment, caller, settle_secs=0.6)
    result.kept_record()
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.parent is None)
    children: dict[int, list] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)

    def show(span, prefix: str, last: bool, depth: int) -> None:  # type: ignore[no-untyped-def]
        start, end = ((t - root.start_time) / 1e9 for t in (span.start_time, span.end_time))
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        v2v = span.attributes.get("voxpipe.voice_to_voice_ms")
        note = f"  voice_to_voice_ms={v2v:.0f}" if v2v is not None else ""
        print(f"{prefix}{branch}{span.name:<{40 - len(prefix) - len(branch)}} {start:6.2f} → {end:6.2f} s{note}")
        kids = children.get(span.context.span_id, [])
        for index, kid in enumerate(kids):
            extension = "" if depth == 0 else ("   " if last else "│  ")
            show(kid, prefix + extension, index == len(kids) - 1, depth + 1)

    show(root, "", True, 0)


if __name__ == "__main__":
    from loguru import logger

    logger.remove()  # pipecat logs every frame at DEBUG: keep warnings, as the CLI does
    logger.add(sys.stderr, level="WARNING")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-latency", type=float, default=0.3)
    asyncio.run(main(parser.parse_args().llm_latency))
