"""Browser access: a short-lived signed session token, bound to an allowed page origin and a server-chosen id.

Any client can set an ``Origin`` header, so the header alone proves nothing. A page first asks
``POST /{name}/token``: the server checks its ``Origin`` against the deployment's explicit list (and the
per-client rate of ``limits:``), chooses the browser session id itself and hands back a token
(``voxpipe.security.tokens``, keyed by ``VOXPIPE_SIGNING_SECRET``) binding that id, the origin and an expiry.
``WS /ws``, ``POST /session`` and ``POST /tools/{tool}`` then serve only a valid, unexpired token brought by a
page of the same origin; the session id always comes from the token, never from the page. ``/session`` adds a
tools token (its own purpose, the same binding) that outlives the page token for the length of a WebRTC call.

There is no "Origin equal to Host" rule: the Host header is the client's too (DNS rebinding). Standard
library only.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from voxpipe.security.tokens import Signer, TokenError

log = logging.getLogger("voxpipe.security")

PAGE_PURPOSE = "browser:page"
TOOLS_PURPOSE = "browser:tools"
SUBPROTOCOL = "voxpipe"
"""The WebSocket subprotocol the page asks for; the token travels as a second one, ``token.<token>`` (a
browser cannot set headers on a WebSocket, and a URL's query string ends up in access logs)."""
TOKEN_SUBPROTOCOL_PREFIX = "token."  # noqa: S105 — a protocol name prefix, not a credential


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` (lower case) of an http(s) origin or URL, or ``None`` if it is not one."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


class AccessRefused(TokenError):
    """A browser request was refused: ``status`` is the HTTP answer (401: no valid token, 403: origin not
    allowed), ``limit`` the label it is counted under in ``voxpipe_refused_total``. The reason is short and
    holds nothing the client sent, so it fits a WebSocket close frame (123 bytes)."""

    def __init__(self, reason: str, *, status: int = 401):
        super().__init__(reason)
        self.status = status
        self.limit = "origin" if status == 403 else "session_token"


@dataclass(frozen=True)
class PageSession:
    """What a valid token names: the server-chosen browser session id and the page origin it was issued to."""

    session_id: str
    origin: str


@dataclass(frozen=True)
class IssuedToken:
    token: str
    session: PageSession
    expires_at: int  # unix seconds


class BrowserAccess:
    """Issues page tokens to allowed origins and checks the token a browser request brings.

    ``signer`` is ``None`` when ``VOXPIPE_SIGNING_SECRET`` is not set: every browser request is then refused
    (logged once, at start), as a signed Twilio deployment without it refuses every call.
    """

    def __init__(self, origins: Iterable[str], signer: Signer | None, ttl_secs: float, *, clock: Any = time.time):
        self.origins = frozenset(o for o in map(origin_of, origins) if o)
        self.ttl_secs = ttl_secs
        self._signer = signer
        self._clock = clock

    @classmethod
    def from_environ(
        cls, origins: Iterable[str], ttl_secs: float, environ: Mapping[str, str] | None = None
    ) -> BrowserAccess:
        try:
            signer: Signer | None = Signer.from_environ(environ)
        except ValueError as problem:
            log.warning(f"browser pages will be refused: their session tokens need {problem}")
            signer = None
        return cls(origins, signer, ttl_secs)

    def _origin(self, origin: str | None) -> str:
        allowed = origin_of(origin or "")
        if allowed is None or allowed not in self.origins:
            raise AccessRefused("origin not allowed", status=403)
        return allowed

    def _sign(self) -> Signer:
        if self._signer is None:
            raise AccessRefused("browser sessions are off: the server has no signing secret")
        return self._signer

    def issue(self, origin: str | None) -> IssuedToken:
        """A page token for a new session id, for a page of an allowed ``origin`` (else ``AccessRefused``)."""
        session = PageSession(secrets.token_urlsafe(24), self._origin(origin))
        token = self._sign().mint(PAGE_PURPOSE, f"{session.session_id} {session.origin}", self.ttl_secs)
        return IssuedToken(token, session, int(self._clock() + self.ttl_secs))

    def tools_token(self, session: PageSession, ttl_secs: float) -> str:
        """A token for ``POST /tools/{tool}`` of this page session, valid ``ttl_secs``."""
        return self._sign().mint(TOOLS_PURPOSE, f"{session.session_id} {session.origin}", ttl_secs)

    def check(self, token: str | None, origin: str | None, purpose: str = PAGE_PURPOSE) -> PageSession:
        """The session a request's ``token`` names, if valid now and issued to the request's own allowed
        ``origin``; else ``AccessRefused`` saying why."""
        allowed = self._origin(origin)
        if not token:
            raise AccessRefused("no session token (ask POST token first)")
        signer = self._sign()
        try:
            session_id, _, issued_to = signer.subject(token, purpose).partition(" ")
        except TokenError as problem:
            raise AccessRefused(f"session token refused: {problem}") from None
        if issued_to != allowed:
            raise AccessRefused("session token refused: it was issued to another origin")
        return PageSession(session_id, allowed)


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    value = headers.get("authorization", "")
    return value[7:].strip() or None if value[:7].lower() == "bearer " else None


def subprotocol_token(offered: Iterable[str]) -> str | None:
    """The token a page offered as the ``token.<token>`` WebSocket subprotocol, if any."""
    for protocol in offered:
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol.removeprefix(TOKEN_SUBPROTOCOL_PREFIX)
    return None
