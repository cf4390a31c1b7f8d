"""CPU the batched Silero VAD costs per caller second, with and without pipecat's loudness measure of quiet windows.

``voxpipe.pipeline.batched_vad`` scores every call's 32 ms windows in shared ONNX runs and then runs pipecat's
per-window step, which measures the BS.1770 loudness of the last 0.4 s; the analyzer skips that measure
where it must read 0 (the module doc). This script feeds ``--calls`` analyzers the same caller audio
(silence, a corpus utterance, silence, twice: about what the capacity benchmark's callers send) in 60 ms
frames, all calls' frames of one moment together (so each batch holds every call: the best case for
batching), and prints the CPU time per caller second of the VAD alone, with pipecat's volume step and with
voxpipe's, alternating (min and all of ``--rounds`` runs). Then, what one ONNX run costs per window by batch
size: what the batch tick trades against latency.

    python benchmarks/vad_cost.py [--calls 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import soxr
from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams

from voxpipe.pipeline.batched_vad import BatchedSileroVADAnalyzer
from voxpipe.pipeline.shared_models import silero_session

RATE = 8000
UTTERANCE = Path(__file__).resolve().parent / "corpus" / "heart" / "deposit.wav"
PARAMS = VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.6)  # the default profile
FRAME_BYTES = round(0.06 * RATE) * 2


def caller_audio() -> bytes:
    with wave.open(str(UTTERANCE)) as wav:
        rate, pcm = wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    speech = soxr.resample(pcm.astype(np.float32), rate, RATE).clip(-32768, 32767).astype("<i2").tobytes()
    silence = bytes(2 * RATE * 2)
    return (silence + speech + silence) * 2


async def _ms_per_caller_sec(audio: bytes, calls: int) -> float:
    analyzers = [BatchedSileroVADAnalyzer(sample_rate=RATE, params=PARAMS) for _ in range(calls)]
    for analyzer in analyzers:
        analyzer.set_sample_rate(RATE)
    started = time.process_time()
    for end in range(FRAME_BYTES, len(audio) + 1, FRAME_BYTES):
        await asyncio.gather(*(a.analyze_audio(audio[end - FRAME_BYTES : end]) for a in analyzers))
    return (time.process_time() - started) * 1000 / (calls * len(audio) / 2 / RATE)


def _onnx_us_per_window(batch: int, runs: int = 300) -> float:
    session = silero_session()
    feeds = {
        "input": np.zeros((batch, 256 + 32), np.float32),
        "state": np.zeros((2, batch, 128), np.float32),
        "sr": np.array(RATE, dtype=np.int64),
    }
    session.run(None, feeds)
    started = time.process_time()
    for _ in range(runs):
        session.run(None, feeds)
    return (time.process_time() - started) / runs / batch * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logger.remove()  # pipecat logs each analyzer's parameters
    audio = caller_audio()
    voxpipe_step = BatchedSileroVADAnalyzer._get_smoothed_volume
    steps = {"pipecat's volume": VADAnalyzer._get_smoothed_volume, "voxpipe's (quiet skipped)": voxpipe_step}
    runs: dict[str, list[float]] = {name: [] for name in steps}
    try:
        for _ in range(args.rounds):
            for name, step in steps.items():
                BatchedSileroVADAnalyzer._get_smoothed_volume = step  # type: ignore[method-assign]
                runs[name].append(asyncio.run(_ms_per_caller_sec(audio, args.calls)))
    finally:
        BatchedSileroVADAnalyzer._get_smoothed_volume = voxpipe_step  # type: ignore[method-assign]
    print(f"VAD CPU per caller second, {args.calls} calls batched together, ms (min; all runs)")
    for name, values in runs.items():
        print(f"  {name:26} {min(values):5.2f}   {' '.join(f'{v:.2f}' for v in values)}")
    print("one ONNX run, us per window by batch size")
    print("  " + "  ".join(f"{batch}: {_onnx_us_per_window(batch):.0f}" for batch in (1, 2, 4, 8, 16, 32)))


if __name__ == "__main__":
    main()
