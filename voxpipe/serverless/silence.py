"""Silence on the Lambda relay: re-prompts and the silence hang-up, with no process waiting on a timer.

On the server a call's pipeline owns an idle timer. A Lambda cannot sit idle waiting for silence, and
ConversationRelay sends no event when Twilio has finished speaking or while the caller is quiet, so the timer
is a delayed SQS message (the stack's standard queue ``$VOXPIPE_SILENCE_QUEUE_URL``, whose event source is
this module's ``handler``):

- When the relay has sent a reply whole (or the greeting, or a re-prompt), it *arms* a check: it writes a new
  ``silence`` marker (the check's id and how many re-prompts were said) into the conversation, in the same
  conditional write that stores the reply, then sends a message due when the reply has been spoken
  (``spoken_secs``: an estimate at ``WORDS_PER_SEC``, since Twilio says nothing of playback) plus
  ``reprompt_after_secs`` (``hangup_after_secs`` after the last re-prompt).
- Anything from the caller (a prompt, a key, an interrupt) replaces or clears the marker. A reply being
  generated (a running tool included) holds the timer too: the check is skipped while any reply turn is live.
- SQS delays are whole seconds up to 900 and its consumers poll, so the message is delayed to ``LEAD_SECS``
  before it is due and the handler sleeps the rest; a check due further off is sent on again.
- When a check fires and its marker is still the conversation's, the next re-prompt is said (a ``text`` with
  ``last: true``, stored as the bot's words) and the next check is armed; after the last one the goodbye is
  said and the session ends (``end`` with ``handoffData`` reason ``caller_silent``, the ``<Connect action>``
  hangs up; the conversation's metadata keeps ``end_reason: caller_silent``).

Messages are delivered at least once: a check whose marker is gone (answered, or already carried out) does
nothing, so a redelivered one never speaks twice.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from voxpipe.aws import aws_client
from voxpipe.aws.conversations import Conversation
from voxpipe.serverless import (
    SILENCE_QUEUE_ENV,
    ConnectionGone,
    Connections,
    HandlerConfig,
    SilenceSpec,
    handler_config,
)
from voxpipe.serverless.redacting import conversations, redacting_logs
from voxpipe.serverless.relay_turns import SILENCE_MARKER as MARKER
from voxpipe.serverless.relay_turns import note_events
from voxpipe.telephony import conversation_relay as protocol

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

#: Speaking rate assumed for the time Twilio takes to say a text (about 150 words a minute).
WORDS_PER_SEC = 2.5
#: SQS's longest message delay (seconds).
MAX_DELAY_SECS = 900
#: A check reaches its handler this long before it is due (covers the event source's polling).
LEAD_SECS = 2
#: The ``end_reason`` of a call the relay hung up on for silence (the server's record says the same).
CALLER_SILENT = "caller_silent"


@dataclass(frozen=True)
class Check:
    """One armed silence check, as the SQS message carries it (``due_ms``: epoch milliseconds)."""

    call_id: str
    connection_id: str
    endpoint: str
    check: str
    due_ms: int


def spoken_secs(text: str) -> float:
    """About how long Twilio takes to say ``text``."""
    return len(text.split()) / WORDS_PER_SEC


def arm(conversation: Conversation, spec: SilenceSpec, check: str, count: int, said: str) -> float:
    """Write a new marker into ``conversation``; the seconds from now until its check is due."""
    conversation.metadata[MARKER] = {"check": check, "count": count}
    wait = spec.reprompt_after_secs if count < len(spec.reprompts) else spec.hangup_after_secs
    return spoken_secs(said) + wait


def clear(conversation: Conversation) -> None:
    """The caller did something: no check armed before now may act."""
    conversation.metadata.pop(MARKER, None)


def send(config: HandlerConfig, check: Check) -> None:
    """Queue ``check``, delayed to ``LEAD_SECS`` before it is due (at most SQS's 900 s)."""
    remaining = (check.due_ms - time.time() * 1000) / 1000
    delay = max(0, min(MAX_DELAY_SECS, math.floor(remaining) - LEAD_SECS))
    client = aws_client("sqs")
    client.send_message(
        QueueUrl=config.setting(SILENCE_QUEUE_ENV), MessageBody=json.dumps(asdict(check)), DelaySeconds=delay
    )


def send_safely(config: HandlerConfig, check: Check) -> None:
    """``send``; a failure is logged (the call goes on without its silence check), never raised into a reply."""
    try:
        send(config, check)
    except Exception:
        logger.exception("call %s: the silence check could not be queued", check.call_id)


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point of the silence queue's event source: one check per record."""
    config = handler_config()
    failed = []
    for record in event.get("Records") or []:
        try:
            fire(config, Check(**json.loads(record["body"])))
        except Exception:
            logger.exception("silence check %s failed", record.get("messageId"))
            failed.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failed}  # only the failed records come back (ReportBatchItemFailures)


def fire(config: HandlerConfig, check: Check) -> None:
    """Carry out a check when it is due: the next re-prompt, or the goodbye and the end of the session."""
    spec = config.silence
    if spec is None:
        return
    remaining = (check.due_ms - time.time() * 1000) / 1000
    if remaining > MAX_DELAY_SECS:  # further off than one SQS delay: on again
        send(config, check)
        return
    table, redactor = conversations(config)
    stored = table.get(check.call_id)  # read ahead: at the due time, one conditional write (if nobody wrote since)
    if table.connection(check.connection_id) is None or stored is None:
        return  # the session is over
    time.sleep(max(0.0, (check.due_ms - time.time() * 1000) / 1000))

    following = f"{check.check}+"

    def speak(conversation: Conversation) -> tuple[str, float | None] | None:
        """The words to say, and the seconds until the next check (``None``: the goodbye, nothing follows)."""
        marker = conversation.metadata.get(MARKER) or {}
        if marker.get("check") != check.check or conversation.live:
            return None  # the caller did something since, or a reply is being generated
        count = int(marker.get("count", 0))
        if count >= len(spec.reprompts):
            clear(conversation)
            conversation.metadata["end_reason"] = CALLER_SILENT
            note_events(conversation, [{"kind": "silence_hangup"}], check.due_ms)
            conversation.messages.append({"role": "assistant", "content": spec.goodbye})
            return spec.goodbye, None
        text = spec.reprompts[count]
        note_events(conversation, [{"kind": "reprompt", "text": text}], check.due_ms)
        conversation.messages.append({"role": "assistant", "content": text})
        return text, arm(conversation, spec, following, count + 1, text)

    with redacting_logs(redactor):
        _, spoken = table.mutate(check.call_id, speak, known=stored)
        if spoken is None:
            return
        text, after = spoken
        logger.info("call %s: silent; %s", check.call_id, "re-prompt" if after is not None else "goodbye")
        connections = Connections(check.endpoint)
        try:
            connections.post_json(check.connection_id, protocol.text_token(text, last=True))
            if after is None:
                connections.post_json(check.connection_id, protocol.end_session({"reason": CALLER_SILENT}))
                return
        except ConnectionGone:
            return
        due = int(time.time() * 1000 + after * 1000)
        send_safely(config, Check(check.call_id, check.connection_id, check.endpoint, following, due))
