"""`voxpipe bench` A/B of the turn-taking features, each on vs off, on a cloud cascade and on the offline default.

Variants (the first is the baseline): ``base``; ``speculate`` (``turn.speculate``); ``endpointing``
(``turn.max_delay_secs``: a longer wait for a turn that ends mid-phrase); ``barge-in`` (backchannels and
false-interruption resume); ``all``. Each plays two corpora: ``benchmarks/corpus`` (36 utterances in three
voices: voice-to-voice, WER) and ``benchmarks/corpus-pauses`` (5 utterances with a pause mid-turn: a reply
heard in the pause is a premature reply, which answers a turn the caller had not finished).

``cloud``: Deepgram (STT) -> OpenAI (LLM) -> ElevenLabs (TTS), each the protocol-faithful fake of
``tests/fakes`` on 127.0.0.1 with realistic latencies: Deepgram finalises 150 ms after speech ends
(``endpointing_ms``), the LLM's first token after 300 ms, the TTS's first audio after 150 ms. The fake STT
answers each utterance with the words of the corpus audio it was sent (found by its samples), split by time
when the fake's VAD cuts an utterance in parts. ``offline``: ``voxpipe/configs/offline.yaml`` as shipped.

    python benchmarks/turn_taking_ab.py cloud [--repeat 1] [--concurrency 2] [--only base,speculate]
    python benchmarks/turn_taking_ab.py offline

Prints the bench tables (voice-to-voice p50/p90 with intervals, steps, WER per voice, the turn-taking table:
STT-final-to-audio, premature replies, speculations, withdrawn replies and their cost). Run it from the
repository root with the dev extras installed (``tests`` must be importable). The calls are real time, so a
run takes minutes; CPU load from other processes shows in the offline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from make_corpus import PAUSED  # noqa: E402

from tests.fakes import Behaviour, FakeDeepgram, FakeElevenLabs, FakeOpenAI  # noqa: E402
from tests.fakes.script import Utterance as HeardUtterance  # noqa: E402
from voxpipe.bench.corpus import Utterance, load_corpus  # noqa: E402
from voxpipe.bench.runner import BenchPlan, logs_above_progress, print_bench, run_bench  # noqa: E402
from voxpipe.bench.simulated_call import INPUT_RATE  # noqa: E402
from voxpipe.config.loader import apply_overrides, load_deployment, parse_deployment  # noqa: E402
from voxpipe.config.models import Deployment  # noqa: E402

CORPORA = (ROOT / "benchmarks" / "corpus", ROOT / "benchmarks" / "corpus-pauses")
KEY = "bench-key"
LOUD = 500  # the fakes' speech threshold (RMS, int16 scale)

CLOUD = """
name: cloud
agent:
  instructions: You are the receptionist of Harbor Bikes. Answer in one short sentence.
vad: {preset: phone_line}
turn: {strategy: silence, timeout_secs: 0.3}
stt:
  provider: deepgram
  model: nova-3
  options: {api_key: "${DEEPGRAM_API_KEY}", base_url: "${DEEPGRAM_URL}", endpointing_ms: 150, interim_results: false}
llm:
  provider: openai
  model: gpt-4.1-mini
  options: {api_key: "${OPENAI_API_KEY}", base_url: "${OPENAI_BASE_URL}"}
tts:
  provider: elevenlabs
  model: eleven_flash_v2_5
  options: {api_key: "${ELEVENLABS_API_KEY}", url: "${ELEVENLABS_URL}", voice_id: 21m00Tcm4TlvDq8ikWAM}
"""

# What each variant overrides; "all" is every feature at once.
FEATURES: dict[str, dict[str, Any]] = {
    "speculate": {"turn": {"speculate": True}},
    "endpointing": {"turn": {"max_delay_secs": 1.5}},
    "barge-in": {"interruptions": {"backchannels": [], "resume_after_secs": 0.6}},
}


def variants(base: Deployment) -> dict[str, Deployment]:
    out = {"base": base}
    for name, overrides in FEATURES.items():
        out[name] = apply_overrides(base, overrides, name)
    merged: dict[str, Any] = {}
    for overrides in FEATURES.values():
        for section, values in overrides.items():
            merged.setdefault(section, {}).update(values)
    out["all"] = apply_overrides(base, merged, "all")
    return {label: deployment.model_copy(update={"name": label}) for label, deployment in out.items()}


class CorpusTranscripts:
    """The fake STT's transcript of an utterance: the words of the corpus audio whose samples it was sent.

    The segment's first loud 20 ms is looked up in every corpus WAV (the caller sends the WAV's samples
    unchanged). A segment that is only part of the WAV's speech gets the words its speech time covers: the
    words are spread over the loud frames, and for a paused utterance (``make_corpus.PAUSED``) the words of
    each part over that part's frames.
    """

    def __init__(self, utterances: list[Utterance]):
        self.utterances = utterances
        self.first_part_words = {f"heart/{slug}.wav": len(first.split()) for slug, first, _, _ in PAUSED}

    def __call__(self, heard: HeardUtterance) -> str:
        pcm = heard.pcm
        window = 2 * heard.sample_rate // 50
        for offset in range(0, len(pcm) - window, window):
            probe = pcm[offset : offset + window]
            if np.sqrt(np.mean(np.frombuffer(probe, "<i2").astype(np.float64) ** 2)) > LOUD:
                return self._words_at(probe, len(pcm) - offset)
        return ""

    def _words_at(self, probe: bytes, length: int) -> str:
        for utterance in self.utterances:
            at = utterance.turn.audio.find(probe)
            if at >= 0 and at % 2 == 0:
                said = self._words_said(utterance)
                words = utterance.text.split()
                frame = 2 * INPUT_RATE // 50
                begin, end = (said[min(len(said) - 1, pos // frame)] for pos in (at, at + length))
                return " ".join(words[begin : max(end, begin + 1)])
        return "hello"

    def _words_said(self, utterance: Utterance) -> np.ndarray:
        """For each 20 ms frame boundary of the audio, how many of its words have been said by then."""
        audio, frame = utterance.turn.audio, 2 * INPUT_RATE // 50
        frames = np.frombuffer(audio[: len(audio) - len(audio) % frame], "<i2").astype(np.float64)
        loud = np.sqrt(np.mean(frames.reshape(-1, frame // 2) ** 2, axis=1)) > LOUD
        words = len(utterance.text.split())
        first = self.first_part_words.get(utterance.name)
        if first is None:
            return np.round(np.concatenate([[0], np.cumsum(loud)]) / max(1, loud.sum()) * words).astype(int)
        runs = np.flatnonzero(loud)
        gap = int(runs[np.argmax(np.diff(runs))]) + 1  # the pause: the longest quiet run inside the speech
        parts = [(loud[:gap], 0, first), (loud[gap:], first, words - first)]
        said = [np.round(done + np.cumsum(part) / max(1, part.sum()) * count) for part, done, count in parts]
        return np.concatenate([[0], *said]).astype(int)


@contextlib.contextmanager
def cloud_fakes(utterances: list[Utterance]) -> Iterator[dict[str, str]]:
    deepgram = FakeDeepgram(Behaviour(api_key=KEY), transcripts=CorpusTranscripts(utterances)).start()
    openai = FakeOpenAI(
        Behaviour(api_key=KEY, first_byte_delay_s=0.3),
        replies=lambda turn: "We are open nine to six, Monday to Saturday.",
    ).start()
    elevenlabs = FakeElevenLabs(Behaviour(api_key=KEY, first_byte_delay_s=0.15)).start()
    try:
        yield {
            "DEEPGRAM_API_KEY": KEY,
            "OPENAI_API_KEY": KEY,
            "ELEVENLABS_API_KEY": KEY,
            "DEEPGRAM_URL": deepgram.ws_url,
            "OPENAI_BASE_URL": openai.url + "/v1",
            "ELEVENLABS_URL": elevenlabs.ws_url,
        }
    finally:
        for fake in (deepgram, openai, elevenlabs):
            fake.stop()


def bench(deployments: dict[str, Deployment], repeat: int, concurrency: int, console: Console) -> None:
    progress = Console(stderr=True)
    for corpus in CORPORA:
        plan = BenchPlan(deployments, load_corpus(corpus), corpus, repeat=repeat, concurrency=concurrency)
        with logs_above_progress(progress, level="ERROR"):  # pipecat warns about stop_secs on every call
            result = asyncio.run(run_bench(plan, progress))
        print_bench(result, console)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack", choices=["cloud", "offline"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--only", help="comma-separated variants to run (default: all)")
    args = parser.parse_args()
    console = Console(width=180)
    utterances = [utterance for corpus in CORPORA for utterance in load_corpus(corpus)]

    def chosen(deployments: dict[str, Deployment]) -> dict[str, Deployment]:
        names = args.only.split(",") if args.only else list(deployments)
        return {name: deployments[name] for name in names}

    if args.stack == "offline":
        base = load_deployment(ROOT / "voxpipe" / "configs" / "offline.yaml")
        bench(chosen(variants(base)), args.repeat, args.concurrency, console)
        return
    with cloud_fakes(utterances) as environ:
        base = parse_deployment(CLOUD, "cloud", environ)
        bench(chosen(variants(base)), args.repeat, args.concurrency, console)


if __name__ == "__main__":
    main()
