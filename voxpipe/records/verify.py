"""``voxpipe calls --verify``: each turn's voice-to-voice figure checked against the call's own recording.

The recording is independent evidence: the gap between the caller's last audible sample and the bot's next
reply, read from the stereo WAV (``turn_gaps``), is what the caller lived through. A reported figure more
than ``TOLERANCE_MS`` away from it is wrong.

A call that reconnected has one WAV per connection (``CallRecord.recordings``): each connection's turns are
checked against its own WAV, and each check names the WAV it was read from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from voxpipe.records.model import CallRecord, Recording
from voxpipe.records.recording import turn_gaps
from voxpipe.records.recording_store import open_recording_store

TOLERANCE_MS = 20.0


@dataclass(frozen=True)
class TurnCheck:
    """One turn: the reported voice-to-voice and the one read from the recording (milliseconds).

    ``index`` is the turn's on the call's record (``None``: a reply the WAV holds and no turn of the record
    does); ``recording`` is the location of the WAV it was checked against."""

    call_id: str
    recording: str
    index: int | None
    reported_ms: float | None
    recorded_ms: float | None

    @property
    def ok(self) -> bool:
        if self.reported_ms is None or self.recorded_ms is None:
            return False
        return abs(self.reported_ms - self.recorded_ms) <= TOLERANCE_MS


def read_recording(location: str) -> bytes:
    """The bytes of a recording named by its ``file://`` or ``s3://`` location; ``OSError`` if unreadable."""
    store = open_recording_store(location if location.startswith("s3://") else "file:///")
    try:
        return store.get(location)
    except OSError:
        raise
    except Exception as exc:  # botocore's errors (missing object, denied, unreachable) are not OSErrors
        raise OSError(str(exc)) from exc


def verify(
    record: CallRecord, unreadable: Callable[[CallRecord, Recording, Exception], None] | None = None
) -> list[TurnCheck]:
    """Every turn of ``record`` against its connection's recording. A recording that cannot be read
    (``OSError``) or is not one (``ValueError``) is raised, or with ``unreadable`` handed to it and skipped, so
    it does not hide the call's other connections.

    A ConversationRelay call's recording is Twilio's (an ``https://`` URL of the account): Twilio spoke the
    replies, so its turns have no voice-to-voice figure to check, and the file needs the account's
    credentials. It is not checked."""
    checks = []
    for recording in record.recordings:
        if not recording.location.startswith(("file://", "s3://")):
            continue
        try:
            checks += verify_recording(record, recording)
        except (OSError, ValueError) as exc:
            if unreadable is None:
                raise
            unreadable(record, recording, exc)
    return checks


def verify_recording(record: CallRecord, recording: Recording) -> list[TurnCheck]:
    """The turns of one connection of ``record`` against that connection's WAV, in order. A gap the WAV shows
    beyond the connection's turns is a check with no turn and no reported figure (it fails)."""
    gaps = turn_gaps(read_recording(recording.location))
    reported = {turn.index: turn.voice_to_voice_ms for turn in record.turns}
    indexes: list[int | None] = [*recording.turns, *[None] * (len(gaps) - len(recording.turns))]
    return [
        TurnCheck(
            record.call_id,
            recording.location,
            index,
            reported.get(index) if index is not None else None,
            gaps[position] if position < len(gaps) else None,
        )
        for position, index in enumerate(indexes)
    ]
