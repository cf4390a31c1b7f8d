"""Offline text-to-speech: hibari (a 7.9 MB ONNX voice, 24 kHz, far faster than real time on one core).

Each sentence is synthesized whole in a few tens of milliseconds, then sent in short chunks, so the
first audio of a reply leaves about 0.05 s after its first sentence arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from voxpipe.providers import FREE, Provider, ProviderOptions, ServiceRequest, hookimpl

if TYPE_CHECKING:
    from voxpipe.providers.builtin._hibari_tts import LocalHibariTTSService

PACKAGED_MODEL = "hibari"


class LocalTTSOptions(ProviderOptions):
    voice: str = Field(
        "heart",
        description="hibari voice. heart (American English, female) ships in the package; emma, fable "
        "(British), fenrir and kore work only if already in hibari's cache, since nothing is downloaded "
        "at run time.",
    )
    speed: float = Field(1.0, ge=0.5, le=2.0, description="Speaking rate, as a multiple of the normal pace.")


def build(request: ServiceRequest[LocalTTSOptions]) -> LocalHibariTTSService:
    from voxpipe.providers.builtin._hibari_tts import LocalHibariTTSService, load_hibari

    if request.model not in (None, PACKAGED_MODEL):
        raise ValueError(f"local_tts has one model, {PACKAGED_MODEL}; pick a voice with options.voice")
    return LocalHibariTTSService(
        hibari=load_hibari(request.options.voice),
        speed=request.options.speed,
        sample_rate=request.audio.sample_rate_out,
    )


PROVIDER = Provider(
    name="local_tts",
    kind="tts",
    options=LocalTTSOptions,
    build=build,
    prices={"*": FREE},
    default_model=PACKAGED_MODEL,
    description="hibari text-to-speech on this machine (English, 24 kHz); no network, no key.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]


def speak(text: str, sample_rate: int = 16000, voice: str = "heart") -> bytes:
    """``text`` spoken by the local voice as PCM16 mono at ``sample_rate`` (for simulated callers and corpora)."""
    import numpy as np
    import soxr

    from voxpipe.providers.builtin._hibari_tts import HIBARI_RATE, load_hibari

    audio = np.asarray(load_hibari(voice).tts(text), dtype=np.float32)
    if sample_rate != HIBARI_RATE:
        audio = soxr.resample(audio, HIBARI_RATE, sample_rate)
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
