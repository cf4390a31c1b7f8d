"""The ``silence:`` and ``fillers:`` sections: how a call avoids dead air (docs/calls.md).

Apart from ``voxpipe.config.models`` to keep that module small; ``Deployment`` holds both.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import Field

from voxpipe.config.strict import Strict


class SilenceConfig(Strict):
    """``silence:``: what happens when the caller says nothing after the bot has spoken (``silence: off``: nothing).

    The timer runs only while neither side speaks and no tool is running (pipecat's user-idle timer).
    """

    reprompt_after_secs: float = Field(8.0, gt=0, description="Silence before each re-prompt.")
    reprompts: list[str] = Field(
        default_factory=lambda: ["Are you still there?"], description="Spoken in turn, one per silence."
    )
    hangup_after_secs: float = Field(10.0, gt=0, description="Silence after the last re-prompt before the goodbye.")
    goodbye: str = Field(
        "It seems you've stepped away, so I'll end the call now. Goodbye.", min_length=1, description="Last words."
    )


class FillerConfig(Strict):
    """``fillers:``: what a slow tool says by default (a tool's own ``filler`` wins; ``fillers: off``: none)."""

    say: str = Field("One moment while I check that.", min_length=1)
    after_secs: float = Field(1.0, gt=0, description="Seconds a tool may take before the filler is spoken.")


class _HasFiller(Protocol):
    filler: str | None
    filler_after_secs: float | None


def tool_filler(tool: _HasFiller, default: FillerConfig | None) -> tuple[str, float] | None:
    """A tool's filler and the seconds it waits for it (the deployment's ``fillers:`` filling in what the tool
    leaves out), or ``None`` if it has none. The pipeline and the Lambda relay both read it from here."""
    text = tool.filler or (default.say if default else None)
    after = tool.filler_after_secs or (default.after_secs if default else None)
    return (text, after) if text and after else None
