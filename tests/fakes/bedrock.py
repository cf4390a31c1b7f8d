"""Fake AWS Bedrock Runtime: `POST /model/{modelId}/converse-stream` (and `/converse`).

Point boto3/aiobotocore at it with `endpoint_url=fake.url` or `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`.

- Requests must be SigV4-signed for the `bedrock` service (`Authorization: AWS4-HMAC-SHA256
  Credential=<key>/<date>/<region>/bedrock/aws4_request, SignedHeaders=..., Signature=...` plus
  `X-Amz-Date`); the signature itself is not verified, the shape, service and access key are.
  `Behaviour.api_key` is the expected access key id.
- The body is validated with botocore's own `ParamValidator` against the service model (unknown
  keys, tagged unions, required members), then the rules Bedrock adds: the conversation starts
  with a user message and alternates roles, no empty content or blank text, `toolConfig` present
  whenever `toolUse`/`toolResult` blocks are, and every `toolResult` answers a `toolUse` of the
  previous assistant turn. Violations get 400 `ValidationException`.
- The reply streams in AWS event-stream binary framing (`encode_message`, proven with botocore's
  `EventStreamBuffer` in the tests): messageStart, contentBlockDelta{text}, or contentBlockStart
  {toolUse} + contentBlockDelta{toolUse.input} + contentBlockStop, messageStop{stopReason},
  metadata{usage, metrics}. Payloads carry Bedrock's `p` padding field.
- Errors: pre-stream via HTTP status + `x-amzn-ErrorType` + `{"message": ...}` (`Behaviour.fail_status`
  429/400/403/500/503...), or in-stream with an exception frame (`BedrockBehaviour.stream_exception`),
  and a corrupted message CRC (`BedrockBehaviour.corrupt_crc`) for parser tests.

`fake.connections` counts distinct TCP connections, so a test can prove a client is reused.
"""

from __future__ import annotations

import binascii
import dataclasses
import functools
import json
import math
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import botocore.session
from aiohttp import web
from botocore.model import ServiceModel
from botocore.validate import ParamValidator

from .base import Behaviour, FakeServer, StreamCut, run_cli
from .script import ReplySpec, Script, ToolCall, ToolResult, Turn, count_tokens, new_id

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=(?P<sig>[0-9a-f]{64})$"
)
ERROR_STATUS = {
    400: ("ValidationException", "Malformed input request, please reformat your input and try again."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The requested resource could not be found."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model encountered an error processing the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error while processing the request."),
    503: ("ServiceUnavailableException", "The service is temporarily unable to handle the request."),
}


@functools.cache
def _service_model() -> ServiceModel:
    """botocore's model of the bedrock-runtime API (loaded on first use)."""
    return botocore.session.get_session().get_service_model("bedrock-runtime")


def encode_headers(headers: dict[str, str]) -> bytes:
    """Event-stream headers, all of type string (7): name length u8, name, 7, value length u16 BE, value."""
    out = bytearray()
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        out += struct.pack("B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes, corrupt_crc: bool = False) -> bytes:
    """One AWS event-stream message: prelude (total u32, headers u32, CRC32), headers, payload, CRC32."""
    encoded = encode_headers(headers)
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF) + encoded + payload
    crc = binascii.crc32(message) & 0xFFFFFFFF
    if corrupt_crc:
        crc ^= 0x5A5A5A5A
    return message + struct.pack(">I", crc)


def event_frame(event_type: str, body: dict[str, Any], corrupt_crc: bool = False) -> bytes:
    """A Bedrock `:message-type: event` frame with a JSON payload (with Bedrock's `p` padding)."""
    payload = dict(body)
    payload["p"] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"[: 1 + len(json.dumps(body)) % 50]
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps(payload, separators=(",", ":")).encode(), corrupt_crc)


def exception_frame(exception_type: str, message: str) -> bytes:
    """A `:message-type: exception` frame (e.g. modelStreamErrorException)."""
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    body: dict[str, Any] = {"message": message}
    if exception_type == "modelStreamErrorException":
        body.update(originalStatusCode=500, originalMessage="The model stopped unexpectedly.")
    return encode_message(headers, json.dumps(body).encode())


def aws_error(status: int, error_type: str, message: str, namespace: str = "com.amazon.bedrock") -> web.Response:
    """A pre-stream AWS error: status, `x-amzn-ErrorType` and a JSON `{"message"}` body."""
    headers = {
        "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/{namespace}/",
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    return web.json_response({"message": message}, status=status, headers=headers)


@dataclass
class BedrockBehaviour(Behaviour):
    """`Behaviour` plus Bedrock's stream faults.

    Attributes:
        corrupt_crc: corrupt the message CRC of the first event frame (botocore must reject it).
        stream_exception: an in-stream exception type (e.g. "modelStreamErrorException",
            "throttlingException") sent after `stream_exception_after` frames, ending the stream.
        stream_exception_after: how many event frames precede the exception frame.
    """

    corrupt_crc: bool = False
    stream_exception: str | None = None
    stream_exception_after: int = 2


class BedrockValidationError(Exception):
    """A request Bedrock rejects with 400 ValidationException."""


def _block_text(block: dict[str, Any]) -> str:
    if "text" in block:
        return str(block["text"])
    if "json" in block:
        return json.dumps(block["json"])
    return ""


class FakeBedrock(FakeServer):
    """Fake Bedrock Runtime converse / converse-stream server.

    Args:
        behaviour: common knobs (`api_key` is the expected AWS access key id); a plain `Behaviour`
            is upgraded to a `BedrockBehaviour`, so `fake.behaviour.corrupt_crc` etc. always exist.
        replies: reply script (see `script.py`); each `Turn.raw` is the request body.
        region: if given, the SigV4 credential scope must name this region.
        models: if given, only these model ids exist (others get ResourceNotFoundException).
    """

    name = "bedrock"
    behaviour: BedrockBehaviour

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        replies: ReplySpec = None,
        region: str | None = None,
        models: set[str] | None = None,
    ) -> None:
        if not isinstance(behaviour, BedrockBehaviour):
            behaviour = BedrockBehaviour(**dataclasses.asdict(behaviour or Behaviour()))
        super().__init__(behaviour)
        self.script = Script(replies)
        self.region = region
        self.models = models
        self._cache_prefixes: set[str] = set()
        self.usages: list[dict[str, int]] = []  # the usage of each stream finished, as sent in its metadata

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/model/{model_id}/converse-stream", self.converse_stream)
        app.router.add_post("/model/{model_id}/converse", self.converse)

    async def handle_unknown_route(self, request: web.Request) -> web.StreamResponse:
        self.record("http", method=request.method, path=request.path, headers=self.headers_of(request))
        self.violation(f"unknown route {request.method} {request.path}")
        return aws_error(404, "UnknownOperationException", "", "com.amazon.coral.service")

    # ------------------------------------------------------------------ request checks

    def _auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if not header:
            self.violation("bedrock: no Authorization header")
            return aws_error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token", "com.amazon.coral.service"
            )
        match = AUTH_RE.match(header)
        if match is None:
            self.violation(f"bedrock: malformed SigV4 Authorization header {header[:80]!r}")
            return aws_error(
                403,
                "IncompleteSignatureException",
                f"Authorization header requires 'Credential', "
                f"'Signature' and 'SignedHeaders' parameters. Authorization={header[:40]}",
                "com.amazon.coral.service",
            )
        if match["service"] != "bedrock":
            self.violation(f"bedrock: SigV4 scoped to service {match['service']!r}")
            return aws_error(
                403,
                "InvalidSignatureException",
                "Credential should be scoped to correct service: 'bedrock'. ",
                "com.amazon.coral.service",
            )
        if self.region and match["region"] != self.region:
            self.violation(f"bedrock: SigV4 scoped to region {match['region']!r}")
            return aws_error(
                403,
                "InvalidSignatureException",
                "Credential should be scoped to a valid region. ",
                "com.amazon.coral.service",
            )
        amz_date = request.headers.get("X-Amz-Date", "")
        signed = match["signed"].split(";")
        if not amz_date.startswith(match["date"]) or "host" not in signed or "x-amz-date" not in signed:
            self.violation("bedrock: X-Amz-Date missing, unsigned or not matching the credential scope")
            return aws_error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
                "com.amazon.coral.service",
            )
        if not self.key_ok(match["key"]):
            self.violation(f"bedrock: unknown access key {match['key']!r}")
            return aws_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                "com.amazon.coral.service",
            )
        return None

    def _validate(self, operation: str, body: dict[str, Any], model_id: str) -> None:
        shape = _service_model().operation_model(operation).input_shape
        report = ParamValidator().validate({**body, "modelId": model_id}, shape)
        if report.has_errors():
            raise BedrockValidationError(report.generate_report())
        messages = body.get("messages") or []
        uses = any("toolUse" in b or "toolResult" in b for m in messages for b in m.get("content", []))
        if uses and "toolConfig" not in body:
            raise BedrockValidationError(
                "The toolConfig field must be defined when using toolUse and toolResult content blocks."
            )
        if messages and messages[0]["role"] != "user":
            raise BedrockValidationError(
                "A conversation must start with a user message. Try again with a "
                "conversation that starts with a user message."
            )
        pending: list[str] = []
        for i, message in enumerate(messages):
            if i and message["role"] == messages[i - 1]["role"]:
                raise BedrockValidationError(
                    "A conversation must alternate between user and assistant roles. Make "
                    "sure the conversation alternates between user and assistant roles and "
                    "try again."
                )
            if not message["content"]:
                raise BedrockValidationError(
                    f"The content field in the Message object at messages.{i} is empty. Add "
                    "a ContentBlock object to the content field and try again."
                )
            for j, block in enumerate(message["content"]):
                if "text" in block and not str(block["text"]).strip():
                    raise BedrockValidationError(
                        f"The text field in the ContentBlock object at messages.{i}.content."
                        f"{j} is blank. Add text to the text field, and try again."
                    )
            results = [b["toolResult"]["toolUseId"] for b in message["content"] if "toolResult" in b]
            if message["role"] == "user":
                if len(results) > len(pending):
                    raise BedrockValidationError(
                        f"The number of toolResult blocks at messages.{i}.content exceeds "
                        "the number of toolUse blocks of previous turn."
                    )
                missing = [u for u in pending if u not in results]
                if missing:
                    raise BedrockValidationError(
                        f"Expected toolResult blocks at messages.{i}.content for the "
                        f"following Ids: {', '.join(missing)}"
                    )
                pending = []
            else:
                pending = [b["toolUse"]["toolUseId"] for b in message["content"] if "toolUse" in b]
        tools = [t["toolSpec"]["name"] for t in (body.get("toolConfig") or {}).get("tools", []) if "toolSpec" in t]
        if len(tools) != len(set(tools)):
            raise BedrockValidationError("The toolConfig field contains duplicate tool names.")
        choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
        if "tool" in choice and choice["tool"].get("name") not in tools:
            raise BedrockValidationError(f"The tool {choice['tool'].get('name')} named in toolChoice is not defined.")
        config = body.get("inferenceConfig") or {}
        for key in ("temperature", "topP"):
            if key in config and not 0 <= config[key] <= 1:
                raise BedrockValidationError(
                    f"1 validation error detected: Value '{config[key]}' at "
                    f"'inferenceConfig.{key}' failed to satisfy constraint: Member must "
                    "have value less than or equal to 1"
                )

    async def _prepare(self, request: web.Request, operation: str) -> tuple[dict[str, Any], str] | web.Response:
        """Journal, auth, injected failures and validation; the body and model id, or an error response."""
        model_id = unquote(request.match_info["model_id"])
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        self.record(
            "http",
            method=request.method,
            path=request.path,
            headers=self.headers_of(request),
            json=body,
            model_id=model_id,
        )
        if (denied := self._auth_error(request)) is not None:
            return denied
        status = self.take_failure()
        if status is not None:
            error_type, message = ERROR_STATUS.get(status, ("InternalServerException", f"Failed with {status}."))
            return aws_error(status, error_type, message)
        if not isinstance(body, dict):
            self.violation("bedrock: body is not a JSON object")
            return aws_error(
                400,
                "SerializationException",
                "Start of structure or map found where not expected.",
                "com.amazon.coral.service",
            )
        if self.models is not None and model_id not in self.models:
            return aws_error(404, "ResourceNotFoundException", f"Model {model_id} not found.")
        try:
            self._validate(operation, body, model_id)
        except BedrockValidationError as err:
            self.violation(f"bedrock: {err}")
            return aws_error(400, "ValidationException", str(err))
        return body, model_id

    # ------------------------------------------------------------------ replies

    def _turn(self, index: int, body: dict[str, Any]) -> Turn:
        messages = body.get("messages") or []
        last_user = None
        for message in reversed(messages):
            texts = [b["text"] for b in message["content"] if "text" in b]
            if message["role"] == "user" and texts:
                last_user = " ".join(texts)
                break
        names = {
            b["toolUse"]["toolUseId"]: b["toolUse"]["name"] for m in messages for b in m["content"] if "toolUse" in b
        }
        results: list[ToolResult] = []
        if messages and messages[-1]["role"] == "user":
            for block in messages[-1]["content"]:
                if "toolResult" in block:
                    tr = block["toolResult"]
                    output = "".join(_block_text(c) for c in tr.get("content", []))
                    results.append(ToolResult(tr["toolUseId"], output, names.get(tr["toolUseId"])))
        return Turn(index, body, last_user, results)

    def _usage(self, body: dict[str, Any], text: str, calls: list[ToolCall]) -> dict[str, int]:
        system, tools = body.get("system") or [], (body.get("toolConfig") or {}).get("tools") or []
        prompt = count_tokens(json.dumps([system, tools, body.get("messages") or []]))
        output = count_tokens(text) + sum(count_tokens(c.name + c.arguments_json()) for c in calls)
        read = write = 0
        prefix: list[Any] = []
        for block in [*system, *tools]:
            if "cachePoint" in block:
                key = json.dumps(prefix, sort_keys=True)
                tokens = count_tokens(key)
                if key in self._cache_prefixes:
                    read = tokens
                else:
                    write, read = tokens, 0
                    self._cache_prefixes.add(key)
            else:
                prefix.append(block)
        return {
            "inputTokens": prompt - read - write,
            "outputTokens": output,
            "totalTokens": prompt + output,
            "cacheReadInputTokens": read,
            "cacheWriteInputTokens": write,
        }

    def _reply(self, body: dict[str, Any]) -> tuple[str, list[ToolCall]]:
        reply = self.script.next(lambda i: self._turn(i, body))
        calls = [ToolCall(c.name, c.arguments, c.id or new_id("tooluse_", 22)) for c in reply.tool_calls]
        return reply.text, calls

    async def converse(self, request: web.Request) -> web.StreamResponse:
        prepared = await self._prepare(request, "Converse")
        if isinstance(prepared, web.Response):
            return prepared
        body, _ = prepared
        text, calls = self._reply(body)
        await self.first_byte_delay()
        content: list[dict[str, Any]] = [{"text": text}] if text else []
        content += [
            {"toolUse": {"toolUseId": c.id, "name": c.name, "input": json.loads(c.arguments_json())}} for c in calls
        ]
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": "tool_use" if calls else "end_turn",
                "usage": self._usage(body, text, calls),
                "metrics": {"latencyMs": 123},
            },
            headers={"x-amzn-RequestId": str(uuid.uuid4())},
        )

    async def converse_stream(self, request: web.Request) -> web.StreamResponse:
        prepared = await self._prepare(request, "ConverseStream")
        if isinstance(prepared, web.Response):
            return prepared
        body, _ = prepared
        started = time.monotonic()
        text, calls = self._reply(body)
        frames: list[bytes] = [event_frame("messageStart", {"role": "assistant"})]
        index = 0
        if text:
            frames += [
                event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                for piece in re.findall(r"\S+\s*|\s+", text)
            ]
            frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
            index = 1
        for call in calls:
            frames.append(
                event_frame(
                    "contentBlockStart",
                    {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": call.id, "name": call.name}}},
                )
            )
            args = call.arguments_json()
            step = max(1, math.ceil(len(args) / 3))
            frames += [
                event_frame(
                    "contentBlockDelta",
                    {"contentBlockIndex": index, "delta": {"toolUse": {"input": args[i : i + step]}}},
                )
                for i in range(0, len(args), step)
            ]
            frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        frames.append(event_frame("messageStop", {"stopReason": "tool_use" if calls else "end_turn"}))
        usage = self._usage(body, text, calls)
        faults = self.behaviour
        if faults.corrupt_crc:
            frames[0] = event_frame("messageStart", {"role": "assistant"}, corrupt_crc=True)
        if faults.stream_exception:
            frames = frames[: faults.stream_exception_after]
            frames.append(exception_frame(faults.stream_exception, "The model stream was interrupted."))

        await self.first_byte_delay()
        response = web.StreamResponse(
            headers={"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": str(uuid.uuid4())}
        )
        await response.prepare(request)
        try:
            for sent, frame in enumerate(frames):
                await self.chunk_pacing(sent, request)
                await response.write(frame)
            if not faults.stream_exception:
                latency = int((time.monotonic() - started) * 1000)
                await response.write(event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": latency}}))
                self.usages.append(usage)
            await response.write_eof()
        except (StreamCut, ConnectionError):
            pass
        return response


if __name__ == "__main__":
    run_cli(FakeBedrock())
