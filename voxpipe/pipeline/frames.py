"""Frames voxpipe adds to pipecat's, shared by transports and providers (neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import ControlFrame, SystemFrame


@dataclass
class BotAudioPlayedFrame(SystemFrame):
    """Upstream: the caller has heard ``played_ms`` of the current bot response.

    Sent by transports that know what was played (Twilio returns a mark after each chunk), so a realtime
    service truncates an interrupted answer at what the caller heard, not at what it merely sent.
    """

    played_ms: int = 0


@dataclass
class ConversationHandoverFrame(SystemFrame):
    """Handed by a fallback switcher to the realtime session it switched a call to.

    A realtime session holds the conversation on the vendor's side, so a backup starts knowing nothing: it gets
    the call's ``context`` (``None`` before the call has one), the caller's words the failed session heard and
    did not answer (``heard``; ``""`` if none), and whether to answer them (``answer``). It answers at once, so
    the caller hears one reply to the turn, from the backup.
    """

    context: object | None = None  # the call's LLMContext (pipecat's; typed loosely to keep this module light)
    heard: str = ""
    answer: bool = False


@dataclass
class ReplyCutFrame(ControlFrame):
    """Downstream, right after the ``LLMFullResponseEndFrame`` a realtime session pushes for a reply its
    connection's drop cut short: that reply is asked for again (after a reconnect, or of a backup), so the part
    the assistant aggregator just wrote is withdrawn from the conversation (``ReplyWithdrawal``). The caller did
    hear it, and the call record keeps it."""
