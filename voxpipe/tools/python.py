"""``kind: python``: call ``module:function`` (sync or async) with the model's arguments as keywords."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolHandler, ToolKind


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


def build(name: str, options: PythonToolOptions) -> ToolHandler:
    function = _resolve(options.function)

    async def call(arguments: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(function):
            return await function(**arguments)
        # Sync tools run in a thread so a slow one never blocks the call's audio.
        return await asyncio.to_thread(function, **arguments)

    return call


PYTHON = ToolKind(name="python", options=PythonToolOptions, build=build, description="Call a Python function.")
