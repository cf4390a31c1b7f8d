"""Audio helpers of the provider SDK: a vendor's G.711 mu-law output as the PCM16 frames pipecat carries.

Every audio frame a service pushes is PCM16. On a telephone call (``AudioFormat.encoding == "mulaw"``) a
vendor that can speak mu-law should be asked for it: ``decode_mulaw`` turns its bytes into PCM16 at the
same 8 kHz, and the transport's mu-law encoding restores them exactly, so nothing is resampled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipecat.frames.frames import TTSAudioRawFrame

PHONE_RATE = 8000  # G.711 on a telephone call


def decode_mulaw(frame: TTSAudioRawFrame) -> TTSAudioRawFrame:
    """A frame of the vendor's mu-law bytes as the PCM16 frame pipecat carries, at the same 8 kHz."""
    from pipecat.frames.frames import TTSAudioRawFrame

    from voxpipe.audio import g711

    return TTSAudioRawFrame(g711.decode(frame.audio), PHONE_RATE, 1, context_id=frame.context_id)
