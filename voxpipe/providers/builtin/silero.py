"""vad ``silero``: pipecat's bundled Silero model, one ONNX session shared by every call of the process, whose
windows are scored in one batched run per tick (``voxpipe.pipeline.batched_vad``)."""

from __future__ import annotations

from typing import Any

from voxpipe.providers.spec import FREE, Provider, ProviderOptions, ServiceRequest, hookimpl


class SileroOptions(ProviderOptions):
    """Silero takes its thresholds from the deployment's ``vad`` section; it has no options of its own."""


def build(request: ServiceRequest[SileroOptions]) -> Any:
    from pipecat.audio.vad.vad_analyzer import VADParams

    from voxpipe.pipeline.batched_vad import BatchedSileroVADAnalyzer

    return BatchedSileroVADAnalyzer(params=VADParams(**request.vad.model_dump()))


PROVIDER = Provider(
    name="silero",
    kind="vad",
    options=SileroOptions,
    build=build,
    prices={"*": FREE},
    description="Silero VAD (bundled with pipecat), 8/16 kHz, ~0.3 ms per 32 ms window.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
