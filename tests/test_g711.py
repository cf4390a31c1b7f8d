"""The mu-law codec matches the reference G.711 implementation bit for bit."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from voxpipe.audio import g711


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="audioop, the reference, was removed in Python 3.13")
def test_matches_audioop_for_every_sample_and_code() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    every_sample = np.arange(-32768, 32768, dtype=np.int16).tobytes()
    assert g711.encode(every_sample) == audioop.lin2ulaw(every_sample, 2)
    every_code = bytes(range(256))
    assert g711.decode(every_code) == audioop.ulaw2lin(every_code, 2)


def test_decode_then_encode_returns_the_bytes_twilio_sent() -> None:
    every_code = bytes(range(256))
    round_trip = g711.encode(g711.decode(every_code))
    assert [i for i in range(256) if round_trip[i] != every_code[i]] == [0x7F]  # negative zero -> 0xFF
    assert g711.decode(bytes([0x7F])) == g711.decode(bytes([0xFF]))


def test_quantisation_error_is_bounded() -> None:
    tone = (np.sin(np.arange(8000) / 8000 * 2 * np.pi * 440) * 20000).astype(np.int16)
    decoded = np.frombuffer(g711.decode(g711.encode(tone.tobytes())), dtype=np.int16)
    assert np.max(np.abs(decoded.astype(int) - tone)) <= 20000 * 0.04
