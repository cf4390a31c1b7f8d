"""``end_call`` and ``transfer``: tools whose effect the call's transport carries out.

The handler only acknowledges; the pipeline reports the tool's ``effect`` to the transport, which hangs
up (after the bot's last words) or hands the call over in its own way (Twilio REST, ConversationRelay ``end``).
"""

from __future__ import annotations

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolKind
from voxpipe.tools import handlers


class EndCallOptions(ProviderOptions):
    pass


class TransferOptions(ProviderOptions):
    to: str = Field(description="Where to hand the call: a phone number (E.164) or SIP URI.")


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
