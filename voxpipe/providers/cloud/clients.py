"""Process-wide SDK clients, shared by every call on an event loop (part of the public provider SDK).

A pipecat service is built per call, and most build their SDK client (with its connection pool) in their
constructor: every call would open new connections and pay a TLS handshake on its first turn. ``shared``
and ``shared_async`` keep one object per event loop and key instead; they are closed when the loop shuts
down, or earlier by ``close_shared``. ``openai_client`` and ``SharedClientSession`` (for pipecat's AWS
services) are built on them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

from voxpipe.providers.cloud.options import OpenAIOptions, timeouts

if TYPE_CHECKING:
    from openai import AsyncOpenAI

T = TypeVar("T")

_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def shared(key: Hashable, factory: Callable[[], T]) -> T:
    """The process-wide object for ``key``, made by ``factory`` on first use.

    Kept per event loop: a connection pool belongs to the loop that opened it. Without a running loop there
    is nothing to share with, and a fresh object is returned.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return factory()
    objects = _SHARED.get(loop)
    if objects is None:
        objects = _SHARED[loop] = {}
        closer = _close_at_shutdown(loop, objects)
        objects[_CLOSER] = (closer, asyncio.ensure_future(closer.__anext__()))  # (referenced: kept alive)
    if key not in objects:
        objects[key] = factory()
    return objects[key]


_CLOSER = object()  # the key of a loop's closer among its shared objects


async def _close_at_shutdown(loop: asyncio.AbstractEventLoop, objects: dict[Hashable, Any]) -> AsyncIterator[None]:
    """Parked on the loop until it shuts down: ``asyncio.run`` closes the async generators still open
    (``shutdown_asyncgens``), and so this one closes the loop's shared clients, which would otherwise be
    left to the garbage collector (aiohttp's "Unclosed client session" at the end of every Bedrock call)."""
    try:
        yield
    finally:
        if _SHARED.get(loop) is objects:  # (not already closed by close_shared)
            await _close(_SHARED.pop(loop))


async def shared_async(key: Hashable, factory: Callable[[], Awaitable[T]]) -> T:
    """Like ``shared`` for objects made by a coroutine; concurrent first users wait for one creation.

    A creation that fails is forgotten, so the next request tries again.
    """
    creation: asyncio.Future[T] = shared(key, lambda: asyncio.ensure_future(factory()))
    try:
        return await asyncio.shield(creation)
    except Exception:
        objects = _SHARED.get(asyncio.get_running_loop(), {})
        if objects.get(key) is creation:
            del objects[key]
        raise


async def close_shared() -> None:
    """Close the clients shared on the running event loop now (between tests; ``asyncio.run`` closes them at
    its end by itself)."""
    await _close(_SHARED.pop(asyncio.get_running_loop(), {}))


async def _close(objects: dict[Hashable, Any]) -> None:
    objects.pop(_CLOSER, None)
    for value in objects.values():
        client = value
        if isinstance(value, asyncio.Future):
            if not value.done() or value.cancelled() or value.exception() is not None:
                value.cancel()
                continue
            client = value.result()
        close = getattr(client, "close", None) or getattr(client, "aclose", None)
        if close is not None:
            await close()


def openai_client(options: OpenAIOptions) -> AsyncOpenAI:
    """The shared ``AsyncOpenAI`` client of a key, endpoint, timeouts and retries."""
    key = ("openai", options.api_key.get_secret_value(), options.base_url, *timeouts(options), options.max_retries)

    def create() -> AsyncOpenAI:
        from openai import AsyncOpenAI, Timeout

        return AsyncOpenAI(
            api_key=options.api_key.get_secret_value(),
            base_url=options.base_url,
            timeout=Timeout(options.response_timeout_secs, connect=options.connect_timeout_secs),
            max_retries=options.max_retries,
        )

    return shared(key, create)


def openai_service_args(options: OpenAIOptions) -> dict[str, Any]:
    """The arguments of an ``OpenAIService``: the shared client; the key, for the client pipecat builds (which
    the shared one replaces); and the response timeout."""
    return {
        "client": openai_client(options),
        "api_key": options.api_key.get_secret_value(),
        "response_timeout_secs": options.response_timeout_secs,
    }


class SharedClientSession:
    """Stands in for the aiobotocore session of a pipecat AWS service: ``create_client`` lends the shared client.

    pipecat's AWS services open a client, and so a connection, for every request; given this session they
    borrow one process-wide client per ``key`` (the configuration) instead, left open for the next request
    and closed by ``close_shared``.
    """

    def __init__(self, session: Any, key: tuple[Any, ...]) -> None:
        self._session, self._key = session, key

    def create_client(self, **params: Any) -> _Lent:
        return _Lent(self._key, lambda: self._session.create_client(**params).__aenter__())


class _Lent:
    """``async with`` yields the shared client and leaves it open for the next request."""

    def __init__(self, key: tuple[Any, ...], open_client: Callable[[], Awaitable[Any]]) -> None:
        self._key, self._open_client = key, open_client

    async def __aenter__(self) -> Any:
        return await shared_async(self._key, self._open_client)

    async def __aexit__(self, *exc: object) -> None:
        return None
