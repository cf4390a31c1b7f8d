"""Short-lived signed tokens: proof that the server itself handed out a value, for one purpose and one subject.

Used to bind a call's socket to what started it (the signed webhook puts a token for the CallSid into the
TwiML ``<Parameter>``; ``start`` / ``setup`` must carry it back) and for browser sessions (a token bound to
the page's origin). A token is ``payload.signature``, both base64url: the payload is JSON
``{"p": purpose, "s": subject, "e": expiry (unix seconds), "n": a nonce}`` and the signature HMAC-SHA256 of the encoded
payload, keyed by a server secret read from the environment (``VOXPIPE_SIGNING_SECRET``, at least 32 bytes;
every server of a deployment shares it). ``purpose`` keeps the namespaces apart: a call-binding token is no
browser session token. Nothing secret is inside a token; it only cannot be forged, changed or kept past its
expiry. Standard library only (the Lambda handlers use it too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

SECRET_VARIABLE = "VOXPIPE_SIGNING_SECRET"  # noqa: S105 — the variable's name, not its value
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 2048


class TokenError(ValueError):
    """A token was refused; the message says why (for the log, not for the client)."""


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Mints and verifies tokens with one server secret."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time):
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the signing secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._clock = clock

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Signer:
        """The signer keyed by ``VOXPIPE_SIGNING_SECRET``; ``ValueError`` naming the variable if unset or short."""
        value = (os.environ if environ is None else environ).get(SECRET_VARIABLE, "")
        if not value:
            raise ValueError(
                f"{SECRET_VARIABLE} is not set (generate one: python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))')"
            )
        return cls(value.encode("utf-8"))

    def _sign(self, payload: str) -> str:
        return _encode(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def mint(self, purpose: str, subject: str, ttl_secs: float) -> str:
        """A token for ``subject`` (a CallSid, an origin) and ``purpose``, valid ``ttl_secs`` from now."""
        if ttl_secs <= 0:
            raise ValueError("ttl_secs must be positive")
        # The nonce makes every token unique, so one spent (``security.spent_tokens``) is never another's twin.
        claims = {"p": purpose, "s": subject, "e": int(self._clock() + ttl_secs), "n": secrets.token_urlsafe(6)}
        payload = _encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: Any, purpose: str, subject: str) -> None:
        """Accept ``token`` for ``purpose`` and ``subject`` now, or raise ``TokenError`` saying why."""
        if not hmac.compare_digest(self.subject(token, purpose).encode(), subject.encode()):
            raise TokenError("token is for another subject")

    def subject(self, token: Any, purpose: str) -> str:
        """The subject of a ``token`` valid for ``purpose`` now (a browser session's token names its own
        session), or ``TokenError`` saying why not."""
        well_formed = isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS and token.isascii()
        if not well_formed or token.count(".") != 1:
            raise TokenError("malformed token")
        payload, signature = token.split(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            raise TokenError("bad signature")
        try:
            claims = json.loads(_decode(payload))
        except (ValueError, binascii.Error):
            raise TokenError("malformed token") from None
        if not isinstance(claims, dict) or claims.get("p") != purpose:
            raise TokenError(f"not a {purpose} token")
        if not isinstance(claims.get("s"), str):
            raise TokenError("malformed token")
        if not isinstance(claims.get("e"), int) or claims["e"] <= self._clock():
            raise TokenError("token expired")
        return str(claims["s"])
