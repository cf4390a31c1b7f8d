"""``kind: http``: call a web endpoint with the model's arguments and hand its JSON reply back to the model.

The arguments travel only as URL-encoded query parameters (GET, DELETE) or as the JSON body: never into the
URL's path or the headers, which hold the deployment's credentials. The reply is bounded twice: the request
gives up after ``request_timeout_secs`` (connection closed, not just abandoned) and a body larger than
``max_response_bytes`` is refused as it streams in, so a hostile or broken endpoint can neither hang the
call nor fill the server's memory. Redirects are not followed unless ``follow_redirects: true``: the
deployment names the endpoint it trusts, and a redirect could point the server (and its headers) at an
internal address whose reply the model would read out to the caller.

The handler is ``handlers.http`` (pydantic-free, so the Lambda relay runs it too); this module holds its options.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxpipe.providers.spec import ProviderOptions, ToolKind
from voxpipe.tools import handlers


class HttpToolOptions(ProviderOptions):
    url: str = Field(description="Endpoint URL; may contain ${VAR}.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers; put secrets in as ${VAR} from the environment."
    )
    request_timeout_secs: float = Field(10.0, gt=0, description="Seconds for the whole request, reply included.")
    max_response_bytes: int = Field(256 * 1024, gt=0, description="Largest reply body accepted, in bytes.")
    follow_redirects: bool = Field(False, description="Follow 3xx redirects (off: a redirect is a failed call).")


HTTP = ToolKind(name="http", options=HttpToolOptions, build=handlers.http, description="Call an HTTP endpoint.")
