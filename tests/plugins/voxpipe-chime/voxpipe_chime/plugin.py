"""tts `chime`: speaks each word as a short chime (a tone as long as the word), locally and for free."""

from typing import Any

from pydantic import Field

from voxpipe.providers import FREE, Provider, ProviderOptions, ServiceRequest, hookimpl


class ChimeOptions(ProviderOptions):
    pitch_hz: float = Field(440.0, gt=50, lt=4000, description="Pitch of the chime (Hz).")
    secs_per_char: float = Field(0.05, gt=0, le=0.5, description="Seconds of chime per character of text.")


def build(request: ServiceRequest[ChimeOptions]) -> Any:
    from voxpipe_chime.service import ChimeTTSService

    # PCM16 at the call's output rate, also on a mu-law phone call (the transport encodes it).
    return ChimeTTSService(options=request.options, sample_rate=request.audio.sample_rate_out)


PROVIDER = Provider(
    name="chime",
    kind="tts",
    options=ChimeOptions,
    build=build,
    default_model="chime-1",
    prices={"*": FREE},
    description="Each word as a chime (an example plugin).",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
