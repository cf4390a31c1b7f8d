"""Serverless voxpipe: ConversationRelay on Lambda, and the API Gateway WebSocket audio bridge.

Both designs are built from one deployment file by ``voxpipe deploy sam`` (``sam.py``):

- ConversationRelay on Lambda: Twilio does speech-to-text and text-to-speech; ``twiml.handler`` answers the
  voice webhook, ``relay.handler`` serves the WebSocket routes and streams the LLM's text (``text_llm.py``)
  back through ``@connections``; the conversation lives in DynamoDB (``voxpipe.aws.conversations``).
- The audio bridge: browser or phone audio over API Gateway WebSocket -> ``worker.handler`` (a Lambda)
  -> SQS -> ``python -m voxpipe.serverless.worker CONFIG``, which runs the deployment's pipecat pipeline
  per connection and posts audio back through ``@connections`` (``apigw_transport.py``).

The Lambda handlers import neither pipecat nor pydantic, so a cold start stays short: ``voxpipe deploy sam``
validates the deployment once and writes the *handler configuration* (JSON) that the handlers read. Every
string the YAML wrote as ``${VAR}`` stays a template in that file and is filled from the Lambda's
environment at start, so no secret is ever written to disk.

This module holds what the handlers share: that configuration and ``@connections`` (botocore clients and the
conversation table are ``voxpipe.aws``'s, which ``voxpipe serve``'s DynamoDB session store uses too).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.aws import aws_client, error_code
from voxpipe.envvars import names_in, substitute

#: Environment variables the SAM template sets (tests set them too).
CONFIG_ENV = "VOXPIPE_HANDLER_CONFIG"  # path of the handler configuration (JSON)
TABLE_ENV = "VOXPIPE_TABLE"  # DynamoDB table of conversations and connections
QUEUE_ENV = "VOXPIPE_QUEUE_URL"  # SQS queue of the audio bridge
RELAY_URL_ENV = "VOXPIPE_RELAY_URL"  # public wss:// URL of the ConversationRelay WebSocket API (signed by Twilio)
BRIDGE_URL_ENV = "VOXPIPE_BRIDGE_URL"  # public wss:// URL of the audio bridge's WebSocket API
HTTP_URL_ENV = "VOXPIPE_HTTP_URL"  # public https:// base URL of the TwiML webhook API
CONNECTIONS_URL_ENV = "VOXPIPE_CONNECTIONS_URL"  # @connections endpoint override (custom domain, local shim)
SILENCE_QUEUE_ENV = "VOXPIPE_SILENCE_QUEUE_URL"  # SQS standard queue of the relay's delayed silence checks
TWILIO_API_URL_ENV = "VOXPIPE_TWILIO_API_URL"  # Twilio REST API base URL override (a local emulator)
CONFIG_FILE = "voxpipe-handler.json"
CONFIG_FORMAT = 1


class HandlerConfigError(RuntimeError):
    """The handler configuration is missing, malformed, or names an unset environment variable."""


def _unset(name: str) -> str:
    raise HandlerConfigError(f"environment variable {name} is not set")


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """``value`` with every ``${VAR}`` in its strings filled from ``environ`` (lists and dicts walked)."""
    if isinstance(value, str):
        return substitute(value, environ, _unset)[0]
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    return value


def referenced_variables(value: Any) -> list[str]:
    """The environment variables ``value``'s templates read, in order of first use."""
    names: dict[str, None] = {}
    for text in _strings(value):
        for name in names_in(text):
            names.setdefault(name)
    return list(names)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    return []


@dataclass(frozen=True)
class LLMSpec:
    """One provider of the deployment's ``llm`` chain, options validated and defaults filled at build time."""

    provider: str
    model: str | None
    options: dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    """One tool of ``agent.tools``, with the kind's description, schema and effect filled in."""

    name: str
    kind: str
    description: str
    parameters: dict[str, Any]
    timeout_secs: float
    options: dict[str, Any]
    effect: str | None = None
    builder: str = ""  # ``module:function`` of the kind's handler builder (``voxpipe.tools.handlers``...)
    filler: str | None = None  # said if the tool has not answered after ``filler_after_secs`` (defaults filled in)
    filler_after_secs: float | None = None
    sensitive: bool = False  # the arguments reach the tool but are never stored


@dataclass(frozen=True)
class RedactSpec:
    """``redact:`` as the handlers read it (``voxpipe.redaction.RedactSettings``)."""

    entities: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    before_llm: bool = False


@dataclass(frozen=True)
class SilenceSpec:
    """``silence:`` as the relay reads it (``voxpipe.config.call_flow.SilenceConfig``)."""

    reprompt_after_secs: float
    reprompts: tuple[str, ...]
    hangup_after_secs: float
    goodbye: str


@dataclass(frozen=True)
class HandlerConfig:
    """What the Lambda handlers need of a deployment (see ``deploy_config.handler_config`` for how it is made)."""

    name: str
    instructions: str
    greeting: str | None
    llm: tuple[LLMSpec, ...]
    tools: tuple[ToolSpec, ...]
    twilio_auth_token: str | None
    validate_signatures: bool
    conversation_relay: dict[str, Any]
    allowed_origins: tuple[str, ...]
    ttl_secs: int
    failure_say: str = ""  # on_failure: what the caller is told when no LLM of the chain can answer
    failure_transfer_to: str | None = None  # on_failure: then transfer here (else hang up)
    redact: RedactSpec | None = None  # personal data masked in what the relay stores and logs
    silence: SilenceSpec | None = None  # re-prompts and the silence hang-up (``voxpipe.serverless.silence``)
    twilio_account_sid: str | None = None  # with the auth token: the REST API (warm transfers)
    session_token_secs: int = 600  # transport.browser.session_token_secs: a bridge page token's lifetime
    twilio_recording: bool = False  # recording.enabled: Twilio records each relay call (``recordings.py``)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], environ: Mapping[str, str]) -> HandlerConfig:
        """Build from the JSON ``deploy_config.handler_config`` wrote, filling ``${VAR}`` templates from ``environ``."""
        if data.get("format") != CONFIG_FORMAT:
            raise HandlerConfigError(f"handler configuration format {data.get('format')!r} is not {CONFIG_FORMAT}")
        resolved = interpolate(dict(data), environ)
        agent, twilio = resolved["agent"], resolved["twilio"]
        validate_signatures = twilio.get("validate_signatures", True)
        if not validate_signatures and not twilio.get("insecure", False):
            raise HandlerConfigError(
                f"{resolved['name']}: unsigned Twilio requests (validate_signatures: false) need insecure: true"
            )
        if not validate_signatures:  # logged at every cold start, as `voxpipe serve` logs it at every start
            logging.getLogger(__name__).warning(
                "%s: INSECURE: Twilio signatures are not checked; anyone who knows the URLs can place calls",
                resolved["name"],
            )
        return cls(
            name=resolved["name"],
            instructions=agent["instructions"],
            greeting=agent.get("greeting"),
            llm=tuple(LLMSpec(s["provider"], s.get("model"), s.get("options", {})) for s in resolved["llm"]),
            tools=tuple(ToolSpec(**tool) for tool in agent.get("tools", [])),
            twilio_auth_token=twilio.get("auth_token"),
            validate_signatures=validate_signatures,
            conversation_relay=resolved.get("conversation_relay", {}),
            allowed_origins=tuple(resolved.get("allowed_origins", [])),
            ttl_secs=int(resolved["ttl_secs"]),
            failure_say=str(resolved["on_failure"]["say"]),
            failure_transfer_to=resolved["on_failure"].get("transfer_to"),
            redact=_spec(RedactSpec, resolved.get("redact")),
            silence=_spec(SilenceSpec, resolved.get("silence")),
            twilio_account_sid=twilio.get("account_sid"),
            session_token_secs=int(resolved.get("session_token_secs", 600)),
            twilio_recording=bool(resolved.get("twilio_recording", False)),
            environ=environ,
        )

    def setting(self, name: str) -> str:
        """A deployment-independent setting the SAM template puts in the environment (table, queue, URLs)."""
        value = self.environ.get(name)
        if not value:
            raise HandlerConfigError(f"environment variable {name} is not set")
        return value


def _spec(kind: Any, data: Mapping[str, Any] | None) -> Any:
    """A frozen spec from its JSON object (lists as tuples), or ``None`` for a section that is off."""
    if data is None:
        return None
    return kind(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def config_path(environ: Mapping[str, str]) -> Path:
    """Where the handler configuration is: ``$VOXPIPE_HANDLER_CONFIG``, else beside the Lambda's code."""
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    return Path(environ.get("LAMBDA_TASK_ROOT", ".")) / CONFIG_FILE


@functools.cache
def handler_config() -> HandlerConfig:
    """The process's handler configuration, read once per Lambda container (at its first event)."""
    path = config_path(os.environ)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HandlerConfigError(f"cannot read the handler configuration {path}: {exc}") from None
    return HandlerConfig.from_json(data, dict(os.environ))


# ------------------------------------------------------------------------------------------------ @connections


class ConnectionGone(Exception):
    """``@connections`` answered 410 GoneException: the client hung up; stop talking to it."""


def connections_endpoint(request_context: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> str:
    """The ``@connections`` endpoint of the API that sent an event: ``https://{domainName}/{stage}``.

    ``$VOXPIPE_CONNECTIONS_URL`` overrides it (a custom domain's mapping, or a local emulator).
    """
    return environ.get(CONNECTIONS_URL_ENV) or f"https://{request_context['domainName']}/{request_context['stage']}"


class Connections:
    """Posts to WebSocket clients through one API's ``@connections`` endpoint."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._client = aws_client("apigatewaymanagementapi", endpoint, retries={"max_attempts": 2})

    def post(self, connection_id: str, data: str | bytes) -> None:
        """Send one message (one WebSocket frame); raises ``ConnectionGone`` if the client is gone."""
        payload = data.encode() if isinstance(data, str) else data
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=payload)
        except Exception as exc:
            if error_code(exc) == "GoneException":
                raise ConnectionGone(connection_id) from None
            raise

    def post_json(self, connection_id: str, message: Mapping[str, Any]) -> None:
        """Send one JSON message."""
        self.post(connection_id, json.dumps(message, separators=(",", ":"), ensure_ascii=False))

    def close(self, connection_id: str) -> None:
        """Disconnect a client (API Gateway then invokes ``$disconnect``); a gone client is not an error."""
        try:
            self._client.delete_connection(ConnectionId=connection_id)
        except Exception as exc:
            if error_code(exc) != "GoneException":
                raise


# ------------------------------------------------------------------------------------------------ events


def event_headers(event: Mapping[str, Any]) -> dict[str, str]:
    """An event's headers with lower-case names (API Gateway keeps the client's case)."""
    return {name.lower(): value for name, value in (event.get("headers") or {}).items()}


def event_body(event: Mapping[str, Any]) -> str | bytes:
    """An event's body: text, or bytes when API Gateway base64-encoded it (a binary frame or form)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        import base64

        return base64.b64decode(body)
    return body


def response(status: int, body: str = "", content_type: str | None = None) -> dict[str, Any]:
    """A Lambda proxy response (for ``$connect`` any non-2xx status rejects the connection)."""
    out: dict[str, Any] = {"statusCode": status, "body": body}
    if content_type:
        out["headers"] = {"Content-Type": content_type}
    return out
