"""The ``recording:`` and ``redact:`` sections of a deployment file (what a call keeps, and what it masks).

Plain typed data like the rest of ``voxpipe.config.models``, which imports them; what they do is in
``voxpipe.pipeline.keeping`` (and docs/records.md).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from voxpipe.config.strict import Strict


class RecordingConfig(Strict):
    """``recording:``: one stereo WAV per call (caller left, bot right, as the caller heard it)."""

    enabled: bool = False
    store: str = Field(
        "file://recordings",
        description="Where recordings go: file://DIR (relative to the working directory) or s3://BUCKET/PREFIX.",
    )
    retention_days: int | None = Field(
        None, gt=0, description="Days a recording is kept: an S3 lifecycle rule, or a sweep of the file:// folder."
    )

    @field_validator("store")
    @classmethod
    def _known_store(cls, store: str) -> str:
        if not re.fullmatch(r"file://.+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", store):
            raise ValueError(f"{store!r} is not a store: use file://DIR or s3://BUCKET/PREFIX (a valid bucket name)")
        return store


RedactEntity = Literal["card_number", "ssn", "email", "phone_number"]


class RedactConfig(Strict):
    """``redact:``: personal data masked in everything stored or emitted (records, history, logs, traces)."""

    entities: list[RedactEntity] = Field(
        default_factory=lambda: ["card_number", "ssn", "email", "phone_number"],
        description="Built-in detectors; card numbers must pass the Luhn check.",
    )
    patterns: list[str] = Field(default_factory=list, description="Extra regular expressions to mask.")
    before_llm: bool = Field(False, description="Also mask what the model sees (cascade mode: the transcripts).")

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return patterns
