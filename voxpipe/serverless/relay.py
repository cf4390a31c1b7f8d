"""``voxpipe.serverless.relay.handler``: Twilio ConversationRelay on Lambda, behind an API Gateway WebSocket API.

- ``$connect``: the handshake must carry a valid ``X-Twilio-Signature`` over the relay's public ``wss://`` URL
  (``$VOXPIPE_RELAY_URL``, never the request's host); anything else is refused with 403.
- ``$default``: ``setup`` (carrying the token the TwiML webhook gave its ``callSid``:
  ``voxpipe.security.call_binding``) binds the connection to the call and starts or resumes its
  conversation; a final ``prompt`` and a complete keypad entry stream a reply as ``text`` tokens through
  ``@connections``; ``interrupt`` cuts the reply being spoken to what the caller heard. When no LLM of the
  chain can answer, the deployment's ``on_failure`` text is the last ``text``, then ``end`` hands the call
  off (``handoffData`` reason ``failure``), as on the server; the same when the conversation table fails
  (DynamoDB out of reach): the caller is told, not left in silence. The messages and
  their rules (partial prompts, keypad entries, handoff data) are ``voxpipe.telephony``'s, as on the server.
- No dead air: a slow tool's filler is sent (``last: false``) before the answer (``text_llm.Reply``); a reply
  spoken whole arms a silence check (``silence.py``: re-prompts, then the goodbye); a warm ``transfer`` ends the
  session with handoff data carrying the LLM's summary (``transfer.py``), and a caller nobody took comes back
  to a ``setup`` whose ``<Parameter>``s say so: the agent says the ``unanswered`` line and carries on.
- ``redact:``: what is written to DynamoDB and every log line is masked (``redacting.py``). With ``OTEL_*`` set,
  each reply turn is exported as a trace span (``relay_tracing.py``).
- ``$disconnect``: forgets the connection and stores a keypad entry still being typed (unanswered: no LLM
  call); the conversation stays until its TTL, so a reconnecting call
  (same ``callSid``) resumes it.
- Every call is measured: its start and end, each reply turn's timing (the prompt's arrival at API Gateway to
  the reply's first and last text sent) and its LLM requests' tokens are kept in the conversation's metadata
  (``relay_turns``), which ``voxpipe import-relay`` turns into priced CallRecords (``voxpipe.records.relay``).

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
from dataclasses import asdict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from voxpipe.aws.conversations import Conversation, ConversationTooLarge, Message
from voxpipe.security.call_binding import PARAMETER, TTL_SECS, CallBinding, without_token
from voxpipe.security.spent_tokens import digest
from voxpipe.security.tokens import TokenError
from voxpipe.serverless import (
    RELAY_URL_ENV,
    ConnectionGone,
    Connections,
    HandlerConfig,
    connections_endpoint,
    event_body,
    event_headers,
    handler_config,
    response,
    silence,
    transfer,
)
from voxpipe.serverless.redacting import conversations, redacting_logs
from voxpipe.serverless.relay_tracing import export_turn
from voxpipe.serverless.relay_turns import (
    CONNECTED_MS,
    ENDED_MS,
    FAILURE,
    KEYPAD_ENTRY,
    LIVE_SINCE,
    STARTED_MS,
    TurnMeasures,
    forget_stale_turns,
    heard_messages,
    note_events,
    note_turn,
    said,
    store_pending_entry,
)
from voxpipe.serverless.text_llm import Filler, Reply, summarise
from voxpipe.telephony import conversation_relay as protocol
from voxpipe.telephony import keypad
from voxpipe.telephony.warm_transfer import RETURN_SAY, RETURN_STATUS

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


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point for the three WebSocket routes."""
    config = handler_config()
    route = event["requestContext"]["routeKey"]
    if route == "$connect":
        return _connect(config, event)
    relay = Relay(config, event)
    with redacting_logs(relay.redactor):
        if route == "$disconnect":
            relay.disconnect()
        else:
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
        self.table, self.redactor = conversations(config)
        self.first_text_ms: int | None = None  # when this invocation's reply sent its first text, and its last
        self.last_text_ms: int | None = None
        self.failure: str | None = None  # why the reply failed and the call ended through on_failure

    def handle(self, message: protocol.Inbound) -> None:
        """Act on one message. The conversation table failing (DynamoDB out of reach, or throttled past the
        client's retries) ends the session through ``on_failure``: without its conversation the call cannot go on,
        and every prompt would otherwise meet silence."""
        try:
            self._dispatch(message)
        except (BotoCoreError, ClientError) as exc:
            logger.exception("connection %s: the conversation table failed; ending the session", self.connection_id)
            self._fail(f"session store: {type(exc).__name__}: {exc}")

    def _dispatch(self, message: protocol.Inbound) -> None:
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
        (``voxpipe.security.call_binding``), unspent (it is spent now, in the table, so a replay is refused by
        every invocation), and the id must not name another transport's conversation.
        """
        try:
            self._open(setup)
        except TokenError as problem:
            self._refuse(f"setup for call {setup.call_sid!r} refused: {problem}")

    def _open(self, setup: protocol.Setup) -> None:
        binding = CallBinding.for_deployment("conversation_relay", self.config.validate_signatures)
        token = setup.custom_parameters.get(PARAMETER)
        binding.verify(setup.call_sid, setup.custom_parameters)
        if token is not None and not self.table.spend(digest(str(token)), TTL_SECS):
            raise TokenError(f"the {PARAMETER} was used already (a replayed setup for this call)")
        stored = self.table.get(setup.call_sid)
        if stored is not None and stored.metadata.get("transport") not in (None, "conversation_relay"):
            self._refuse(f"call id {setup.call_sid!r} is a {stored.metadata['transport']} id: refused")
            return
        self.table.bind_connection(self.connection_id, setup.call_sid, endpoint=self.endpoint, client="relay")
        back = str(setup.custom_parameters.get(RETURN_SAY) or "") if setup.custom_parameters.get(RETURN_STATUS) else ""

        def start(conversation: Conversation) -> float | None:
            conversation.metadata.update(
                transport="conversation_relay",
                session_id=setup.session_id,
                caller=setup.from_,
                called=setup.to,
                direction=setup.direction,
                custom_parameters=without_token(setup.custom_parameters),
                connection_id=self.connection_id,
            )
            conversation.metadata.setdefault(STARTED_MS, self.received_ms)
            conversation.metadata[CONNECTED_MS] = self.received_ms
            if not conversation.messages and self.config.greeting:
                conversation.messages.append({"role": "assistant", "content": self.config.greeting})
            if back:  # back from a warm transfer nobody took: the agent says so and carries on
                conversation.messages.append({"role": "assistant", "content": back})
            return self._arm(conversation, back or self.config.greeting or "")

        _, silent_in = self.table.mutate(setup.call_sid, start)
        if back:
            with contextlib.suppress(ConnectionGone):
                Connections(self.endpoint).post_json(self.connection_id, protocol.text_token(back, last=True))
        self._check_silence(setup.call_sid, silent_in)

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
        """The session is over: forget the connection; a keypad entry still pending is stored, unanswered, and
        the call's end is noted (a reconnect of the same call moves it later)."""
        row = self.table.connection(self.connection_id)
        self.table.drop_connection(self.connection_id)

        def end(conversation: Conversation) -> None:
            store_pending_entry(conversation)
            conversation.metadata[ENDED_MS] = self.received_ms

        if row is not None:
            self.table.mutate(row["call_id"], end)

    def answer(self, user: Message, *, typed_first: bool = False) -> None:
        """Store the caller's turn (after the pending keypad entry, with ``typed_first``), stream the reply,
        and store what of it the caller heard."""
        call_id = self._call_id()
        if call_id is None:
            return

        if self.redactor is not None and self.redactor.before_llm:
            user = self.redactor.messages([user])[0]

        def open_turn(conversation: Conversation) -> None:
            forget_stale_turns(conversation, self.received_ms)
            silence.clear(conversation)
            if typed_first:
                store_pending_entry(conversation)
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
        reply = Reply(self.config, conversation.messages, self.redactor)
        heard: str | None = ""

        def close_turn(conversation: Conversation) -> float | None:
            cut = conversation.live.pop(self.turn_id, None)
            (conversation.metadata.get(LIVE_SINCE) or {}).pop(self.turn_id, None)
            conversation.messages += heard_messages(reply.messages, cut if cut is not None else heard)
            note_events(conversation, [{"kind": "filler", **filler} for filler in reply.fillers], self.received_ms)
            self._note_turn(conversation, str(user["content"]), reply, heard if cut is None else cut)
            whole = heard is None and cut is None and not reply.effects and not conversation.live
            return self._arm(conversation, said(reply.messages)) if whole else None  # silence may follow it

        try:
            heard = self._speak(call_id, reply)
        finally:  # even a failed reply closes its turn, or a later interrupt would wait for it
            _, silent_in = self.table.mutate(call_id, close_turn, known=conversation)
        self._check_silence(call_id, silent_in)
        spoken = said(reply.messages) if heard is None else heard
        export_turn(self.config, call_id, self.received_ms / 1000, str(user["content"]), reply, spoken, self.redactor)
        if heard is None:
            self._carry_out(call_id, reply)

    def _note_turn(self, conversation: Conversation, user: str, reply: Reply, heard: str | None) -> None:
        """Keep the turn's measures for the call's record (``heard``: ``None`` if the reply was heard whole)."""
        usage = [{"provider": r.name, "model": r.detail, **asdict(r.usage)} for r in reply.requests if r.usage]
        turn = TurnMeasures(
            heard=user,
            reply=said(reply.messages) if heard is None else heard,
            prompted_ms=self.received_ms,
            first_text_ms=self.first_text_ms,
            last_text_ms=self.last_text_ms if heard is None else None,
            usage=usage,
        )
        note_turn(conversation, turn)
        if self.failure is not None:
            conversation.metadata[FAILURE] = {
                "say": self.config.failure_say,
                "transfer_to": self.config.failure_transfer_to,
                "reason": self.failure,
                "at_ms": int(time.time() * 1000),
            }

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
            silence.clear(conversation)
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
                if isinstance(token, Filler) or now - last_post >= COALESCE_SECS:
                    self._post_text(connections, "".join(pending), last=False)
                    sent += pending
                    pending, last_post = [], now
                if now - last_poll >= INTERRUPT_POLL_SECS:
                    last_poll = now
                    if self._interrupted(call_id):
                        return "".join(sent)
            self._post_text(connections, "".join(pending), last=True)
        except ConnectionGone:
            logger.info("connection %s is gone; the reply stops", self.connection_id)
            return "".join(sent)
        except Exception as exc:  # no LLM of the chain could answer: the call cannot go on (on_failure)
            logger.exception("the reply to call %s failed; ending the session", call_id)
            self.failure = f"llm: {type(exc).__name__}: {exc}"
            self._fail(self.failure)
            return "".join(sent)
        return None

    def _post_text(self, connections: Connections, text: str, *, last: bool) -> None:
        """Send the reply's next text, noting when its first and last were sent."""
        connections.post_json(self.connection_id, protocol.text_token(text, last=last))
        now_ms = int(time.time() * 1000)
        if text and self.first_text_ms is None:
            self.first_text_ms = now_ms
        self.last_text_ms = now_ms

    def _fail(self, reason: str) -> None:
        """The call cannot go on: ``on_failure``'s text is the last ``text``, then ``end`` hands the call off
        (``<Connect action>`` dials the transfer or hangs up), so the caller is told, not left in silence."""
        connections = Connections(self.endpoint)
        handoff = protocol.failure_handoff(self.config.failure_transfer_to, reason)
        with contextlib.suppress(ConnectionGone):
            connections.post_json(self.connection_id, protocol.text_token(self.config.failure_say, last=True))
            connections.post_json(self.connection_id, protocol.end_session(handoff))

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

        def cut(conversation: Conversation) -> float | None:
            forget_stale_turns(conversation, self.received_ms)
            if conversation.live:
                for index, turn in enumerate(conversation.live):
                    conversation.live[turn] = heard if index == 0 else ""
            else:
                for message in reversed(conversation.messages):
                    if message.get("role") == "assistant" and message.get("content"):
                        message["content"] = heard
                        break
            return self._arm(conversation, "")  # the caller's prompt will clear it; noise alone will not

        self._check_silence(call_id, self.table.mutate(call_id, cut)[1])

    def _arm(self, conversation: Conversation, words: str) -> float | None:
        """Arm this invocation's silence check after the bot said ``words`` (with ``silence:`` on): seconds to it."""
        if self.config.silence is None:
            return None
        return silence.arm(conversation, self.config.silence, self.turn_id, 0, words)

    def _check_silence(self, call_id: str, after: float | None) -> None:
        """Queue the check ``_arm`` armed, due ``after`` seconds from now."""
        if after is not None:
            due = int(time.time() * 1000 + after * 1000)
            silence.send_safely(
                self.config, silence.Check(call_id, self.connection_id, self.endpoint, self.turn_id, due)
            )

    def _carry_out(self, call_id: str, reply: Reply) -> None:
        """``end_call`` and ``transfer`` end the session; the ``<Connect action>`` callback dials a transfer, or
        for a warm one holds the caller and rings the person, who hears the LLM's summary (``transfer.py``)."""
        for effect, arguments in reply.effects:
            to = str((arguments.get("result") or {}).get("to") or "")
            warm = transfer.warm_tool(self.config, to) if effect == "transfer" else None
            if warm is not None:
                summary = summarise(self.config, reply.history + reply.messages)
                arguments = arguments | {"warm": transfer.warm_details(warm, summary)}
                logger.info("call %s: warm transfer to %s", call_id, to)
            handoff = protocol.handoff(effect, arguments)
            try:
                Connections(self.endpoint).post_json(self.connection_id, protocol.end_session(handoff))
            except ConnectionGone:
                return
