"""Twilio's recording of a Lambda relay call, linked to the call's stored conversation.

Twilio speaks a ConversationRelay call, so the recording is Twilio's own. With ``recording.enabled`` (the
handler configuration's ``twilio_recording``) the TwiML function's relay TwiML starts with ``<Start><Recording
channels="dual" recordingStatusCallback=".../twiml/recording-status" recordingStatusCallbackEvent="completed"/>``,
and once the file is ready Twilio posts that route (signed, checked like the other webhooks): ``CallSid``,
``RecordingSid``, ``RecordingUrl``, ``RecordingStatus`` (``completed``; ``absent``: too short or silent, no
file), ``RecordingDuration``, ``ErrorCode``... The Lambda relay keeps each call in DynamoDB under its CallSid
(``voxpipe.aws.conversations``), from the relay's ``setup`` until the conversation's TTL, so the callback (which
comes after the call ended) finds it and puts the URL in its metadata (``recording``), in one conditional
write beside any other writer. A CallSid with no relay conversation is logged and nothing is written.
Only the URL is kept: fetching the audio needs the Twilio account's credentials (docs/serverless.md).
"""

from __future__ import annotations

import logging

from voxpipe.aws.conversations import Conversation
from voxpipe.serverless import HandlerConfig
from voxpipe.serverless.redacting import conversations
from voxpipe.serverless.relay_turns import RECORDING
from voxpipe.telephony.recording_status import RecordingStatus

logger = logging.getLogger(__name__)

STATUS_PATH = "/twiml/recording-status"


class _NotARelayCall(Exception):
    """The CallSid has no stored relay conversation: nothing is written."""


def recording_status(config: HandlerConfig, form: dict[str, str]) -> None:
    """Twilio's recording status callback: a completed recording's URL onto its call's conversation."""
    recording = RecordingStatus.of(form)
    if not recording.linkable:
        logger.warning("%s", recording.why_not_linked())
        return

    def link(conversation: Conversation) -> None:
        if conversation.metadata.get("transport") != "conversation_relay":  # none stored (or not a relay's)
            raise _NotARelayCall
        conversation.metadata[RECORDING] = recording.url

    table, _ = conversations(config)
    try:
        table.mutate(recording.call_sid, link)
    except _NotARelayCall:
        logger.warning(
            "Twilio's recording %s is of call %s, which has no relay conversation: ignored",
            recording.recording_sid,
            recording.call_sid,
        )
        return
    logger.info(
        "call %s: Twilio's recording %s (%ss) linked", recording.call_sid, recording.recording_sid, recording.duration
    )
