"""``kind: mock``: a stand-in tool that returns a fixed ``result``, for bench scenarios.

An eval must not book real slots or page real people: a scenario adds the tools it exercises as mocks (its
``tools:`` section), and judges whether and how the agent called them. Registered through the plugin hook
like every tool kind, so a deployment may use it too (a demo without a backend).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolHandler, ToolKind, hookimpl


class MockToolOptions(ProviderOptions):
    result: Any = Field(default_factory=lambda: {"status": "ok"}, description="What every call returns (JSON).")


def build(name: str, options: MockToolOptions) -> ToolHandler:
    async def call(arguments: dict[str, Any]) -> Any:
        return options.result

    return call


MOCK = ToolKind(name="mock", options=MockToolOptions, build=build, description="Return a fixed result.")


@hookimpl
def voxpipe_tool_kinds() -> list[ToolKind]:
    return [MOCK]
