"""``voxpipe.serverless.relay.handler``: Twilio ConversationRelay on Lambda, behind an API Gateway WebSocket API.

- ``$connect``: the handshake must carry a valid ``X-Twilio-Signature`` over the relay's public ``wss://`` URL
  (``$VOXPIPE_RELAY_URL``, never the request's host); anything else is refused with 403.
- ``$default``: ``setup`` (carrying the token the TwiML webhook gave its ``callSid``:
  ``voxpipe.security.call_binding``) binds the connection to the call and starts or resumes its
  conversation; a final ``prompt`` and a complete keypad entry stream a reply as ``text`` tokens through
  ``@connections``; ``interrupt`` cuts the reply being spoken to what the caller heard. When no LLM of the
  chain can answer, the deployment's ``on_failure`` text is the last ``text``, then ``end`` hands the call
  off (``handoffData`` reason ``failure``), as on the server. The messages and
  their rules (partial prompts, keypad entries, handoff data) are ``voxpipe.telephony``'s, as on the server.
- ``$disconnect``: forgets the connection and stores a keypad entry still being typed (unanswered: no LLM
  call); the conversation stays until its TTL, so a reconnecting call
  (same ``callSid``) resumes it.

Each message is its own invocation, and invocations of one call run concurrently (an ``interrupt`` arrives
while the ``prompt`` before it is still streaming), so nothing is kept between invocations: the reply in
progress is registered in the conversation's ``live`` turns, and the streaming invocation polls for its cut.
Keys of one keypad entry are invocations of their own too: each adds its digit to the entry pending in the
conversation's metadata and waits out the pause; the entry belongs to the last key, whose invocation answers,
unless a ``prompt`` came first: then the entry is stored before the prompt and answered with it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from voxpipe.aws.conversations import Conversation, ConversationTable, ConversationTooLarge, Message
from voxpipe.security.call_binding import CallBinding, without_token
from voxpipe.security.tokens import TokenError
from voxpipe.serverless import (
    RELAY_URL_ENV,
    TABLE_ENV,
    ConnectionGone,
    Connections,
    HandlerConfig,
    connections_endpoint,
    event_body,
    event_headers,
    handler_config,
    response,
)
from voxpipe.serverless.text_llm import Reply
from voxpipe.telephony import conversation_relay as protocol
from voxpipe.telephony import keypad

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

#: Seconds between two checks, while streaming, of whether the caller interrupted the reply.
INTERRUPT_POLL_SECS = 0.25
#: Tokens are posted together when they arrive faster than this (seconds): fewer API Gateway messages.
COALESCE_SECS = 0.04
#: Seconds a message waits for the ``setup`` of its connection (they are concurrent invocations).
SETUP_WAIT_SECS = 3.0
#: Said when the conversation has grown past what its DynamoDB item can hold (nothing of it was cut).
TOO_LONG = "Sorry, this conversation has grown too long for me to continue. Goodbye."
#: The conversation metadata that holds a keypad entry being typed: its keys as [received ms, turn id, digit].
KEYPAD_ENTRY = "keypad_entry"
#: The conversation metadata that holds when each live reply turn started (ms), so a turn whose invocation
#: died (a Lambda timeout: ``close_turn`` never ran) is forgotten instead of cutting every later reply.
LIVE_SINCE = "live_since"
#: No reply invocation runs longer than Lambda's longest timeout (15 minutes).
LIVE_TURN_MAX_MS = 15 * 60 * 1000


def forget_stale_turns(conversation: Conversation, now_ms: int) -> None:
    """Drop live turns older than any invocation can run (or with no start recorded): their invocation died."""
    since = conversation.metadata.setdefault(LIVE_SINCE, {})
    for turn in list(conversation.live):
        if now_ms - since.get(turn, 0) > LIVE_TURN_MAX_MS:
            logger.warning(
                "reply turn %s of call %s never closed (its invocation died); forgotten", turn, conversation.call_id
            )
            conversation.live.pop(turn)
    for turn in list(since):
        if turn not in conversation.live:
            since.pop(turn)


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point for the three WebSocket routes."""
    config = handler_config()
    route = event["requestContext"]["routeKey"]
    if route == "$connect":
        return _connect(config, event)
    relay = Relay(config, event)
    if route == "$disconnect":
        relay.disconnect()
        return response(200)
    relay.handle(protocol.parse(event_body(event)))
    return response(200)


def _connect(config: HandlerConfig, event: Mapping[str, Any]) -> dict[str, Any]:
    if not config.validate_signatures:
        logger.warning("%s: Twilio signature validation is OFF; accepting an unsigned connection", config.name)
        return response(200)
    signature = event_headers(event).get("x-twilio-signature")
    if not signature or not config.twilio_auth_token:
        return response(403, "missing X-Twilio-Signature" if config.twilio_auth_token else "no auth token configured")
    from twilio.request_validator import RequestValidator

    # A WebSocket handshake is signed over the exact public wss:// URL, with no parameters.
    if not RequestValidator(config.twilio_auth_token).validate(config.setting(RELAY_URL_ENV), {}, signature):
        return response(403, "invalid X-Twilio-Signature")
    return response(200)


class Relay:
    """One ``$default`` invocation: a ConversationRelay message of one connection."""

    def __init__(self, config: HandlerConfig, event: Mapping[str, Any]):
        context = event["requestContext"]
        self.config = config
        self.connection_id: str = context["connectionId"]
        self.turn_id: str = context.get("messageId") or context["requestId"]
        self.received_ms: int = int(context.get("requestTimeEpoch") or time.time() * 1000)
        self.endpoint = connections_endpoint(context)
        self.table = ConversationTable(config.setting(TABLE_ENV), config.ttl_secs)

    def handle(self, message: protocol.Inbound) -> None:
        if isinstance(message, protocol.Setup):
            self.setup(message)
        elif isinstance(message, protocol.Prompt):
            turn = protocol.caller_turn(message)
            if turn:  # a keypad entry still being typed comes first, in order, and is answered with it
                self.answer({"role": "user", "content": turn}, typed_first=True)
        elif isinstance(message, protocol.Dtmf):
            self.press(message.digit)
        elif isinstance(message, protocol.Interrupt):
            self.interrupt(message.heard)
        elif isinstance(message, protocol.RelayError):
            logger.error("ConversationRelay reports an error: %s", message.description)
        else:
            logger.warning("ignored ConversationRelay message (%s): %.200s", message.reason, message.raw)

    def setup(self, setup: protocol.Setup) -> None:
        """Bind the connection to its call; a new conversation starts with the greeting Twilio speaks.

        Only for a verified call: ``setup`` must carry the token the TwiML webhook gave its CallSid
        (``voxpipe.security.call_binding``), and the id must not name another transport's conversation.
        """
        binding = CallBinding.for_deployment("conversation_relay", self.config.validate_signatures)
        try:
            binding.verify(setup.call_sid, setup.custom_parameters)
        except TokenError as problem:
            self._refuse(f"setup for call {setup.call_sid!r} refused: {problem}")
            return
        stored = self.table.get(setup.call_sid)
        if stored is not None and stored.metadata.get("transport") not in (None, "conversation_relay"):
            self._refuse(f"call id {setup.call_sid!r} is a {stored.metadata['transport']} id: refused")
            return
        self.table.bind_connection(self.connection_id, setup.call_sid, endpoint=self.endpoint, client="relay")

        def start(conversation: Conversation) -> None:
            conversation.metadata.update(
                transport="conversation_relay",
                session_id=setup.session_id,
                caller=setup.from_,
                called=setup.to,
                direction=setup.direction,
                custom_parameters=without_token(setup.custom_parameters),
                connection_id=self.connection_id,
            )
            if not conversation.messages and self.config.greeting:
                conversation.messages.append({"role": "assistant", "content": self.config.greeting})

        self.table.mutate(setup.call_sid, start)

    def _refuse(self, reason: str) -> None:
        """Close a connection that may not open a conversation (its later messages find no call)."""
        logger.warning("connection %s: %s; closed", self.connection_id, reason)
        Connections(self.endpoint).close(self.connection_id)

    def _call_id(self) -> str | None:
        """The call of this connection; a message racing its own ``setup`` invocation waits for it a little."""
        deadline = time.monotonic() + SETUP_WAIT_SECS
        while (row := self.table.connection(self.connection_id)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if row is None:
            logger.warning("connection %s sent a message but no setup; ignored", self.connection_id)
        return row["call_id"] if row else None

    def disconnect(self) -> None:
        """The session is over: forget the connection; a keypad entry still pending is stored, unanswered."""
        row = self.table.connection(self.connection_id)
        self.table.drop_connection(self.connection_id)
        if row is not None:
            self.table.mutate(row["call_id"], _store_pending_entry)

    def answer(self, user: Message, *, typed_first: bool = False) -> None:
        """Store the caller's turn (after the pending keypad entry, with ``typed_first``), stream the reply,
        and store what of it the caller heard."""
        call_id = self._call_id()
        if call_id is None:
            return

        def open_turn(conversation: Conversation) -> None:
            forget_stale_turns(conversation, self.received_ms)
            if typed_first:
                _store_pending_entry(conversation)
            conversation.messages.append(user)
            conversation.live[self.turn_id] = None
            conversation.metadata.setdefault(LIVE_SINCE, {})[self.turn_id] = self.received_ms

        try:
            conversation, _ = self.table.mutate(call_id, open_turn)
        except ConversationTooLarge as refused:  # nothing was written; the caller is told, not left in silence
            logger.error("%s; the session ends", refused)
            with contextlib.suppress(ConnectionGone):
                connections = Connections(self.endpoint)
                connections.post_json(self.connection_id, protocol.text_token(TOO_LONG, last=True))
                connections.post_json(self.connection_id, protocol.end_session({"reason": "history_too_large"}))
            return
        reply = Reply(self.config, conversation.messages)
        heard: str | None = ""

        def close_turn(conversation: Conversation) -> None:
            cut = conversation.live.pop(self.turn_id, None)
            (conversation.metadata.get(LIVE_SINCE) or {}).pop(self.turn_id, None)
            conversation.messages += _heard(reply.messages, cut if cut is not None else heard)

        try:
            heard = self._speak(call_id, reply)
        finally:  # even a failed reply closes its turn, or a later interrupt would wait for it
            self.table.mutate(call_id, close_turn, known=conversation)
        if heard is None:
            self._carry_out(reply.effects)

    def press(self, digit: str) -> None:
        """One key: add it to the pending entry; the entry's last key (after the pause, or ``#``) answers it.

        Keys are ordered, and the pause measured, by when API Gateway received them, so a key whose
        invocation started late (a cold container) still lands in its place in the entry.
        """
        try:
            keypad.check(digit)
        except keypad.NotADigit as problem:
            logger.warning("ignored ConversationRelay dtmf: %s", problem)
            return
        call_id = self._call_id()
        if call_id is None:
            return
        key = [self.received_ms, self.turn_id, digit]

        def add(conversation: Conversation) -> bool:
            keys = conversation.metadata.get(KEYPAD_ENTRY) or []
            if len(keys) >= keypad.MAX_ENTRY_DIGITS and not keypad.ends_entry(digit):
                return False
            conversation.metadata[KEYPAD_ENTRY] = sorted([*keys, key])
            return True

        if not self.table.mutate(call_id, add)[1]:
            logger.warning("ignored ConversationRelay dtmf: the entry holds %s keys already", keypad.MAX_ENTRY_DIGITS)
            return
        if not keypad.ends_entry(digit):
            time.sleep(max(0.0, self.received_ms / 1000 + keypad.PAUSE_SECS - time.time()))
            stored = self.table.get(call_id)
            if stored is None or (stored.metadata.get(KEYPAD_ENTRY) or [[]])[-1] != key:
                return  # a later key took the entry over

        def take(conversation: Conversation) -> str:
            keys = conversation.metadata.pop(KEYPAD_ENTRY, None) or []
            return "".join(digit for _, _, digit in keys) if key in keys else ""

        _, digits = self.table.mutate(call_id, take)
        if digits:
            self.answer(keypad.entry_message(digits))

    def _speak(self, call_id: str, reply: Reply) -> str | None:
        """Post the reply's tokens; ``None`` if it was spoken whole, else what was sent before it stopped."""
        connections = Connections(self.endpoint)
        sent: list[str] = []
        pending: list[str] = []
        last_post, last_poll = 0.0, time.monotonic()
        try:
            for token in reply:
                pending.append(token)
                now = time.monotonic()
                if now - last_post >= COALESCE_SECS:
                    connections.post_json(self.connection_id, protocol.text_token("".join(pending), last=False))
                    sent += pending
                    pending, last_post = [], now
                if now - last_poll >= INTERRUPT_POLL_SECS:
                    last_poll = now
                    if self._interrupted(call_id):
                        return "".join(sent)
            connections.post_json(self.connection_id, protocol.text_token("".join(pending), last=True))
        except ConnectionGone:
            logger.info("connection %s is gone; the reply stops", self.connection_id)
            return "".join(sent)
        except Exception as exc:  # no LLM of the chain could answer: the call cannot go on (on_failure)
            logger.exception("the reply to call %s failed; ending the session", call_id)
            handoff = protocol.failure_handoff(self.config.failure_transfer_to, f"llm: {type(exc).__name__}: {exc}")
            with contextlib.suppress(ConnectionGone):
                connections.post_json(self.connection_id, protocol.text_token(self.config.failure_say, last=True))
                connections.post_json(self.connection_id, protocol.end_session(handoff))
            return "".join(sent)
        return None

    def _interrupted(self, call_id: str) -> bool:
        conversation = self.table.get(call_id)
        return conversation is None or conversation.live.get(self.turn_id) is not None

    def interrupt(self, heard: str) -> None:
        """Cut the reply being spoken: the oldest live turn to what was heard, any later one to nothing.

        With no live turn the reply was already generated (Twilio is still speaking buffered text), so the
        last stored assistant message is cut instead.
        """
        call_id = self._call_id()
        if call_id is None:
            return

        def cut(conversation: Conversation) -> None:
            forget_stale_turns(conversation, self.received_ms)
            if conversation.live:
                for index, turn in enumerate(conversation.live):
                    conversation.live[turn] = heard if index == 0 else ""
                return
            for message in reversed(conversation.messages):
                if message.get("role") == "assistant" and message.get("content"):
                    message["content"] = heard
                    return

        self.table.mutate(call_id, cut)

    def _carry_out(self, effects: list[tuple[str, dict[str, Any]]]) -> None:
        """``end_call`` and ``transfer`` end the session; the ``<Connect action>`` callback dials a transfer."""
        for effect, arguments in effects:
            handoff = protocol.handoff(effect, arguments)
            try:
                Connections(self.endpoint).post_json(self.connection_id, protocol.end_session(handoff))
            except ConnectionGone:
                return


def _store_pending_entry(conversation: Conversation) -> None:
    """Move the keypad entry being typed, if any, into the conversation (its keys' invocations then find it
    gone and do not answer it)."""
    keys = conversation.metadata.pop(KEYPAD_ENTRY, None) or []
    if keys:
        conversation.messages.append(keypad.entry_message("".join(digit for _, _, digit in keys)))


def _heard(messages: list[Message], heard: str | None) -> list[Message]:
    """The reply's messages as the caller heard them: all of it (``None``), or its spoken text cut to ``heard``.

    Tool calls and results are kept (the tools ran); the words are replaced by one final assistant turn
    holding what was heard, and turns left with nothing are dropped.
    """
    if heard is None:
        kept = messages
    else:
        kept = [{**m, "content": ""} if m["role"] == "assistant" else m for m in messages]
        kept.append({"role": "assistant", "content": heard})
    return [m for m in kept if m["role"] != "assistant" or m.get("content") or m.get("tool_calls")]
