"""The batched VAD's volume (voxpipe.pipeline.batched_vad): pipecat's values, without measuring certain zeros.

pipecat's VAD step measures the BS.1770 loudness of the last 0.4 s for every 32 ms window; the batched
analyzer reads a window as 0 without measuring when its energy, amplified by the K-weighting filter's largest
gain, is still below BS.1770's -70 LUFS gate. Shown here: the smoothed volume of every window equals
pipecat's, on speech over lines from digital silence to audible hiss, at 8 and 16 kHz; the bound holds for the
filter's worst frequency at the edge of the bound; and on silence the loudness is not measured at all.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pipecat.audio import volume as pipecat_volume
from pipecat.audio.utils import calculate_audio_volume, exp_smoothing
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.audio.volume import AudioVolumeTracker

import voxpipe.pipeline.batched_vad as batched_vad
from tests.test_batched_vad import UTTERANCES, speech
from voxpipe.pipeline.batched_vad import BatchedSileroVADAnalyzer

PARAMS = VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.6)


def pipecat_volumes(windows: list[bytes], rate: int) -> list[float]:
    """pipecat's ``VADAnalyzer._get_smoothed_volume`` for each window in turn."""
    tracker, previous, volumes = AudioVolumeTracker(), 0.0, []
    for window in windows:
        tracker.update(window, rate)
        previous = exp_smoothing(tracker.volume, previous, 0.2)
        volumes.append(previous)
    return volumes


def batched_volumes(windows: list[bytes], rate: int) -> list[float]:
    analyzer = BatchedSileroVADAnalyzer(sample_rate=rate, params=PARAMS)
    analyzer.set_sample_rate(rate)
    volumes = []
    for window in windows:
        analyzer._prev_volume = analyzer._get_smoothed_volume(window)  # as pipecat's step keeps it
        volumes.append(analyzer._prev_volume)
    return volumes


def k_weighting_gain(rate: int, frequencies: np.ndarray) -> np.ndarray:
    """|H| of BS.1770's K-weighting (shelf, then high-pass) at ``rate``, from the standard's biquads."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = ([(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0],
             [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])  # fmt: skip
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    d = 1 + k / q + k * k
    high_pass = ([1.0, -2.0, 1.0], [1.0, 2 * (k * k - 1) / d, (1 - k / q + k * k) / d])
    z = np.exp(-2j * np.pi * frequencies / rate)
    gain = np.ones_like(frequencies)
    for b, a in (shelf, high_pass):
        gain = gain * np.abs(np.polyval(b[::-1], z) / np.polyval(a[::-1], z))
    return gain


def windows_of(audio: bytes, rate: int) -> list[bytes]:
    size = 512 if rate == 8000 else 1024  # Silero's window: 256 / 512 samples
    return [audio[i : i + size] for i in range(0, len(audio) - size + 1, size)]


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("hiss_rms", [0.0, 0.5, 2.0, 4.0, 6.0, 8.0, 12.0, 40.0])
def test_every_window_has_pipecats_volume(rate: int, hiss_rms: float) -> None:
    rng = np.random.default_rng(int(hiss_rms * 10) + rate)
    utterance = np.frombuffer(speech(UTTERANCES[0], rate), "<i2").astype(np.float64)
    line = np.concatenate([np.zeros(rate), utterance, np.zeros(rate)]) + rng.normal(
        0, hiss_rms, len(utterance) + 2 * rate
    )
    audio = line.round().clip(-32768, 32767).astype("<i2").tobytes()
    windows = windows_of(audio, rate)
    assert batched_volumes(windows, rate) == pipecat_volumes(windows, rate)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_the_bound_holds_at_the_filters_worst_frequency(rate: int) -> None:
    frequencies = np.linspace(1, rate / 2 - 1, 40000)
    gains = k_weighting_gain(rate, frequencies)
    assert gains.max() < batched_vad.K_WEIGHTING_MAX_GAIN
    # A sine at that frequency, as loud as the shortcut allows: pipecat's measure gates it to 0 too.
    worst = frequencies[gains.argmax()]
    samples = math.ceil(0.4 * rate)
    rms = math.sqrt(batched_vad.GATE_MEAN_SQUARE) / batched_vad.K_WEIGHTING_MAX_GAIN * 32768 * 0.9  # (rounding adds)
    sine = (rms * math.sqrt(2) * np.sin(2 * np.pi * worst * np.arange(samples) / rate)).round().astype("<i2")
    analyzer = BatchedSileroVADAnalyzer(sample_rate=rate, params=PARAMS)
    analyzer.set_sample_rate(rate)
    assert analyzer._surely_gated(sine.tobytes())
    assert calculate_audio_volume(sine.tobytes(), rate) == 0.0
    # and a little louder, the measure is no longer certain to be 0: it is measured
    assert not analyzer._surely_gated((sine.astype(np.float64) * 1.5).round().astype("<i2").tobytes())


def test_silence_is_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[int] = []

    def counted(audio: bytes, rate: int) -> float:
        measured.append(len(audio))
        return calculate_audio_volume(audio, rate)

    monkeypatch.setattr(pipecat_volume, "calculate_audio_volume", counted)
    rate = 8000
    silence = bytes(2 * rate)  # one second
    windows = windows_of(silence + speech(UTTERANCES[0], rate), rate)
    batched_volumes(windows, rate)
    quiet_windows = len(silence) // 512
    assert 0 < len(measured) <= len(windows) - quiet_windows  # only windows with speech in their 0.4 s
