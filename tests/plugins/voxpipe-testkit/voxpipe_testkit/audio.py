"""Deterministic audio helpers: a sine tone for the bot's "speech", and the energy of PCM16 audio."""

from __future__ import annotations

import math

import numpy as np


def tone(duration_secs: float, sample_rate: int, frequency_hz: float = 440.0, amplitude: float = 0.3) -> bytes:
    """Mono PCM16 sine tone, with 5 ms fades so it starts and ends without clicks."""
    count = max(1, round(duration_secs * sample_rate))
    t = np.arange(count) / sample_rate
    wave = amplitude * np.sin(2 * math.pi * frequency_hz * t)
    fade = min(count // 2, int(0.005 * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return (wave * 32767).astype("<i2").tobytes()


def rms_dbfs(pcm16: bytes) -> float:
    """RMS level of mono PCM16 audio in dBFS (-inf for digital silence)."""
    samples = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % 2], dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(samples**2))) / 32768.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def chunks(audio: bytes, sample_rate: int, chunk_secs: float) -> list[bytes]:
    """Split PCM16 audio into chunks of ``chunk_secs`` (the last one may be shorter)."""
    size = max(2, int(sample_rate * chunk_secs) * 2)
    return [audio[i : i + size] for i in range(0, len(audio), size)]
