"""``kind: python``: call ``module:function`` (sync or async) with the model's arguments as keywords.

Only the function's named parameters are ever passed: an argument it does not name is refused, even when the
function takes ``**kwargs`` (a catch-all must not hand caller-chosen names to server code). Together with the
strict schema check of ``run_tool``, the function receives only the parameters the deployment declared.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolHandler, ToolKind
from voxpipe.tools.runner import ToolCallFailed


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
        # Sync tools run in a thread so a slow one never blocks the call's audio.
        return await asyncio.to_thread(function, **arguments)

    return call


PYTHON = ToolKind(name="python", options=PythonToolOptions, build=build, description="Call a Python function.")
