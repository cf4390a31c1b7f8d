"""Registers voxpipe's tool kinds through the plugin hook, as any third-party plugin would."""

from voxpipe.providers.spec import ToolKind, hookimpl
from voxpipe.tools.call_control import END_CALL, TRANSFER
from voxpipe.tools.http import HTTP
from voxpipe.tools.python import PYTHON


@hookimpl
def voxpipe_tool_kinds() -> list[ToolKind]:
    return [HTTP, PYTHON, END_CALL, TRANSFER]
