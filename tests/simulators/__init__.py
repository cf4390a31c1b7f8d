"""Client simulators that drive a running voxpipe server over real sockets, as Twilio and a browser would."""

from __future__ import annotations

from typing import Any

from voxpipe.security.call_binding import CallBinding


def webhook_parameters(transport: str, call_sid: str) -> dict[str, str]:
    """The ``<Parameter>`` the signed ``/twiml`` webhook gives ``call_sid`` (keyed by the test environment's
    ``VOXPIPE_SIGNING_SECRET``): what Twilio hands back in ``start`` / ``setup``. Tests that fetch the
    TwiML itself prove the server really gives it (tests/security/test_call_binding.py)."""
    return CallBinding.for_deployment(transport, signed=True).parameters(call_sid)


def page_subprotocols(token: str) -> list[str]:
    """The WebSocket subprotocols the browser page offers: ``voxpipe`` and its session token."""
    from voxpipe.security.browser_access import SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX

    return [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token]


def page_token(client: Any, name: str, origin: str) -> str:
    """What the page does first: ``POST /{name}/token`` from ``origin`` (a Starlette ``TestClient`` or a
    synchronous ``httpx.Client``); the session token it gets."""
    answer = client.post(f"/{name}/token", headers={"origin": origin})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])
