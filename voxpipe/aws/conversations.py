"""Conversations and connections in one DynamoDB table, safe under concurrent writers (Lambda invocations,
``voxpipe serve`` processes).

The Lambda relay and bridge keep their calls here, and ``voxpipe serve``'s ``sessions: {store: dynamodb}``
(``voxpipe.sessions.dynamodb``) reads and writes the same rows.

One string hash key, ``pk``, and two kinds of item:

- ``call#<call id>``: one conversation: ``messages`` (JSON, the standard OpenAI-style messages pipecat's
  ``LLMContext`` uses, so ``voxpipe serve`` with the DynamoDB session store reads the same rows), ``metadata``
  (JSON), ``live`` (JSON: reply turns being generated, see ``Conversation.live``) and ``version``.
- ``conn#<connection id>``: one open WebSocket connection: the call it belongs to and what the audio
  bridge's worker needs (``endpoint``, ``client``). ``$disconnect`` deletes it; the worker watches it.
- ``spent#<token digest>``: a call-binding token already used (``voxpipe.security.spent_tokens``), kept until
  it expires, so a replayed ``setup`` / ``start`` is refused by every invocation and worker.
- ``worker#<queue URL>``: whether the audio bridge's worker on that queue takes new calls
  (``voxpipe.serverless.bridge_status``), rewritten every few seconds and expiring soon after: no fresh row, no
  worker.

Every item carries ``expires_at`` (epoch seconds), the table's TTL attribute. DynamoDB deletes expired
items lazily (typically within days), so every read here filters them out itself.

Writes are optimistic: ``mutate`` reads the item, applies a change, and writes it back on the condition that
``version`` is still what it read; if another invocation wrote in between, it re-reads and re-applies the
change. Two invocations of one call (a prompt and an interrupt, or two prompts) therefore never lose a turn.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from voxpipe.aws import aws_client, error_code

Message = dict[str, Any]
T = TypeVar("T")

KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
CALL_PREFIX = "call#"
CONNECTION_PREFIX = "conn#"
SPENT_PREFIX = "spent#"
WORKER_PREFIX = "worker#"
#: API Gateway closes a WebSocket connection after 2 hours; a connection row outlives it a little.
CONNECTION_TTL_SECS = 2 * 3600 + 600


#: DynamoDB refuses items over 400 KB; a write is refused whole a little below that (keys and numbers too).
MAX_ITEM_BYTES = 390 * 1024


class ConversationTooLarge(RuntimeError):
    """Writing would take a conversation's item past DynamoDB's 400 KB limit: nothing was written, nothing cut."""

    def __init__(self, call_id: str, size: int):
        super().__init__(
            f"conversation {call_id}: the stored item would be {size} bytes, over DynamoDB's item limit "
            f"({MAX_ITEM_BYTES} bytes allowed); nothing was written"
        )
        self.size = size


class TooManyConflicts(RuntimeError):
    """A write kept losing the race to other writers of the same item (bounded retries)."""


#: A conversation's reads and writes fail within seconds instead of after botocore's DynamoDB default of ten
#: attempts (~25 s of backoff against an endpoint that refuses): a caller is waiting on the line, and a call
#: that cannot reach its conversation is told so (the relay's ``on_failure``) rather than left in silence.
CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "max_attempts": 3},
    "connect_timeout": 2,
    "read_timeout": 5,
}


@dataclass
class Conversation:
    """One call's stored conversation.

    ``live`` maps the id of each reply turn being generated to ``None``, or, once the caller interrupted
    it, to the text the caller heard (Twilio's ``utteranceUntilInterrupt``): the turn then stops and stores
    only that. ``version`` is the optimistic lock (0: nothing stored yet).
    """

    call_id: str
    messages: list[Message] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    live: dict[str, str | None] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True)
class WorkerStatus:
    """What the audio bridge's worker last said of itself: whether it takes new calls (``refusal``: why not),
    its event loop's busy share and its live calls."""

    accepting: bool
    refusal: str
    load: float
    calls: int


class ConversationTable:
    """Reads and conditionally writes conversations and connection rows of one table."""

    def __init__(
        self,
        table: str,
        ttl_secs: int,
        *,
        client: Any = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 25,
        masked: Callable[[Conversation], Conversation] | None = None,
    ):
        """``masked``: what of a conversation is written (the Lambda relay's redaction); by default all of it."""
        self.table = table
        self.ttl_secs = ttl_secs
        self.client = client or aws_client("dynamodb", **CLIENT_CONFIG)
        self.clock = clock
        self.max_attempts = max_attempts
        self.masked = masked

    # -------------------------------------------------------------------------------------- conversations

    def get(self, call_id: str) -> Conversation | None:
        """The stored conversation, or ``None`` if there is none or it expired."""
        conversation, live = self._read(call_id)
        return conversation if live else None

    def mutate(
        self, call_id: str, change: Callable[[Conversation], T], known: Conversation | None = None
    ) -> tuple[Conversation, T]:
        """Apply ``change`` to the stored conversation (a fresh one if none) and write it back atomically.

        ``change`` edits the conversation in place and may return a value; it may run more than once (once
        per lost race), so it must only compute from the conversation it is given. An exception it raises
        aborts the write. ``known``, a conversation this invocation read or wrote, saves the first read: if
        nobody wrote since, the write succeeds at once. Returns the conversation as written (before
        ``masked``) and the value.
        """
        stored, live = (known, True) if known is not None else self._read(call_id)
        for attempt in range(self.max_attempts):
            conversation = copy.deepcopy(stored) if live else Conversation(call_id, version=stored.version)
            result = change(conversation)
            conversation.version = stored.version + 1
            if self._put_if_version(conversation, stored.version):
                return conversation, result
            # Jittered exponential back-off: concurrent writers of one call spread out.
            time.sleep(random.uniform(0, min(0.1, 0.005 * 2**attempt)))
            stored, live = self._read(call_id)
        raise TooManyConflicts(f"conversation {call_id}: gave up after {self.max_attempts} conflicting writes")

    def conversations(self) -> Iterator[Conversation]:
        """Every stored conversation not expired, in no order (a scan of the table: for bookkeeping off the
        call path, such as ``voxpipe import-relay``, never in a call)."""
        pages = self.client.get_paginator("scan").paginate(
            TableName=self.table,
            FilterExpression="begins_with(#pk, :calls)",
            ExpressionAttributeNames={"#pk": KEY},
            ExpressionAttributeValues={":calls": {"S": CALL_PREFIX}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                if not self._expired(item):
                    yield _conversation(item["pk"]["S"].removeprefix(CALL_PREFIX), item)

    def _read(self, call_id: str) -> tuple[Conversation, bool]:
        """The stored item (or an empty one, version 0) and whether it is live (exists, not expired)."""
        item = self._get_item(CALL_PREFIX + call_id)
        if item is None:
            return Conversation(call_id), False
        return _conversation(call_id, item), not self._expired(item)

    def _put_if_version(self, conversation: Conversation, expected: int) -> bool:
        if self.masked is not None:
            conversation = self.masked(conversation)
        item = {
            KEY: {"S": CALL_PREFIX + conversation.call_id},
            "messages": {"S": _dumps(conversation.messages)},
            "metadata": {"S": _dumps(conversation.metadata)},
            "live": {"S": _dumps(conversation.live)},
            "version": {"N": str(conversation.version)},
            TTL_ATTRIBUTE: {"N": str(int(self.clock()) + self.ttl_secs)},
        }
        size = sum(len(name) + len(next(iter(value.values())).encode()) for name, value in item.items())
        if size > MAX_ITEM_BYTES:  # DynamoDB's own refusal would come as a generic ValidationException
            raise ConversationTooLarge(conversation.call_id, size)
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if expected:
            condition = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(expected)}},
            }
        try:
            self.client.put_item(TableName=self.table, Item=item, **condition)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -------------------------------------------------------------------------------------- connections

    def bind_connection(self, connection_id: str, call_id: str, **attributes: str) -> None:
        """Record that ``connection_id`` carries ``call_id`` (and string ``attributes``, e.g. the endpoint)."""
        item = {
            KEY: {"S": CONNECTION_PREFIX + connection_id},
            "call_id": {"S": call_id},
            "connected_at": {"N": str(int(self.clock()))},
            TTL_ATTRIBUTE: {"N": str(int(self.clock()) + CONNECTION_TTL_SECS)},
            **{name: {"S": value} for name, value in attributes.items()},
        }
        self.client.put_item(TableName=self.table, Item=item)

    def connection(self, connection_id: str) -> dict[str, str] | None:
        """The string attributes of an open connection's row (``call_id``...), or ``None`` if it is gone."""
        item = self._get_item(CONNECTION_PREFIX + connection_id)
        if item is None or self._expired(item):
            return None
        return {name: value["S"] for name, value in item.items() if "S" in value and name != KEY}

    def drop_connection(self, connection_id: str) -> None:
        """Delete a connection's row (idempotent)."""
        self.client.delete_item(TableName=self.table, Key={KEY: {"S": CONNECTION_PREFIX + connection_id}})

    # -------------------------------------------------------------------------------------- bridge workers

    def publish_worker(self, queue_url: str, status: WorkerStatus, fresh_secs: int) -> None:
        """Write the worker's status; it reads as gone once ``fresh_secs`` pass without another write."""
        item = {
            KEY: {"S": WORKER_PREFIX + queue_url},
            "accepting": {"BOOL": status.accepting},
            "refusal": {"S": status.refusal},
            "load": {"N": f"{status.load:.3f}"},
            "calls": {"N": str(status.calls)},
            TTL_ATTRIBUTE: {"N": str(int(self.clock()) + fresh_secs)},
        }
        self.client.put_item(TableName=self.table, Item=item)

    def worker(self, queue_url: str) -> WorkerStatus | None:
        """The status of the worker serving ``queue_url``, or ``None`` when none was written lately."""
        item = self._get_item(WORKER_PREFIX + queue_url)
        if item is None or self._expired(item):
            return None
        return WorkerStatus(
            accepting=item["accepting"]["BOOL"],
            refusal=item["refusal"]["S"],
            load=float(item["load"]["N"]),
            calls=int(item["calls"]["N"]),
        )

    # -------------------------------------------------------------------------------------- spent tokens

    def spend(self, digest: str, keep_secs: float) -> bool:
        """``True`` the first time the token of ``digest`` is spent (one conditional put: exactly one writer
        wins), ``False`` while an earlier spending is remembered."""
        now = int(self.clock())
        item = {KEY: {"S": SPENT_PREFIX + digest}, TTL_ATTRIBUTE: {"N": str(now + max(1, round(keep_secs)))}}
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression=f"attribute_not_exists({KEY}) OR {TTL_ATTRIBUTE} <= :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -------------------------------------------------------------------------------------- items

    def _get_item(self, key: str) -> dict[str, Any] | None:
        reply = self.client.get_item(TableName=self.table, Key={KEY: {"S": key}}, ConsistentRead=True)
        return reply.get("Item")

    def _expired(self, item: dict[str, Any]) -> bool:
        expires = item.get(TTL_ATTRIBUTE)
        return expires is not None and int(expires["N"]) <= self.clock()


def _conversation(call_id: str, item: dict[str, Any]) -> Conversation:
    return Conversation(
        call_id,
        messages=json.loads(item["messages"]["S"]),
        metadata=json.loads(item["metadata"]["S"]),
        live=json.loads(item["live"]["S"]),
        version=int(item["version"]["N"]),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def table_definition(table: str) -> dict[str, Any]:
    """``CreateTable`` arguments of the table (tests and local set-ups; the SAM template declares the same)."""
    return {
        "TableName": table,
        "AttributeDefinitions": [{"AttributeName": KEY, "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
