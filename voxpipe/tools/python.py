"""``kind: python``: call ``module:function`` (sync or async) with the model's arguments as keywords.

Only the function's named parameters are ever passed: an argument it does not name is refused, even when the
function takes ``**kwargs`` (a catch-all must not hand caller-chosen names to server code). Together with the
strict schema check of ``run_tool``, the function receives only the parameters the deployment declared.

Sync functions run on a pool of their own (``handlers.TOOL_THREADS`` threads): a thread cannot be stopped, so a tool
that hangs past its timeout keeps its thread, and on the event loop's default pool enough of them would starve
everything else that runs in threads. Here they can only starve other sync tools, which then time out.

The handler is ``handlers.python`` (pydantic-free, so the Lambda relay runs it too); this module holds its options.
"""

from __future__ import annotations

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolKind
from voxpipe.tools import handlers


class PythonToolOptions(ProviderOptions):
    function: str = Field(
        pattern=r"^[\w.]+:[\w.]+$", description="Import path 'package.module:function' of the callable."
    )


PYTHON = ToolKind(
    name="python", options=PythonToolOptions, build=handlers.python, description="Call a Python function."
)
