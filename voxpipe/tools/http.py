"""``kind: http``: call a web endpoint with the model's arguments and hand its JSON reply back to the model.

The arguments travel only as URL-encoded query parameters (GET, DELETE) or as the JSON body: never into the
URL's path or the headers, which hold the deployment's credentials. The reply is bounded twice: the request
gives up after ``request_timeout_secs`` (connection closed, not just abandoned) and a body larger than
``max_response_bytes`` is refused as it streams in, so a hostile or broken endpoint can neither hang the
call nor fill the server's memory. Redirects are not followed unless ``follow_redirects: true``: the
deployment names the endpoint it trusts, and a redirect could point the server (and its headers) at an
internal address whose reply the model would read out to the caller.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolHandler, ToolKind
from voxpipe.tools.runner import ToolCallFailed


class HttpToolOptions(ProviderOptions):
    url: str = Field(description="Endpoint URL; may contain ${VAR}.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers; put secrets in as ${VAR} from the environment."
    )
    request_timeout_secs: float = Field(10.0, gt=0, description="Seconds for the whole request, reply included.")
    max_response_bytes: int = Field(256 * 1024, gt=0, description="Largest reply body accepted, in bytes.")
    follow_redirects: bool = Field(False, description="Follow 3xx redirects (off: a redirect is a failed call).")


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


def build(name: str, options: HttpToolOptions) -> ToolHandler:
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


HTTP = ToolKind(name="http", options=HttpToolOptions, build=build, description="Call an HTTP endpoint.")
