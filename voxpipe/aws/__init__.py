"""AWS without boto3: one botocore client per process, service, endpoint and region, and error codes.

Shared by the Lambda handlers (``voxpipe.serverless``) and ``voxpipe serve``'s DynamoDB session store. botocore
is used without boto3 because boto3's import (s3transfer) alone adds ~60 ms to a Lambda cold start.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_CLIENTS: dict[tuple[str, str | None, str | None], Any] = {}
_CLIENTS_LOCK = threading.Lock()
_SESSION: list[Any] = []  # one botocore session per process: its clients share the loaded endpoint data


def aws_client(service: str, endpoint_url: str | None = None, region: str | None = None, **config: Any) -> Any:
    """A botocore client, made once per process, endpoint and region (clients are thread-safe; making one is not).

    The region defaults to the Lambda's (``$AWS_REGION``). ``config`` is passed to ``botocore.config.Config``
    (timeouts, retries) when the client is made.
    """
    # botocore's own endpoint variables, resolved here so that a changed environment gets a new client
    variable = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")
    endpoint_url = endpoint_url or os.environ.get(variable) or os.environ.get("AWS_ENDPOINT_URL")
    key = (service, endpoint_url, region)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import botocore.session
            from botocore.config import Config

            if not _SESSION:
                _SESSION.append(botocore.session.get_session())
            session = _SESSION[0]
            region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            client = session.create_client(
                service, region_name=region, endpoint_url=endpoint_url, config=Config(**config) if config else None
            )
            _CLIENTS[key] = client
    return client


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (empty for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
