"""Who the audio bridge's Lambda admits: Twilio by its signature, a browser page by its signed session token.

The browser path is ``voxpipe serve``'s (``voxpipe.security.browser_access``, the same tokens and checks): the
page first asks ``POST /bridge/token`` (an HTTP API route of the bridge function, on the stack's HTTP API beside
``/twiml``); an ``Origin`` in the deployment's list gets a token naming a session id chosen here. The page then
opens the bridge's WebSocket offering the subprotocols ``voxpipe`` and ``token.<token>``, as on the server: API
Gateway hands ``Sec-WebSocket-Protocol`` to ``$connect``, and the ``$connect`` answer names the chosen one (a
browser drops a handshake that offered subprotocols and got none back). So the token stays out of the URL, which
API Gateway's access logs keep. ``$connect`` admits only a valid, unexpired token issued to its own ``Origin``,
and the worker's call takes its session id from that token, never from the page's ``start``.

No rate limit per client here (a Lambda keeps no window): the bridge function's reserved concurrency bounds the
token route with the rest of the bridge. Standard library only (plus twilio's validator), for the cold start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voxpipe.security.browser_access import SUBPROTOCOL, AccessRefused, BrowserAccess, subprotocol_token
from voxpipe.serverless import BRIDGE_URL_ENV, HandlerConfig, event_headers, response

logger = logging.getLogger(__name__)

TOKEN_PATH = "/bridge/token"  # noqa: S105 — a route, not a credential
TOKEN_ROUTE = f"POST {TOKEN_PATH}"


@dataclass(frozen=True)
class Admitted:
    """A handshake that may open a call: ``client`` is ``twilio`` or ``browser``; a browser's ``session_id``
    is its token's, and ``subprotocol`` what ``$connect`` must answer."""

    client: str
    session_id: str | None = None
    subprotocol: str | None = None


def page_access(config: HandlerConfig) -> BrowserAccess:
    """The deployment's page origins and token lifetime, keyed by ``VOXPIPE_SIGNING_SECRET`` from the function's
    environment (without it every page is refused, and that is logged)."""
    return BrowserAccess.from_environ(config.allowed_origins, config.session_token_secs, config.environ)


def token(config: HandlerConfig, event: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /bridge/token`` (HTTP API payload 2.0): a session token for a page of an allowed origin."""
    origin = event_headers(event).get("origin")
    try:
        issued = page_access(config).issue(origin)
    except AccessRefused as refused:
        logger.warning("%s: bridge token for origin %.100r refused: %s", config.name, origin, refused)
        return response(refused.status, str(refused))
    body = {"token": issued.token, "session_id": issued.session.session_id, "expires_at": issued.expires_at}
    reply = response(200, json.dumps(body), "application/json")
    # The page is served from its own origin: only that origin may read the answer (a POST without a body or
    # headers is a simple request, so no preflight comes first).
    reply["headers"] |= {"Access-Control-Allow-Origin": issued.session.origin, "Vary": "Origin"}
    return reply


def admit(config: HandlerConfig, event: Mapping[str, Any]) -> Admitted | AccessRefused:
    """Who a ``$connect`` handshake is, or why it is refused."""
    headers = event_headers(event)
    signature = headers.get("x-twilio-signature")
    if signature is not None:
        return (
            Admitted("twilio")
            if _signed(config, signature)
            else AccessRefused("invalid X-Twilio-Signature", status=403)
        )
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    origin = headers.get("origin")
    try:
        session = page_access(config).check(subprotocol_token(offered), origin)
    except AccessRefused as refused:
        logger.warning("%s: bridge connection from origin %.100r refused: %s", config.name, origin, refused)
        return refused
    return Admitted("browser", session.session_id, SUBPROTOCOL if SUBPROTOCOL in offered else None)


def _signed(config: HandlerConfig, signature: str) -> bool:
    if not config.validate_signatures:
        return True
    if not config.twilio_auth_token:
        return False
    from twilio.request_validator import RequestValidator

    return bool(RequestValidator(config.twilio_auth_token).validate(config.setting(BRIDGE_URL_ENV), {}, signature))
