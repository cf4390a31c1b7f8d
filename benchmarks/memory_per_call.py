"""Memory each call costs for its VAD and turn model: pipecat's per-call ONNX sessions vs voxpipe's shared ones.

Each call of a cascade needs a Silero VAD analyzer and, with `turn: {strategy: smart_turn}`, a smart-turn v3
analyzer. Plain pipecat loads a new ONNX session for each; voxpipe shares one per process (per-call state only).
The script creates the analyzers of N calls each way, in fresh subprocesses, and prints the RSS growth.

    python benchmarks/memory_per_call.py [--calls 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import asyncio, resource, sys, numpy as np
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
kind, calls = sys.argv[1], int(sys.argv[2])
if kind == "plain":
    from pipecat.audio.vad.silero import SileroVADAnalyzer as Vad
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3 as Turn
else:
    from voxpipe.pipeline.batched_vad import BatchedSileroVADAnalyzer as Vad
    from voxpipe.pipeline.shared_models import SharedSmartTurnAnalyzer as Turn
async def call():  # one call's analyzers, having scored one window (pipecat's in the call's VAD thread)
    vad, turn = Vad(), Turn()
    vad.set_sample_rate(16000); await vad.analyze_audio(np.zeros(512, np.int16).tobytes())
    return vad, turn
async def main():
    keep = [await call()]  # the first call loads the models in both cases
    before = rss_mb()
    keep += [await call() for _ in range(calls)]
    print(rss_mb() - before)
asyncio.run(main())
"""


def growth(kind: str, calls: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(calls)], capture_output=True, text=True, check=True)  # noqa: S603 — fixed argv: this interpreter or a tool of the dev install, no caller input
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    calls = parser.parse_args().calls
    plain, shared = growth("plain", calls), growth("shared", calls)
    print(f"RSS growth for {calls} more calls (Silero VAD + smart-turn v3 per call)")
    print(f"{'plain pipecat':15} {plain:8.1f} MB  {plain / calls:6.2f} MB/call")
    print(f"{'voxpipe shared':15} {shared:8.1f} MB  {shared / calls:6.2f} MB/call")
    print(f"{'ratio':15} {shared / plain if plain else float('nan'):8.3f}")


if __name__ == "__main__":
    main()
