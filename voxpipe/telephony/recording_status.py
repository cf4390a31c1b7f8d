"""Twilio's recording status callback: which recording of which call, and whether it has a file to link.

Twilio posts it (form-encoded, signed like every webhook) to ``<Recording recordingStatusCallback=...>`` once
a recording is ready: ``CallSid``, ``RecordingSid``, ``RecordingUrl``, ``RecordingStatus`` (``completed``;
``absent``: too short or silent, no file), ``RecordingDuration``, ``ErrorCode``... The server's route
(``transports.twilio_recordings``) and the Lambda's (``serverless.recordings``) read it through this one parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

COMPLETED = "completed"


@dataclass(frozen=True)
class RecordingStatus:
    """One recording status callback's fields (missing ones are empty)."""

    call_sid: str
    recording_sid: str
    status: str
    url: str
    duration: str
    error_code: str

    @classmethod
    def of(cls, form: Mapping[str, str]) -> RecordingStatus:
        return cls(
            call_sid=form.get("CallSid", ""),
            recording_sid=form.get("RecordingSid", ""),
            status=form.get("RecordingStatus", ""),
            url=form.get("RecordingUrl", ""),
            duration=form.get("RecordingDuration") or "?",
            error_code=form.get("ErrorCode") or "none",
        )

    @property
    def linkable(self) -> bool:
        """A completed recording with a file, of a known call."""
        return self.status == COMPLETED and bool(self.url) and bool(self.call_sid)

    def why_not_linked(self) -> str:
        """For the log line of a callback that is not ``linkable``."""
        return (
            f"Twilio's recording {self.recording_sid} of call {self.call_sid}: {self.status or 'no status'} "
            f"(error {self.error_code}); no recording to link"
        )
