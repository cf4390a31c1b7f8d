"""``kind: python``: call ``module:function`` (sync or async) with the model's arguments as keywords.

Only the function's named parameters are ever passed: an argument it does not name is refused, even when the
function takes ``**kwargs`` (a catch-all must not hand caller-chosen names to server code). Together with the
strict schema check of ``run_tool``, the function receives only the parameters the deployment declared.

Sync functions run on a pool of their own (``TOOL_THREADS`` threads): a thread cannot be stopped, so a tool
that hangs past its timeout keeps its thread, and on the event loop's default pool enough of them would starve
everything else that runs in threads. Here they can only starve other sync tools, which then time out.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolHandler, ToolKind
from voxpipe.tools.runner import ToolCallFailed

TOOL_THREADS = 8
_POOL = ThreadPoolExecutor(max_workers=TOOL_THREADS, thread_name_prefix="voxpipe-tool")


class PythonToolOptions(ProviderOptions):
    function: str = Field(
        pattern=r"^[\w.]+:[\w.]+$", description="Import path 'package.module:function' of the callable."
    )


def _resolve(path: str) -> Any:
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


def build(name: str, options: PythonToolOptions) -> ToolHandler:
    function = _resolve(options.function)
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


PYTHON = ToolKind(name="python", options=PythonToolOptions, build=build, description="Call a Python function.")
