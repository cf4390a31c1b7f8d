"""``end_call`` and ``transfer``: tools whose effect the call's transport carries out.

The handler only acknowledges; the pipeline reports the tool's ``effect`` to the transport, which hangs
up (after the bot's last words) or hands the call over in its own way (Twilio REST, ConversationRelay ``end``).
A ``mode: warm`` transfer puts the caller on hold, rings the person with a summary of the call first, and
brings the caller back to the agent if nobody answers (``voxpipe.pipeline.transfer``, docs/calls.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolKind
from voxpipe.tools import handlers


class EndCallOptions(ProviderOptions):
    pass


class TransferOptions(ProviderOptions):
    to: str = Field(description="Where to hand the call: a phone number (E.164) or SIP URI.")
    mode: Literal["cold", "warm"] = Field(
        "cold", description="cold: dial straight through; warm: hold, ring with a summary, come back if unanswered."
    )
    ring_timeout_secs: float = Field(25.0, gt=0, le=600, description="Warm: how long the person's phone rings.")
    hold_audio: str | None = Field(None, description="Warm: URL of what the caller hears on hold (Twilio's default).")
    summary: bool = Field(True, description="Warm: the person hears a summary of the call (from the LLM) first.")
    unanswered: str = Field(
        "I'm sorry, nobody could take your call just now. I'm still here: how else can I help?",
        min_length=1,
        description="Warm: what the agent says when the caller is back because nobody answered.",
    )


END_CALL = ToolKind(
    name="end_call",
    options=EndCallOptions,
    build=handlers.end_call,
    description="End the call once the caller's request is complete and you have said goodbye.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
    effect="end_call",
)

TRANSFER = ToolKind(
    name="transfer",
    options=TransferOptions,
    build=handlers.transfer,
    description="Transfer the caller to a human agent when you cannot help or they ask for a person.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
    effect="transfer",
)
