"""Binding a Twilio call's socket to the signed webhook that started it.

Twilio signs a Media Streams or ConversationRelay WebSocket handshake over the fixed stream URL, so one
captured ``X-Twilio-Signature`` is valid for every call, and the ``callSid`` in ``start`` / ``setup`` is
whatever the client wrote. So the signed ``/twiml`` webhook (the one request that proves which call Twilio
is placing) puts a short-lived token for that call's CallSid into the TwiML as a ``<Parameter>``; Twilio
hands it back in ``start.customParameters`` / ``setup.customParameters``, and the stream is served only if
it names the same CallSid. A replayed handshake naming another call's CallSid has no token for it.

Each transport mints tokens with its own purpose (``call:twilio``, ``call:conversation_relay``), so a
token handed out for one transport opens nothing on another. Standard library only (the Lambda relay and
the bridge use it too).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from voxpipe.security.tokens import SECRET_VARIABLE, Signer, TokenError

log = logging.getLogger("voxpipe.security")

PARAMETER = "voxpipe_call_token"
"""The ``<Parameter name>`` that carries the token (and the ``customParameters`` key it comes back under)."""

TTL_SECS = 120.0
"""Twilio opens the socket within seconds of the webhook's answer; a token older than this opens nothing."""


def without_token(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The ``customParameters`` worth keeping with the session: the token has done its work once verified."""
    return {name: value for name, value in parameters.items() if name != PARAMETER}


class CallBinding:
    """Mints the TwiML token for a CallSid and checks the one a socket brings back, for one transport.

    ``signer`` is ``None`` when the deployment runs unsigned (``insecure: true``): nothing is minted and
    every socket is taken at its word, as its unsigned handshake was. Built with ``for_deployment``.
    """

    def __init__(self, transport: str, signer: Signer | None, *, required: bool):
        self.purpose = f"call:{transport}"
        self._signer = signer
        self._required = required

    @classmethod
    def for_deployment(cls, transport: str, signed: bool, environ: Mapping[str, str] | None = None) -> CallBinding:
        """Signed deployments need ``VOXPIPE_SIGNING_SECRET``; without it every Twilio socket is refused
        (and the reason logged here, once at start), as a missing auth token refuses every webhook."""
        if not signed:
            return cls(transport, None, required=False)
        try:
            return cls(transport, Signer.from_environ(environ), required=True)
        except ValueError as problem:
            log.warning(f"{transport} calls will be refused: binding them to their webhook needs {problem}")
            return cls(transport, None, required=True)

    def parameters(self, call_sid: str) -> dict[str, str]:
        """The ``<Parameter>`` to add to the webhook's TwiML for ``call_sid`` (none when unsigned)."""
        if self._signer is None or not call_sid:
            return {}
        return {PARAMETER: self._signer.mint(self.purpose, call_sid, TTL_SECS)}

    def verify(self, call_sid: str, custom_parameters: Any) -> None:
        """Accept a socket's ``start`` / ``setup`` for ``call_sid``, or raise ``TokenError`` saying why."""
        if not self._required:
            return
        if self._signer is None:
            raise TokenError(f"{SECRET_VARIABLE} is not set: no call can be bound to its webhook")
        token = custom_parameters.get(PARAMETER) if isinstance(custom_parameters, dict) else None
        if token is None:
            raise TokenError(f"no {PARAMETER} parameter (the socket was not opened from this server's TwiML)")
        self._signer.verify(token, self.purpose, call_sid)
