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
import resource, sys, numpy as np
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
kind, calls = sys.argv[1], int(sys.argv[2])
if kind == "plain":
    from pipecat.audio.vad.silero import SileroVADAnalyzer as Vad
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3 as Turn
else:
    from voxpipe.pipeline.shared_models import SharedSileroVADAnalyzer as Vad, SharedSmartTurnAnalyzer as Turn
keep = [(Vad(), Turn())]  # the first call loads the models in both cases
for analyzer, _ in keep:
    analyzer.set_sample_rate(16000); analyzer.voice_confidence(np.zeros(512, np.int16).tobytes())
before = rss_mb()
for _ in range(calls):
    vad, turn = Vad(), Turn()
    vad.set_sample_rate(16000); vad.voice_confidence(np.zeros(512, np.int16).tobytes())
    keep.append((vad, turn))
print(rss_mb() - before)
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
