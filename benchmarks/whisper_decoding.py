"""local_whisper's decoding settings side by side: WER per voice and STT time per utterance, the STT alone.

Each corpus WAV is transcribed by the offline default's shared tiny.en model with the shipped prompt, once per
setting: greedy (``beam_size: 1``), always 5 beams, and 5 beams only below a greedy average log-probability
(``beam_below_log_prob``, the shipped default). Times are per utterance: wall clock and this process's CPU
time (both threads), so a loaded machine still shows what each setting costs in work. From the repository root::

    python benchmarks/whisper_decoding.py [--corpus benchmarks/corpus] [--gate -0.2]

WER is Whisper-normalised (``voxpipe.bench.wer``); the bench's figures come from whole calls, whose VAD
segments differ slightly from the files, so they can differ by a word or two per voice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

from ruamel.yaml import YAML

from voxpipe.bench.corpus import load_corpus
from voxpipe.bench.wer import corpus_word_error_rate
from voxpipe.providers.builtin._whisper_stt import Decoding, load_whisper
from voxpipe.providers.builtin.local_whisper import packaged_model_path

ROOT = Path(__file__).resolve().parent.parent


def main(corpus: Path, gate: float) -> None:
    options = YAML(typ="safe").load((ROOT / "voxpipe" / "configs" / "offline.yaml").read_text())["stt"]["options"]
    whisper = load_whisper(packaged_model_path(), 2, True)
    utterances = load_corpus(corpus)
    voices = sorted({u.voice for u in utterances})
    print(f"{len(utterances)} utterances, load average {os.getloadavg()[0]:.1f}")
    print(f"{'setting':22} " + " ".join(f"{'WER ' + v:>11}" for v in voices) + f" {'wall p50':>9} {'CPU p50':>8}")
    for label, beams, below in (("greedy", 1, None), ("5 beams", 5, None), (f"5 beams below {gate:g}", 5, gate)):
        pairs, wall, cpu = defaultdict(list), [], []
        for utterance in utterances:
            started, cpu_started = time.perf_counter(), time.process_time()
            text = whisper.transcribe(utterance.turn.audio, 16000, "en", Decoding(beams, options["prompt"], below))
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            pairs[utterance.voice].append((utterance.text, text))
        rates = " ".join(f"{100 * corpus_word_error_rate(pairs[v]):10.1f}%" for v in voices)
        print(f"{label:22} {rates} {1000 * statistics.median(wall):7.0f}ms {1000 * statistics.median(cpu):6.0f}ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "benchmarks" / "corpus")
    parser.add_argument("--gate", type=float, default=-0.2, help="beam_below_log_prob of the third setting")
    args = parser.parse_args()
    main(args.corpus, args.gate)
