"""CPU per call with recording and tracing on vs off (issue 18's budget: under 5% more).

The same cascade (Silero VAD, the voxpipe-testkit scripted STT/LLM and tone TTS, silence turn timeout) is
called by the same simulated caller speaking real (local TTS) speech in real time, with ``recording:`` and
``OTEL_*`` tracing either off or on; the runs alternate so machine drift hits both alike. CPU is the
process's CPU time (every thread: the call, the recording uploader, the span exporter) from the start of a
call until its recording is stored and its spans are sent, divided by the number of calls. Traces go over
OTLP/HTTP to a sink in another process (so its own CPU is not counted), as they would to a collector.

    python benchmarks/keeping_overhead.py [--calls 6] [--turns 3]

Needs: pip install -e ".[local,otel,dev]" -e tests/plugins/voxpipe-testkit
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline import tracing
from voxpipe.records.recording_store import uploader

YAML = """
name: keeping
agent: {instructions: You are a receptionist.}
vad: {stop_secs: 0.2}
turn: {strategy: silence, timeout_secs: 0.2}
stt: {provider: testkit_stt, options: {transcripts: ["what are your opening hours"]}}
llm: {provider: testkit_llm, options: {default_reply: "We are open nine to six, Monday to Saturday."}}
tts: {provider: testkit_tts}
"""
SENTENCES = ["What are your opening hours?", "Can I book a tune-up for Friday?", "How much is a flat tyre repair?"]
PROVIDER: list = [None]  # the TracerProvider, kept across the "off" calls
SINK = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
server = HTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


async def one_call(keep: bool, caller: list[CallerTurn], folder: str) -> tuple[float, float]:
    """CPU seconds and wall seconds of one call, its recording stored and spans sent when ``keep``."""
    text = YAML + (f'recording: {{enabled: true, store: "file://{folder}"}}\n' if keep else "")
    deployment = parse_deployment(text)
    if keep:  # the process's provider, made from OTEL_* by the first call that traces
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = ENDPOINT
        tracing.use_tracer_provider(PROVIDER[0])
    else:
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        tracing.use_tracer_provider(None)
    cpu, wall = time.process_time(), time.monotonic()
    result = await simulate_call(deployment, caller, settle_secs=0.6)
    result.kept_record()
    if keep:
        if not uploader.drain(30):
            raise RuntimeError("the recording was not stored within 30 s")
        PROVIDER[0] = tracing._provider
        PROVIDER[0].force_flush()
    return time.process_time() - cpu, time.monotonic() - wall


async def main(calls: int, turns: int) -> None:
    caller = [CallerTurn.from_text(SENTENCES[i % len(SENTENCES)]) for i in range(turns)]
    cpu: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        await one_call(True, caller, folder)  # warm-up: imports, model loads, the SDK
        await one_call(False, caller, folder)
        for _ in range(calls):
            for keep in (False, True):
                cpu[keep].append((await one_call(keep, caller, folder))[0])
    off, on = sum(cpu[False]) / calls, sum(cpu[True]) / calls
    print(f"CPU per call ({turns} turns, {calls} calls each, alternating)")
    print(f"  recording + tracing off: {off * 1000:8.1f} ms")
    print(f"  recording + tracing on:  {on * 1000:8.1f} ms")
    print(f"  difference:              {(on - off) * 1000:+8.1f} ms ({(on / off - 1) * 100:+.1f}%; target < +5%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    from loguru import logger

    logger.remove()  # pipecat logs every frame at DEBUG: keep warnings, as the CLI does
    logger.add(sys.stderr, level="WARNING")
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)  # noqa: S603 — fixed script
    try:
        ENDPOINT = f"http://127.0.0.1:{sink.stdout.readline().strip()}"  # type: ignore[union-attr]
        asyncio.run(main(args.calls, args.turns))
    finally:
        sink.terminate()
        sink.wait(10)
