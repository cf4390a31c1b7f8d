"""``voxpipe.serverless.twiml.handler``: the voice webhook (API Gateway HTTP API) that starts ConversationRelay.

``POST /twiml`` (the number's "A call comes in" webhook) answers ``<Connect action=".../twiml/action">
<ConversationRelay url="wss://..." .../></Connect>``, the attributes taken from the deployment's
``transport.conversation_relay`` and ``agent.greeting``. When the session ends, Twilio posts to
``/twiml/action``: a ``transfer`` handoff (see ``relay.py``) dials the number, anything else hangs up.

Both requests are signed by Twilio over the URL it called and the form parameters: ``https://`` + the
request's domain + path, or ``$VOXPIPE_HTTP_URL`` + path when a proxy (CloudFront...) stands in front.
Unsigned or mis-signed requests get 403 unless the deployment turned validation off.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from voxpipe.serverless import (
    HTTP_URL_ENV,
    RELAY_URL_ENV,
    HandlerConfig,
    event_body,
    event_headers,
    handler_config,
    response,
)

logger = logging.getLogger(__name__)

ACTION_PATH = "/twiml/action"


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (HTTP API payload format 2.0)."""
    config = handler_config()
    body = event_body(event)
    params = dict(parse_qsl(body.decode() if isinstance(body, bytes) else body, keep_blank_values=True))
    path = event.get("rawPath") or "/twiml"
    base = os.environ.get(HTTP_URL_ENV) or f"https://{event['requestContext']['domainName']}"
    base = base.rstrip("/")
    if not _signed(config, base + path, params, event_headers(event).get("x-twilio-signature")):
        return response(403, "invalid X-Twilio-Signature")
    if path.endswith(ACTION_PATH):
        return response(200, action_twiml(params.get("HandoffData")), "text/xml")
    return response(200, relay_twiml(config, base + ACTION_PATH), "text/xml")


def _signed(config: HandlerConfig, url: str, params: dict[str, str], signature: str | None) -> bool:
    if not config.validate_signatures:
        return True
    if not signature or not config.twilio_auth_token:
        return False
    from twilio.request_validator import RequestValidator

    return bool(RequestValidator(config.twilio_auth_token).validate(url, params, signature))


def relay_twiml(config: HandlerConfig, action_url: str) -> str:
    """``<Connect><ConversationRelay/></Connect>`` pointing Twilio at the relay WebSocket API."""
    from twilio.twiml.voice_response import Connect, VoiceResponse

    relay = config.conversation_relay
    attributes = {
        "url": config.setting(RELAY_URL_ENV),
        "welcome_greeting": config.greeting,
        "language": relay.get("language"),
        "tts_provider": relay.get("tts_provider"),
        "voice": relay.get("voice"),
        "transcription_provider": relay.get("transcription_provider"),
        "interruptible": relay.get("interruptible"),
        "dtmf_detection": relay.get("dtmf_detection"),
    }
    connect = Connect(action=action_url)
    connect.conversation_relay(**{name: value for name, value in attributes.items() if value is not None})
    return str(VoiceResponse().append(connect))


def action_twiml(handoff_data: str | None) -> str:
    """What to do once the session ended: dial a transfer's number, or hang up."""
    from twilio.twiml.voice_response import VoiceResponse

    twiml = VoiceResponse()
    try:
        handoff = json.loads(handoff_data) if handoff_data else {}
    except ValueError:
        logger.warning("unreadable HandoffData: %.200s", handoff_data)
        handoff = {}
    if isinstance(handoff, dict) and handoff.get("reason") == "transfer" and handoff.get("to"):
        twiml.dial(str(handoff["to"]))
    else:
        twiml.hangup()
    return str(twiml)
