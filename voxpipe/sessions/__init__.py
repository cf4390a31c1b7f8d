"""Conversation storage keyed by call id: the ``SessionStore`` interface, its backends and their factory."""

from __future__ import annotations

from voxpipe.config.models import SessionsConfig
from voxpipe.sessions.base import (
    Conflict,
    HistoryTooLarge,
    Message,
    Session,
    SessionRecorder,
    SessionStore,
    StoreUnavailable,
    append_turns,
)
from voxpipe.sessions.memory import MemorySessionStore
from voxpipe.sessions.sqlite import SQLiteSessionStore

__all__ = [
    "Conflict",
    "HistoryTooLarge",
    "MemorySessionStore",
    "Message",
    "SQLiteSessionStore",
    "Session",
    "SessionRecorder",
    "SessionStore",
    "StoreUnavailable",
    "append_turns",
    "open_store",
]


def open_store(config: SessionsConfig) -> SessionStore:
    """The store a deployment's ``sessions:`` section asks for."""
    if config.store == "memory":
        return MemorySessionStore(
            config.ttl_secs, max_sessions=config.max_sessions, max_history_bytes=config.max_history_bytes
        )
    if config.store == "sqlite":
        return SQLiteSessionStore(config.path, config.ttl_secs, max_history_bytes=config.max_history_bytes)
    if config.store == "redis":
        from voxpipe.sessions.redis import RedisSessionStore  # redis-py is optional: voxpipe[redis]

        return RedisSessionStore(config.url, config.ttl_secs, max_history_bytes=config.max_history_bytes)
    from voxpipe.sessions.dynamodb import DynamoDBSessionStore

    return DynamoDBSessionStore(config.table or "", ttl_secs=config.ttl_secs)
