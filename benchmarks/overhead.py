"""What voxpipe adds to a call: the same cascade, built by voxpipe from YAML and written by hand in plain pipecat.

Both use the same zero-latency services (the voxpipe-testkit plugin: scripted STT, scripted LLM, tone TTS),
the same Silero VAD settings and silence turn timeout, the same in-memory transport, and the same simulated
caller speaking real (local TTS) speech in real time. The runs alternate so machine drift hits both alike.
Voice-to-voice is measured on the audio (docs/latency.md); the ratio voxpipe / plain should be ~1.00.

    python benchmarks/overhead.py [--turns 10] [--rounds 2]

Needs: pip install -e ".[local,dev]" -e tests/plugins/voxpipe-testkit
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from voxpipe_testkit.plugin import ScriptedLLMOptions, ScriptedSTTOptions, ToneTTSOptions
from voxpipe_testkit.services import ScriptedLLMService, ScriptedSTTService, ToneTTSService

from voxpipe.bench.simulated_call import CallerTurn, CallUnderTest, drive_call, simulate_call
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.latency import TurnMeter
from voxpipe.transports.memory import MemoryTransport

INSTRUCTIONS = "You are a receptionist."
TIMEOUT_SECS = 0.2
VAD = VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.6)
YAML = f"""
name: overhead
agent: {{instructions: {INSTRUCTIONS}}}
vad: {{confidence: {VAD.confidence}, start_secs: {VAD.start_secs}, stop_secs: {VAD.stop_secs},
      min_volume: {VAD.min_volume}}}
turn: {{strategy: silence, timeout_secs: {TIMEOUT_SECS}}}
stt: {{provider: testkit_stt, options: {{transcripts: ["what are your opening hours"]}}}}
llm: {{provider: testkit_llm, options: {{default_reply: "We are open nine to six."}}}}
tts: {{provider: testkit_tts}}
"""
SENTENCES = ["What are your opening hours?", "Can I book a tune-up for Friday?", "How much is a flat tyre repair?"]


def plain_pipecat_call() -> CallUnderTest:
    """The cascade as a pipecat user writes it by hand (pipecat's defaults for everything not set above)."""
    transport = MemoryTransport()
    turn_meter = TurnMeter(transport.output())
    stt = ScriptedSTTService(
        options=ScriptedSTTOptions(transcripts=["what are your opening hours"]), ttfs_p99_latency=0.25
    )
    llm = ScriptedLLMService(
        options=ScriptedLLMOptions(default_reply="We are open nine to six."), system_instruction=INSTRUCTIONS
    )
    tts = ToneTTSService(options=ToneTTSOptions())
    pair = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(params=VAD),
            user_turn_strategies=UserTurnStrategies(
                stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=TIMEOUT_SECS)]
            ),
        ),
    )
    pipeline = Pipeline([transport.input(), stt, pair.user(), llm, tts, transport.output(), pair.assistant()])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=24000, enable_metrics=True),
        observers=[turn_meter],
        clock=turn_meter.clock,
    )
    return CallUnderTest("plain pipecat", "cascade", transport, worker, turn_meter)


def voice_to_voice(turn_results: list) -> list[float]:
    return [t.voice_to_voice_ms for t in turn_results if t.voice_to_voice_ms is not None]


async def main(turns: int, rounds: int) -> None:
    caller = [CallerTurn.from_text(SENTENCES[i % len(SENTENCES)]) for i in range(turns)]
    deployment = parse_deployment(YAML, "overhead.yaml")
    results: dict[str, list[float]] = {"voxpipe": [], "plain pipecat": []}
    for _ in range(rounds):
        results["voxpipe"] += voice_to_voice((await simulate_call(deployment, caller, settle_secs=0.6)).turns)
        results["plain pipecat"] += voice_to_voice(
            (await drive_call(plain_pipecat_call(), caller, settle_secs=0.6)).turns
        )
    print(f"voice-to-voice over {turns * rounds} turns each (ms)")
    print(f"{'':15} {'n':>4} {'p50':>8} {'p99':>8}")
    stats = {}
    for name, values in results.items():
        stats[name] = (np.percentile(values, 50), np.percentile(values, 99))
        print(f"{name:15} {len(values):>4} {stats[name][0]:>8.1f} {stats[name][1]:>8.1f}")
    ratio50 = stats["voxpipe"][0] / stats["plain pipecat"][0]
    ratio99 = stats["voxpipe"][1] / stats["plain pipecat"][1]
    print(f"{'ratio':15} {'':>4} {ratio50:>8.3f} {ratio99:>8.3f}   (voxpipe / plain; target p50 <= 1.02)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.rounds))
