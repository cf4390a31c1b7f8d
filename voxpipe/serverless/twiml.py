"""``voxpipe.serverless.twiml.handler``: the voice webhook (API Gateway HTTP API) that starts ConversationRelay.

``POST /twiml`` (the number's "A call comes in" webhook) answers ``<Connect action=".../twiml/action">
<ConversationRelay url="wss://..." .../></Connect>``, the attributes taken from the deployment's
``transport.conversation_relay`` and ``agent.greeting``. When the session ends, Twilio posts to
``/twiml/action``: a ``transfer`` handoff (see ``relay.py``) dials the number, a warm one puts the caller on
hold and rings the person with the call's summary (``transfer.py``, which also serves the dial leg's
``/twiml/transfer-status``), anything else hangs up. With ``recording.enabled`` the relay TwiML asks Twilio to
record the call, and Twilio posts ``/twiml/recording-status`` once the recording is ready (``recordings.py``).

Every request is signed by Twilio over the URL it called and the form parameters: ``https://`` + the
request's domain + path (+ query), or ``$VOXPIPE_HTTP_URL`` + path when a proxy (CloudFront...) stands in front.
Unsigned or mis-signed requests get 403 unless the deployment turned validation off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from voxpipe.security.call_binding import CallBinding
from voxpipe.security.limits import MAX_WEBHOOK_BYTES
from voxpipe.serverless import (
    HTTP_URL_ENV,
    RELAY_URL_ENV,
    HandlerConfig,
    event_body,
    event_headers,
    handler_config,
    recordings,
    response,
    transfer,
)
from voxpipe.telephony import conversation_relay, twiml

logger = logging.getLogger(__name__)

ACTION_PATH = "/twiml/action"


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (HTTP API payload format 2.0)."""
    config = handler_config()
    body = event_body(event)
    if len(body) > MAX_WEBHOOK_BYTES:  # a Twilio form is a few kilobytes; nothing larger is parsed
        return response(413, "request body too large")
    params = dict(parse_qsl(body.decode() if isinstance(body, bytes) else body, keep_blank_values=True))
    path, query = event.get("rawPath") or "/twiml", event.get("rawQueryString") or ""
    base = os.environ.get(HTTP_URL_ENV) or f"https://{event['requestContext']['domainName']}"
    base = base.rstrip("/")
    url = base + path + (f"?{query}" if query else "")
    if not _signed(config, url, params, event_headers(event).get("x-twilio-signature")):
        return response(403, "invalid X-Twilio-Signature")
    if path.endswith(transfer.STATUS_PATH):
        transfer.status(config, base + ACTION_PATH, dict(parse_qsl(query)), params)
        return response(204)
    if path.endswith(ACTION_PATH):
        return response(200, action_twiml(config, base, params), "text/xml")
    if path.endswith(recordings.STATUS_PATH):
        recordings.recording_status(config, params)
        return response(204)
    binding = CallBinding.for_deployment("conversation_relay", config.validate_signatures)
    token = binding.parameters(params.get("CallSid", ""))  # the setup must bring it back
    recording_status = base + recordings.STATUS_PATH if config.twilio_recording else None
    return response(200, relay_twiml(config, base + ACTION_PATH, token, recording_status=recording_status), "text/xml")


def _signed(config: HandlerConfig, url: str, params: dict[str, str], signature: str | None) -> bool:
    if not config.validate_signatures:
        return True
    if not signature or not config.twilio_auth_token:
        return False
    from twilio.request_validator import RequestValidator

    return bool(RequestValidator(config.twilio_auth_token).validate(url, params, signature))


def relay_twiml(
    config: HandlerConfig,
    action_url: str,
    parameters: dict[str, str] | None = None,
    *,
    resumed: bool = False,
    recording_status: str | None = None,
) -> str:
    """``<Connect><ConversationRelay/></Connect>`` pointing Twilio at the relay WebSocket API, with
    ``parameters`` (the token binding the session to the call) as ``<Parameter>``s; a ``resumed``
    conversation (a caller back from a warm transfer) gets no second greeting. ``recording_status``: Twilio
    records the call first (``<Start><Recording>``) and reports the recording there (``recordings.py``)."""
    relay = config.conversation_relay
    attributes = {
        "welcomeGreeting": None if resumed else config.greeting,
        "language": relay.get("language"),
        "ttsProvider": relay.get("tts_provider"),
        "voice": relay.get("voice"),
        "transcriptionProvider": relay.get("transcription_provider"),
        "interruptible": relay.get("interruptible"),
        "dtmfDetection": relay.get("dtmf_detection"),
    }
    return twiml.conversation_relay(
        config.setting(RELAY_URL_ENV), action_url, attributes, parameters, recording_status=recording_status
    )


def action_twiml(config: HandlerConfig, base: str, params: dict[str, str]) -> str:
    """What to do once the session ended: hold and ring for a warm transfer, dial a cold one, or hang up."""
    handoff_data, call_sid = params.get("HandoffData"), params.get("CallSid", "")
    warm = conversation_relay.warm_handoff(handoff_data)
    if warm is not None:
        hold = transfer.hold(config, base, call_sid, params.get("To", ""), warm)
        # Twilio refused the dial leg: the caller stays with the agent, told so, as when nobody answers.
        return hold or transfer.come_back(
            config, base + ACTION_PATH, call_sid, "failed", 0.0, str(warm.get("unanswered") or "")
        )
    target = conversation_relay.handoff_target(handoff_data)
    return twiml.dial(target) if target else twiml.hangup()
