"""Make the bench corpus in ``benchmarks/corpus``: caller utterances of a bike shop's booking and help line.

Each line of ``UTTERANCES`` is spoken by voxpipe's local TTS (hibari, voice "heart", the voice that ships in
the ``hibari-tts`` package: nothing is downloaded) with ``voxpipe.providers.builtin.local_tts.speak``, which
resamples it with soxr to 16 kHz. A quarter second of digital silence is put before and after the speech, as
a caller's line would carry, and each utterance is written as a 16 kHz mono 16-bit WAV named after its
slug, with ``manifest.jsonl`` listing ``{"audio": ..., "text": ...}`` in order. Re-running it gives files of
the same lengths with nearly the same samples (onnxruntime's threaded arithmetic is not bit-exact), so only
re-run it to change the corpus. From the repository root::

    pip install -e ".[local]"
    python benchmarks/make_corpus.py            # or: python benchmarks/make_corpus.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path

RATE = 16000
PAD_SECS = 0.25
OUT = Path(__file__).resolve().parent / "corpus"

# (slug, what the caller says): opening hours, prices, bookings, times and dates, a problem to describe.
UTTERANCES = [
    ("open-sunday", "Hi, are you open on Sunday?"),
    ("tune-up-price", "How much does a basic tune-up cost?"),
    ("book-saturday", "I'd like to book a repair for Saturday morning."),
    ("drop-off-time", "Can I bring my bike in at nine thirty tomorrow?"),
    ("clicking-wheel", "My back wheel is making a clicking noise."),
    ("deposit", "Do you need a deposit for a booking?"),
    ("closing-friday", "What time do you close on Friday?"),
    ("electric-bikes", "Do you fix electric bikes?"),
    ("tune-up-time", "How long does a tune-up take?"),
    ("address", "Where is the shop?"),
    ("cancel-booking", "I need to cancel my booking for the twelfth."),
    ("flat-tire", "Can you repair a flat tire while I wait?"),
]


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)


def main(out: Path = OUT) -> None:
    from voxpipe.providers.builtin.local_tts import speak

    out.mkdir(parents=True, exist_ok=True)
    pad = b"\0\0" * int(RATE * PAD_SECS)
    manifest = []
    for slug, text in UTTERANCES:
        write_wav(out / f"{slug}.wav", pad + speak(text, RATE) + pad)
        manifest.append(json.dumps({"audio": f"{slug}.wav", "text": text}))
        print(f"{slug}.wav: {text}")
    (out / "manifest.jsonl").write_text("\n".join(manifest) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
