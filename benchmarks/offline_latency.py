"""Voice-to-voice of the offline default deployment over 20 turns, with its stage breakdown.

A simulated caller speaks the corpus sentences (local TTS, real time, 20 ms frames) into one call of
configs/offline.yaml; each turn is measured on the audio (docs/latency.md). Target: p50 <= 1.0 s on 2 cores.

    python benchmarks/offline_latency.py [--turns 20] [--config configs/offline.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np

from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import load_deployment

CORPUS = Path(__file__).parent / "corpus" / "manifest.jsonl"
STAGES = ("stt_final", "llm_first_token", "tts_first_audio", "first_audio_out")


async def main(config: Path, turns: int) -> None:
    lines = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    caller = [
        CallerTurn.from_wav(CORPUS.parent / lines[i % len(lines)]["audio"], lines[i % len(lines)]["text"])
        for i in range(turns)
    ]
    result = await simulate_call(load_deployment(config), caller, settle_secs=0.8)
    measured = [turn.latency_ms() for turn in result.turns]
    print(f"{result.deployment}: {len(measured)} of {turns} turns answered")
    print(f"{'ms after end of speech':24} {'p50':>7} {'p90':>7}")
    for stage in STAGES:
        values = [m[stage] for m in measured if m[stage] is not None]
        label = "voice-to-voice" if stage == "first_audio_out" else stage
        print(f"{label:24} {np.percentile(values, 50):7.0f} {np.percentile(values, 90):7.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--config", type=Path, default=Path(__file__).parent.parent / "configs" / "offline.yaml")
    args = parser.parse_args()
    asyncio.run(main(args.config, args.turns))
