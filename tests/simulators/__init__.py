"""Client simulators that drive a running voxpipe server over real sockets, as Twilio and a browser would."""

from __future__ import annotations

from voxpipe.security.call_binding import CallBinding


def webhook_parameters(transport: str, call_sid: str) -> dict[str, str]:
    """The ``<Parameter>`` the signed ``/twiml`` webhook gives ``call_sid`` (keyed by the test environment's
    ``VOXPIPE_SIGNING_SECRET``): what Twilio hands back in ``start`` / ``setup``. Tests that fetch the
    TwiML itself prove the server really gives it (tests/security/test_call_binding.py)."""
    return CallBinding.for_deployment(transport, signed=True).parameters(call_sid)
