"""Warm transfers on Lambda: the relay hands the call off with a summary, the TwiML function rings and brings back.

1. The relay (``relay.py``): the ``transfer`` tool of a ``mode: warm`` tool ends the session with ``end``, its
   ``handoffData`` carrying ``mode: warm``, the target, the LLM's ``summary`` of the call (``summarise``),
   ``ring_timeout_secs``, ``hold_audio`` and the ``unanswered`` line, as the server's relay does.
2. ``POST /twiml/action`` (``twiml.py`` -> ``hold``): places the dial leg through Twilio's REST API (a new call
   that says the summary, then joins the caller's conference) and answers the caller's hold leg (the
   conference, with the hold audio). The dial leg's status callback is ``/twiml/transfer-status`` with the
   call, when it started ringing and the ``unanswered`` line in its query (a Lambda keeps nothing between
   requests; Twilio signs the whole URL, query included).
   The audio bridge's worker places its own dial leg (``TwilioAccount``, ``bridge_route``) with the same
   callback, whose query also carries its stream's parameters (``warm_transfer.status_query``).
3. ``POST /twiml/transfer-status`` (``status``): answered, the transfer is done (logged with its ring time);
   nobody answered (or the line was busy), the caller's call gets new TwiML through the REST API: a
   ConversationRelay session of the same call, with no greeting, a fresh call token and ``<Parameter>``s
   saying what happened (``voxpipe.telephony.warm_transfer.returned``). The relay's ``setup`` resumes the
   conversation (it is keyed by the CallSid) and says the ``unanswered`` line. A bridge caller gets a new
   ``<Stream>`` to the bridge instead (``stream_back``): its worker resumes the conversation the same way.

The steps and TwiML are ``voxpipe.telephony.warm_transfer``'s and ``twiml``'s, shared with the server. The REST
API needs ``transport.twilio.account_sid`` (``voxpipe deploy sam`` refuses a warm transfer without it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voxpipe.security.call_binding import CallBinding
from voxpipe.serverless import BRIDGE_URL_ENV, HTTP_URL_ENV, TWILIO_API_URL_ENV, HandlerConfig, ToolSpec
from voxpipe.telephony import twiml, warm_transfer

if TYPE_CHECKING:
    from voxpipe.transports.twilio_account import TransferRoute

logger = logging.getLogger(__name__)

STATUS_PATH = "/twiml/transfer-status"


def bridge_route(environ: Mapping[str, str]) -> TransferRoute | None:
    """Where the audio bridge's warm transfers report and come back: this stack's ``/twiml/transfer-status``
    (``$VOXPIPE_HTTP_URL``) and the bridge (``$VOXPIPE_BRIDGE_URL``); ``None`` unless both are set."""
    from voxpipe.transports.twilio_account import TransferRoute

    http, bridge = environ.get(HTTP_URL_ENV), environ.get(BRIDGE_URL_ENV)
    return TransferRoute(http.rstrip("/") + STATUS_PATH, bridge) if http and bridge else None


def warm_details(tool: ToolSpec, summary: str | None) -> dict[str, Any]:
    """What a warm ``transfer`` tool's handoff carries besides its target (``tool.options``: ``TransferOptions``)."""
    options = tool.options
    return {
        "ring_timeout_secs": options["ring_timeout_secs"],
        "hold_audio": options.get("hold_audio"),
        "unanswered": options["unanswered"],
        "summary": summary if options.get("summary", True) else None,
    }


def warm_tool(config: HandlerConfig, to: str) -> ToolSpec | None:
    """The ``mode: warm`` transfer tool whose target is ``to``, if the transfer was one."""
    for tool in config.tools:
        if tool.effect == "transfer" and tool.options.get("mode") == "warm" and tool.options.get("to") == to:
            return tool
    return None


def rest_client(config: HandlerConfig) -> Any:
    """Twilio's REST client for the deployment's account (``$VOXPIPE_TWILIO_API_URL`` points it elsewhere)."""
    from twilio.rest import Client

    client = Client(config.twilio_account_sid, config.twilio_auth_token)
    override = config.environ.get(TWILIO_API_URL_ENV)
    if override:
        client.api.base_url = override.rstrip("/")
    return client


def hold(config: HandlerConfig, base: str, call_sid: str, caller_id: str, warm: dict[str, Any]) -> str | None:
    """Ring the person (the dial leg) and return the caller's hold TwiML; ``None`` if Twilio refused the dial leg."""
    query = warm_transfer.status_query(call_sid, warm.get("unanswered") or "")
    leg = warm_transfer.dial_leg(call_sid, str(warm["to"]), caller_id, warm, f"{base}{STATUS_PATH}?{query}")
    try:
        rest_client(config).calls.create(**leg)
    except Exception as exc:
        logger.warning("warm transfer of %s: the call to %s was refused: %s", call_sid, warm["to"], exc)
        return None
    return twiml.hold(warm_transfer.conference(call_sid), warm.get("hold_audio"))


def come_back(config: HandlerConfig, action_url: str, call_sid: str, status: str, ring_secs: float, say: str) -> str:
    """The TwiML that reconnects a caller nobody took to the agent: the same call's relay session, resumed."""
    from voxpipe.serverless.twiml import relay_twiml

    binding = CallBinding.for_deployment("conversation_relay", config.validate_signatures)
    parameters = warm_transfer.returned(status, ring_secs, say) | binding.parameters(call_sid)
    return relay_twiml(config, action_url, parameters, resumed=True)


def stream_back(
    config: HandlerConfig, call_sid: str, status: str, ring_secs: float, say: str, kept: dict[str, str]
) -> str:
    """The TwiML that reconnects an audio-bridge caller nobody took: a new stream of the same call to the bridge
    (its worker resumes the conversation), with the stream's own parameters and a fresh call token."""
    binding = CallBinding.for_deployment("twilio", config.validate_signatures)
    parameters = kept | warm_transfer.returned(status, ring_secs, say) | binding.parameters(call_sid)
    return twiml.stream_call(config.setting(BRIDGE_URL_ENV), None, parameters)


def status(config: HandlerConfig, action_url: str, query: dict[str, str], form: dict[str, str]) -> None:
    """A dial leg's status callback: answered, done; nobody answered, the caller is brought back to the agent."""
    call_sid, state = query.get("call", ""), form.get("CallStatus", "")
    if not call_sid or state not in warm_transfer.FINAL:
        return
    ring_secs = round(max(0.0, time.time() - int(query.get("since") or 0) / 1000), 3)
    logger.info("warm transfer of %s: %s after %gs", call_sid, state, ring_secs)
    if state not in warm_transfer.UNANSWERED:
        return
    say, kept = query.get("say") or "", warm_transfer.kept_parameters(query)
    if kept is None:
        document = come_back(config, action_url, call_sid, state, ring_secs, say)
    else:  # a caller of the audio bridge (its worker placed the dial leg)
        document = stream_back(config, call_sid, state, ring_secs, say, kept)
    try:
        rest_client(config).calls(call_sid).update(twiml=document)
    except Exception as exc:  # the caller may have hung up while on hold
        logger.warning("warm transfer of %s: could not bring the caller back: %s", call_sid, exc)
