"""``voxpipe calls --verify``: each turn's voice-to-voice figure checked against the call's own recording.

The recording is independent evidence: the gap between the caller's last audible sample and the bot's next
reply, read from the stereo WAV (``turn_gaps``), is what the caller lived through. A reported figure more
than ``TOLERANCE_MS`` away from it is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxpipe.records.model import CallRecord
from voxpipe.records.recording import turn_gaps
from voxpipe.records.recording_store import open_recording_store

TOLERANCE_MS = 20.0


@dataclass(frozen=True)
class TurnCheck:
    """One turn: the reported voice-to-voice and the one read from the recording (milliseconds)."""

    call_id: str
    index: int
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


def verify(record: CallRecord) -> list[TurnCheck]:
    """Every turn of ``record`` against its recording (``OSError``: unreadable; ``ValueError``: not a recording)."""
    if record.recording is None:
        return []
    gaps = turn_gaps(read_recording(record.recording))
    count = max(len(gaps), len(record.turns))
    return [
        TurnCheck(
            record.call_id,
            index + 1,
            record.turns[index].voice_to_voice_ms if index < len(record.turns) else None,
            gaps[index] if index < len(gaps) else None,
        )
        for index in range(count)
    ]
