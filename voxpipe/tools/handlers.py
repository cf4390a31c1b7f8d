"""The built-in tool kinds' handlers, free of pydantic, pluggy and pipecat.

Each builder here makes the async handler of one tool from its options, read by attribute only: the pipeline
passes the kind's validated options model, the Lambda relay (which must not import pydantic) a namespace of
the same options, validated and filled in when ``voxpipe deploy sam`` built the deployment. The kinds
themselves (options models, descriptions, effects, and why each handler is bounded as it is) are ``http``,
``python`` and ``call_control``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from voxpipe.tools.runner import ToolCallFailed

if TYPE_CHECKING:
    from voxpipe.providers.spec import ToolHandler

TOOL_THREADS = 8
_POOL = ThreadPoolExecutor(max_workers=TOOL_THREADS, thread_name_prefix="voxpipe-tool")


async def _bounded_body(response: Any, limit: int, name: str) -> bytes:
    """The reply body, refused once it grows past ``limit`` bytes (checked as it arrives, not after)."""
    if response.content_length is not None and response.content_length > limit:
        raise ToolCallFailed(f"reply of {name} is {response.content_length} bytes, over the {limit}-byte limit")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise ToolCallFailed(f"reply of {name} is over the {limit}-byte limit")
    return bytes(body)


def http(name: str, options: Any) -> ToolHandler:
    """``kind: http`` (options: ``http.HttpToolOptions``)."""

    async def call(arguments: dict[str, Any]) -> Any:
        import aiohttp  # pipecat dependency; imported lazily to keep `voxpipe validate` light

        as_query = options.method in ("GET", "DELETE")
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=options.request_timeout_secs)) as session,
            session.request(
                options.method,
                options.url,
                headers=options.headers,
                params={k: str(v) for k, v in arguments.items()} if as_query else None,
                json=None if as_query else arguments,
                allow_redirects=options.follow_redirects,
            ) as response,
        ):
            body = await _bounded_body(response, options.max_response_bytes, name)
            text = body.decode(response.charset or "utf-8", errors="replace")
            if response.status >= 300:  # 3xx here: a redirect not followed
                raise ToolCallFailed(f"HTTP {response.status} from {name}: {text[:200]}")
            if response.content_type == "application/json":
                return json.loads(text)
            return {"text": text}

    return call


def resolve(path: str) -> Any:
    """The callable at ``package.module:attribute``."""
    module_name, _, attribute = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{path} is not callable")
    return target


def _named_parameters(function: Any) -> frozenset[str]:
    """The parameters ``function`` takes by keyword, by name (not ``*args`` / ``**kwargs``)."""
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in inspect.signature(function).parameters.values() if p.kind in keyword)


def python(name: str, options: Any) -> ToolHandler:
    """``kind: python`` (options: ``python.PythonToolOptions``)."""

    function = resolve(options.function)
    named = _named_parameters(function)

    async def call(arguments: dict[str, Any]) -> Any:
        unexpected = sorted(set(arguments) - named)
        if unexpected:
            raise ToolCallFailed(f"{options.function} takes no argument {', '.join(unexpected)}")
        if inspect.iscoroutinefunction(function):
            return await function(**arguments)
        # Sync tools run in a thread so a slow one never blocks the call's audio (as asyncio.to_thread would,
        # but on the tools' own pool).
        run = functools.partial(contextvars.copy_context().run, function, **arguments)
        return await asyncio.get_running_loop().run_in_executor(_POOL, run)

    return call


def end_call(name: str, options: Any) -> ToolHandler:
    """``kind: end_call``: only acknowledges; the transport ends the call."""

    async def call(arguments: dict[str, Any]) -> Any:
        return {"status": "ok", "effect": "end_call"}

    return call


def transfer(name: str, options: Any) -> ToolHandler:
    """``kind: transfer``: only acknowledges, naming the target; the transport hands the call over."""

    mode = getattr(options, "mode", "cold")
    warm = {"mode": "warm", "ring_timeout_secs": options.ring_timeout_secs} if mode == "warm" else {}

    async def call(arguments: dict[str, Any]) -> Any:
        return {"status": "ok", "effect": "transfer", "to": options.to, **warm}

    return call
