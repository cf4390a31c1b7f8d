"""Frames voxpipe adds to pipecat's, shared by transports and providers (neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import SystemFrame


@dataclass
class BotAudioPlayedFrame(SystemFrame):
    """Upstream: the caller has heard ``played_ms`` of the current bot response.

    Sent by transports that know what was played (Twilio returns a mark after each chunk), so a realtime
    service truncates an interrupted answer at what the caller heard, not at what it merely sent.
    """

    played_ms: int = 0
