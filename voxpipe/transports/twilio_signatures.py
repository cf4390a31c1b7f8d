"""``X-Twilio-Signature`` checks for webhooks and WebSocket handshakes.

Twilio signs the URL it called (plus, for a form POST, the sorted form parameters) with the account's auth
token. Behind a proxy or a tunnel the app sees another host and scheme, so the URL is rebuilt from the
deployment's ``transport.public_url``, never from the request's ``Host`` header. WebSocket handshakes
(Media Streams and ConversationRelay) are signed over the exact ``wss://`` URL with no parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

from loguru import logger
from twilio.request_validator import RequestValidator

from voxpipe.config.models import Deployment


class PublicUrlMissing(Exception):
    """The deployment has no ``transport.public_url``, so no Twilio URL can be built or checked."""


def public_url(deployment: Deployment, path: str, *, websocket: bool = False, query: str = "") -> str:
    """The URL Twilio was told to call for ``path`` (relative to the deployment's prefix)."""
    base = deployment.transport.public_url
    if base is None:
        raise PublicUrlMissing(f"deployment {deployment.name}: transport.public_url is required to serve Twilio")
    url = f"{base.rstrip('/')}/{deployment.name}/{path.lstrip('/')}"
    if websocket:
        url = "wss://" + url.removeprefix("https://")
    return f"{url}?{query}" if query else url


class TwilioSignatures:
    """Validates requests for one deployment, or (explicitly configured) lets everything through.

    Validation is on unless the YAML turns it off. On, but without an auth token or a public URL, every
    Twilio request is refused (and the reason logged at start): a browser-only deployment still serves.
    """

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        twilio = deployment.transport.twilio
        self.enabled = twilio.validate_signatures
        self._validator: RequestValidator | None = None
        if not self.enabled:
            logger.warning(
                f"deployment {deployment.name}: Twilio signature validation is OFF "
                "(transport.twilio.validate_signatures: false); anyone who knows the URLs can place calls"
            )
        elif twilio.auth_token is None or not twilio.auth_token.get_secret_value():
            logger.warning(
                f"deployment {deployment.name}: Twilio requests will be refused (403): validating signatures "
                "needs transport.twilio.auth_token (write ${TWILIO_AUTH_TOKEN}) or validate_signatures: false"
            )
        elif deployment.transport.public_url is None:
            logger.warning(
                f"deployment {deployment.name}: Twilio requests will be refused (403): validating signatures "
                "needs transport.public_url, the https base URL Twilio calls"
            )
        else:
            self._validator = RequestValidator(twilio.auth_token.get_secret_value())

    def valid(
        self,
        path: str,
        signature: str | None,
        *,
        websocket: bool = False,
        query: str = "",
        params: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether ``signature`` signs the public URL of ``path`` (and ``params`` for a form POST)."""
        if not self.enabled:
            return True
        if self._validator is None or not signature:
            return False
        url = public_url(self.deployment, path, websocket=websocket, query=query)
        return bool(self._validator.validate(url, dict(params or {}), signature))
