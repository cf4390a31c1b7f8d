"""``kind: http``: call a web endpoint with the model's arguments and hand its JSON reply back to the model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolHandler, ToolKind


class HttpToolOptions(ProviderOptions):
    url: str = Field(description="Endpoint URL; may contain ${VAR}.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers; put secrets in as ${VAR} from the environment."
    )


class ToolCallFailed(Exception):
    """The tool ran but failed; its message is returned to the model."""


def build(name: str, options: HttpToolOptions) -> ToolHandler:
    async def call(arguments: dict[str, Any]) -> Any:
        import aiohttp  # pipecat dependency; imported lazily to keep `voxpipe validate` light

        as_query = options.method in ("GET", "DELETE")
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                options.method,
                options.url,
                headers=options.headers,
                params={k: str(v) for k, v in arguments.items()} if as_query else None,
                json=None if as_query else arguments,
            ) as response,
        ):
            body = await response.text()
            if response.status >= 400:
                raise ToolCallFailed(f"HTTP {response.status} from {name}: {body[:200]}")
            if response.content_type == "application/json":
                return await response.json()
            return {"text": body}

    return call


HTTP = ToolKind(name="http", options=HttpToolOptions, build=build, description="Call an HTTP endpoint.")
