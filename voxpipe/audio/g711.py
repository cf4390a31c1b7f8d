"""G.711 mu-law <-> PCM16 by table lookup (``audioop`` is gone in Python 3.13).

pipecat frames always carry PCM16. On a telephone call the pipeline runs at 8 kHz, so mu-law audio is only
decoded and re-encoded, never resampled: ``encode(decode(x)) == x`` for every mu-law byte but negative
zero (0x7F comes back as 0xFF, the same silence). A provider that speaks mu-law natively (Deepgram
``encoding=mulaw``, ElevenLabs ``ulaw_8000``, Realtime ``audio/pcmu``) so gets the bytes Twilio carries.
"""

from __future__ import annotations

import numpy as np

_BIAS = 0x84


def _decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _encode_table() -> np.ndarray:
    """The reference G.711 encoder (14-bit magnitude, segment search), for every 16-bit sample."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), 8159) + 0x21
    segment = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), magnitude)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


DECODE = _decode_table()
ENCODE = _encode_table()  # indexed by sample + 32768


def decode(mulaw: bytes) -> bytes:
    """mu-law bytes -> PCM16 little-endian bytes (same sample rate)."""
    return DECODE[np.frombuffer(mulaw, dtype=np.uint8)].tobytes()


def encode(pcm: bytes) -> bytes:
    """PCM16 little-endian bytes -> mu-law bytes (same sample rate)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.int32) + 32768
    return ENCODE[samples].tobytes()
