"""Audio helpers shared by the fakes: synthetic speech, G.711 codecs, WAV, and an energy VAD.

Everything here is deterministic so tests can assert exact byte counts and durations:
`speech_for_text` turns a text into a tone whose length depends only on the text length.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np

#: Synthetic speech length per character of text (seconds).
SECONDS_PER_CHAR = 0.05
#: Shortest synthetic utterance (seconds), so a one-word reply still has audio.
MIN_SPEECH_S = 0.2

_ULAW_BIAS = 0x84
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def tone(duration_s: float, rate: int, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A sine tone as PCM16 little-endian mono bytes."""
    n = max(0, round(duration_s * rate))
    t = np.arange(n, dtype=np.float64) / rate
    samples = amplitude * 32767.0 * np.sin(2.0 * np.pi * freq * t)
    return samples.astype("<i2").tobytes()


def silence(duration_s: float, rate: int) -> bytes:
    """Digital silence as PCM16 little-endian mono bytes."""
    return bytes(2 * max(0, round(duration_s * rate)))


def speech_duration_s(text: str) -> float:
    """How long the synthetic speech for `text` lasts."""
    return max(MIN_SPEECH_S, len(text) * SECONDS_PER_CHAR)


def speech_for_text(text: str, rate: int) -> bytes:
    """Deterministic 'speech' for a text: a 440 Hz tone, 50 ms per character (PCM16 mono)."""
    return tone(speech_duration_s(text), rate)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode PCM16 little-endian samples as G.711 mu-law (the CCITT reference algorithm)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32) >> 2
    negative = x < 0
    v = np.minimum(np.where(negative, -x, x), 8159) + 33
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, v)
    mask = np.where(negative, 0x7F, 0xFF)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((v >> (segment + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8).tobytes()


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode G.711 mu-law bytes to PCM16 little-endian samples."""
    u = ~np.frombuffer(ulaw, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype("<i2").tobytes()


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """Encode PCM16 little-endian samples as G.711 A-law (one byte per sample)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32) >> 3  # 13-bit
    sign = np.where(x >= 0, 0x80, 0)
    magnitude = np.where(x >= 0, x, -x - 1)
    magnitude = np.minimum(magnitude, 0x0FFF)
    exponent = np.where(magnitude < 32, 0, np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()


def alaw_to_pcm16(alaw: bytes) -> bytes:
    """Decode G.711 A-law bytes to PCM16 little-endian samples."""
    a = np.frombuffer(alaw, dtype=np.uint8).astype(np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype("<i2").tobytes()


def wav_bytes(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    """Wrap PCM16 samples in a RIFF/WAVE container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def parse_wav(data: bytes) -> tuple[bytes, int, int]:
    """Return (pcm16 frames, sample rate, channels) of a WAV file; raises ValueError if not WAV."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2:
                raise ValueError("only 16-bit WAV is supported")
            return w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()
    except (wave.Error, EOFError) as exc:
        raise ValueError(str(exc)) from exc


def audio_container(data: bytes) -> str | None:
    """Name the container format of an uploaded audio file from its magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if data[4:8] == b"ftyp":
        return "mp4"
    return None


@dataclass
class VadEvent:
    """A speech boundary found by `EnergyVAD`: kind is "start" or "stop", at_ms from stream start."""

    kind: str
    at_ms: int


class EnergyVAD:
    """A simple frame-energy voice activity detector over PCM16 mono audio.

    Speech starts after `min_speech_ms` of frames whose RMS exceeds `threshold_rms`, and stops
    after `silence_ms` of quieter frames. Times are milliseconds since the first sample fed.
    """

    def __init__(
        self,
        rate: int,
        *,
        threshold_rms: float = 500.0,
        frame_ms: int = 20,
        min_speech_ms: int = 60,
        silence_ms: int = 500,
    ) -> None:
        self.rate = rate
        self.threshold_rms = threshold_rms
        self.frame_ms = frame_ms
        self.min_speech_ms = min_speech_ms
        self.silence_ms = silence_ms
        self.in_speech = False
        self.speech_start_ms = 0
        self.last_voice_ms = 0
        self._pending = b""
        self._frames = 0
        self._loud_run_ms = 0
        self._quiet_run_ms = 0

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio analysed so far (whole frames only)."""
        return self._frames * self.frame_ms

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Analyse more audio; return the speech boundaries it completes."""
        events: list[VadEvent] = []
        frame_bytes = 2 * self.rate * self.frame_ms // 1000
        data = self._pending + pcm
        usable = len(data) - len(data) % frame_bytes
        self._pending = data[usable:]
        for offset in range(0, usable, frame_bytes):
            frame = np.frombuffer(data[offset : offset + frame_bytes], dtype="<i2").astype(np.float64)
            loud = float(np.sqrt(np.mean(frame * frame))) > self.threshold_rms
            start_ms = self.position_ms
            self._frames += 1
            if loud:
                self._loud_run_ms += self.frame_ms
                self._quiet_run_ms = 0
                self.last_voice_ms = self.position_ms
                if not self.in_speech and self._loud_run_ms >= self.min_speech_ms:
                    self.in_speech = True
                    self.speech_start_ms = start_ms + self.frame_ms - self._loud_run_ms
                    events.append(VadEvent("start", self.speech_start_ms))
            else:
                self._loud_run_ms = 0
                self._quiet_run_ms += self.frame_ms
                if self.in_speech and self._quiet_run_ms >= self.silence_ms:
                    self.in_speech = False
                    events.append(VadEvent("stop", self.last_voice_ms))
        return events

    def force_stop(self) -> VadEvent | None:
        """End an utterance in progress (e.g. on Finalize or commit); None if not in speech."""
        if not self.in_speech:
            return None
        self.in_speech = False
        self._loud_run_ms = 0
        return VadEvent("stop", self.last_voice_ms)
