"""What kind of failure an SDK exception is, in pipecat's ``ErrorCategory`` (part of the public provider SDK).

A fallback switches on the category of an error: a 429 or a cut stream moves the call to the next provider,
a bad request does not. pipecat reads a status code where an exception carries one; the SDKs that do not
(a cut WebSocket, a botocore error inside an event stream) are classified here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipecat.utils.errors import ErrorCategory

#: Exception classes (by name, anywhere in the MRO) that mean the vendor could not be reached or the stream
#: broke: SDK timeouts, refused or reset connections, a WebSocket or HTTP stream cut mid-response.
CONNECTIVITY_ERRORS = frozenset(
    {
        "APIConnectionError",  # openai (APITimeoutError too)
        "TransportError",  # httpx / httpx2: RemoteProtocolError, ReadTimeout, ConnectError...
        "ConnectionClosed",  # websockets
        "ClientConnectionError",  # aiohttp (ServerDisconnectedError too)
        "ClientPayloadError",  # aiohttp: a body cut short
        "ServerTimeoutError",  # aiohttp
        "HTTPClientError",  # botocore: EndpointConnectionError, ReadTimeoutError, ConnectTimeoutError...
    }
)

#: AWS error codes (botocore ``ClientError``, including errors sent inside an event stream) -> category name.
AWS_CODES = {
    "ThrottlingException": "RATE_LIMIT",
    "TooManyRequestsException": "RATE_LIMIT",
    "ServiceQuotaExceededException": "QUOTA",
    "UnrecognizedClientException": "AUTHENTICATION",
    "InvalidSignatureException": "AUTHENTICATION",
    "ExpiredTokenException": "AUTHENTICATION",
    "AccessDeniedException": "AUTHORIZATION",
    "ValidationException": "INVALID_REQUEST",
    "ResourceNotFoundException": "INVALID_REQUEST",
    "ModelStreamErrorException": "SERVER",
    "ModelTimeoutException": "SERVER",
    "ModelNotReadyException": "SERVER",
    "InternalServerException": "SERVER",
    "ServiceUnavailableException": "SERVER",
}

#: Realtime ``error`` event code (or type) -> category name; any other error is a bad request.
REALTIME_ERRORS = {"invalid_api_key": "AUTHENTICATION", "rate_limit_exceeded": "RATE_LIMIT", "server_error": "SERVER"}


def classify(exception: BaseException) -> ErrorCategory | None:
    """The category of an SDK exception pipecat cannot read a status code from, or ``None``."""
    from pipecat.utils.errors import ErrorCategory, classify_http_status_code

    response = getattr(exception, "response", None)
    if isinstance(response, dict):  # botocore: the parsed error, not an HTTP response object
        code = str(response.get("Error", {}).get("Code") or "")
        name = AWS_CODES.get(code[:1].upper() + code[1:])  # in-stream errors are camelCase
        if name is not None:
            return ErrorCategory[name]
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return classify_http_status_code(status) if isinstance(status, int) else None
    if {cls.__name__ for cls in type(exception).__mro__} & CONNECTIVITY_ERRORS:
        return ErrorCategory.CONNECTIVITY
    return None


def realtime_error_category(code: str | None, type_: str | None) -> ErrorCategory:
    """The category of a Realtime ``error`` event, from its ``code`` or else its ``type``."""
    from pipecat.utils.errors import ErrorCategory

    name = REALTIME_ERRORS.get(code or "") or REALTIME_ERRORS.get(type_ or "", "INVALID_REQUEST")
    return ErrorCategory[name]
