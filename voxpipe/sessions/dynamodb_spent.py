"""Spent call-binding tokens in the deployment's DynamoDB table (``spent#<digest>`` items), so the serverless
bridge's workers, the Lambda relay and ``voxpipe serve`` processes on that table refuse a replayed token
together. See ``voxpipe.security.spent_tokens`` and ``voxpipe.aws.conversations``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from voxpipe.aws.conversations import ConversationTable
from voxpipe.security.spent_tokens import digest


class DynamoDBSpentTokens:
    """``SpentTokens`` in a DynamoDB table (botocore is synchronous: each put runs in a worker thread)."""

    def __init__(self, table: str, *, client: Any = None):
        self._table = ConversationTable(table, 0, client=client)

    async def spend(self, token: str, keep_secs: float) -> bool:
        return await asyncio.to_thread(self._table.spend, digest(token), keep_secs)

    async def close(self) -> None:
        """botocore clients need no closing."""
