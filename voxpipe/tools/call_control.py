"""``end_call`` and ``transfer``: tools whose effect the call's transport carries out.

The handler only acknowledges; the pipeline reports the tool's ``effect`` to the transport, which hangs
up (after the bot's last words) or hands the call over in its own way (Twilio REST, ConversationRelay ``end``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolHandler, ToolKind


class EndCallOptions(ProviderOptions):
    pass


class TransferOptions(ProviderOptions):
    to: str = Field(description="Where to hand the call: a phone number (E.164) or SIP URI.")


def _acknowledge(effect: str) -> Any:
    def build(name: str, options: Any) -> ToolHandler:
        async def call(arguments: dict[str, Any]) -> Any:
            return {"status": "ok", "effect": effect, **({"to": options.to} if effect == "transfer" else {})}

        return call

    return build


END_CALL = ToolKind(
    name="end_call",
    options=EndCallOptions,
    build=_acknowledge("end_call"),
    description="End the call once the caller's request is complete and you have said goodbye.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
    effect="end_call",
)

TRANSFER = ToolKind(
    name="transfer",
    options=TransferOptions,
    build=_acknowledge("transfer"),
    description="Transfer the caller to a human agent when you cannot help or they ask for a person.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
    effect="transfer",
)
