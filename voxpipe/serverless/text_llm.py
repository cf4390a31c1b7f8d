"""An LLM's reply as streamed text, with tools, for the Lambda handlers: no pipecat, no pydantic.

The pipeline's LLM providers are pipecat services; a Lambda cannot afford pipecat's import, so this module
talks to the vendors' SDKs directly: Bedrock ``converse_stream`` (botocore) and OpenAI chat completions
(the ``openai`` SDK, imported only by deployments that use it). Conversations are kept in the standard
OpenAI-style messages pipecat's ``LLMContext`` uses, whatever the vendor, so a call's history reads the
same in DynamoDB whichever provider (or ``voxpipe serve``) wrote it.

The deployment's ``llm`` chain is honoured as a fallback: a provider that fails before its first token
hands the turn to the next one. Tools run through their kind's handler builder, named in the handler
configuration (``voxpipe.tools.handlers`` for the built-in kinds): no registry, no pydantic.

Slow tools are never silent: a round's tools run in threads, and if one with a filler has not answered after
its ``filler_after_secs``, the reply yields the filler (a ``Filler``, posted at once, ``last: false``) and goes
on with the answer when the tools have answered. The filler enters the conversation as the bot's words: the
text of the assistant message that made the tool calls (their results must follow that message, and the next
request must end with them, not with an assistant turn). One filler per round, the soonest due.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxpipe.aws import aws_client
from voxpipe.serverless import HandlerConfig, LLMSpec, ToolSpec

if TYPE_CHECKING:
    from voxpipe.redaction import Redactor

logger = logging.getLogger(__name__)

Message = dict[str, Any]
#: Tool rounds in one reply before the model must answer in words.
MAX_TOOL_ROUNDS = 4
#: Threads running one reply's tools (a round's tools run at once, so a filler can be said while they run).
_TOOL_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="voxpipe-relay-tool")


@dataclass
class Span:
    """When something of a reply ran (epoch seconds): an LLM request (``name``: the provider, ``detail``: the
    model) or a tool call (the tool, the call id); ``first``: an LLM's first piece; ``error`` if it failed."""

    name: str
    detail: str
    started: float
    first: float | None = None
    ended: float | None = None
    error: str | None = None
    usage: TokenUsage | None = None  # an LLM request's tokens, as the vendor reported them


@dataclass(frozen=True)
class TokenUsage:
    """What one LLM request consumed, as its vendor reports it at the end of the stream: ``input`` counts every
    prompt token, ``cached_input`` those of them read from the vendor's prompt cache."""

    input: int
    output: int
    cached_input: int = 0


class Filler(str):
    """Words said while a slow tool runs: posted at once, not held to be coalesced with what follows."""


@dataclass(frozen=True)
class ToolCall:
    """A function the model called: its id, name and JSON-encoded arguments."""

    id: str
    name: str
    arguments: str

    def message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


#: One vendor request: ``(system, messages, tools) -> text pieces and, last, the tool calls and the usage``.
StreamFn = Callable[[str, list[Message], tuple[ToolSpec, ...]], Iterator["str | ToolCall | TokenUsage"]]


# ------------------------------------------------------------------------------------------------ Bedrock


def _bedrock_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Standard messages -> Bedrock's: content blocks, strictly alternating roles, starting with the user."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role, blocks = message.get("role"), []
        text = message.get("content")
        if role == "tool":
            role = "user"
            blocks.append({"toolResult": {"toolUseId": message["tool_call_id"], "content": [_result_block(text)]}})
        elif isinstance(text, str) and text.strip():
            blocks.append({"text": text})
        for call in message.get("tool_calls") or []:
            function = call["function"]
            arguments = json.loads(function.get("arguments") or "{}")
            blocks.append({"toolUse": {"toolUseId": call["id"], "name": function["name"], "input": arguments}})
        if role not in ("user", "assistant") or not blocks:
            continue  # system prompts travel apart; an empty turn (a reply cut before a word) says nothing
        if out and out[-1]["role"] == role:
            out[-1]["content"] += blocks  # Bedrock rejects two turns of one role in a row: merge them
        else:
            out.append({"role": role, "content": blocks})
    if out and out[0]["role"] == "assistant":  # the greeting: Bedrock wants the user first
        out.insert(0, {"role": "user", "content": [{"text": "(The call connected.)"}]})
    return out


def _result_block(content: Any) -> dict[str, Any]:
    try:
        value = json.loads(content) if isinstance(content, str) else content
    except ValueError:
        value = content
    return {"json": value} if isinstance(value, dict) else {"text": str(content) or "(empty)"}


def bedrock_stream(spec: LLMSpec) -> StreamFn:
    """Bedrock Runtime ``converse_stream``; options ``region``, ``endpoint_url``, ``temperature``, ``max_tokens``."""
    options = spec.options
    client = aws_client(
        "bedrock-runtime",
        options.get("endpoint_url"),
        options.get("region"),
        connect_timeout=options.get("connect_timeout_secs", 10),
        read_timeout=options.get("response_timeout_secs", 15),
        retries={"max_attempts": 1 + int(options.get("max_retries", 0)), "mode": "standard"},
    )
    inference = {
        name: options[key]
        for key, name in (("max_tokens", "maxTokens"), ("temperature", "temperature"), ("top_p", "topP"))
        if options.get(key) is not None
    }

    def stream(
        system: str, messages: list[Message], tools: tuple[ToolSpec, ...]
    ) -> Iterator[str | ToolCall | TokenUsage]:
        request: dict[str, Any] = {
            "modelId": spec.model,
            "messages": _bedrock_messages(messages),
            "system": [{"text": system}],
        }
        if inference:
            request["inferenceConfig"] = inference
        if tools:
            request["toolConfig"] = {
                "tools": [
                    {"toolSpec": {"name": t.name, "description": t.description, "inputSchema": {"json": t.parameters}}}
                    for t in tools
                ]
            }
        events = client.converse_stream(**request)["stream"]
        calls: list[ToolCall] = []
        pending: dict[str, Any] | None = None
        usage: TokenUsage | None = None
        try:
            for event in events:
                if "contentBlockStart" in event and "toolUse" in event["contentBlockStart"]["start"]:
                    pending = {**event["contentBlockStart"]["start"]["toolUse"], "input": ""}
                elif "contentBlockDelta" in event:
                    delta = event["contentBlockDelta"]["delta"]
                    if delta.get("text"):
                        yield delta["text"]
                    elif "toolUse" in delta and pending is not None:
                        pending["input"] += delta["toolUse"].get("input", "")
                elif "contentBlockStop" in event and pending is not None:
                    calls.append(ToolCall(pending["toolUseId"], pending["name"], pending["input"] or "{}"))
                    pending = None
                elif "metadata" in event and "usage" in event["metadata"]:
                    tokens = event["metadata"]["usage"]
                    cached = tokens.get("cacheReadInputTokens", 0)
                    # (Bedrock counts the prompt's cache reads and writes apart from its inputTokens)
                    prompt = tokens.get("inputTokens", 0) + cached + tokens.get("cacheWriteInputTokens", 0)
                    usage = TokenUsage(prompt, tokens.get("outputTokens", 0), cached)
        finally:
            events.close()  # an abandoned reply (interrupt, gone caller) releases its connection
        yield from calls
        if usage is not None:
            yield usage

    return stream


# ------------------------------------------------------------------------------------------------ OpenAI

_OPENAI_CLIENTS: dict[tuple[Any, ...], Any] = {}


def openai_stream(spec: LLMSpec) -> StreamFn:
    """OpenAI chat completions (or any compatible ``base_url``), streamed, with the ``openai`` SDK."""
    options = spec.options
    key = (options.get("api_key"), options.get("base_url"), options.get("max_retries", 0))
    client = _OPENAI_CLIENTS.get(key)
    if client is None:
        from openai import OpenAI, Timeout

        client = _OPENAI_CLIENTS[key] = OpenAI(
            api_key=options.get("api_key"),
            base_url=options.get("base_url"),
            timeout=Timeout(options.get("response_timeout_secs", 15), connect=options.get("connect_timeout_secs", 10)),
            max_retries=int(options.get("max_retries", 0)),
        )
    sampling = {k: options[k] for k in ("temperature", "max_completion_tokens") if options.get(k) is not None}

    def stream(
        system: str, messages: list[Message], tools: tuple[ToolSpec, ...]
    ) -> Iterator[str | ToolCall | TokenUsage]:
        extra: dict[str, Any] = dict(sampling)
        if tools:
            extra["tools"] = [{"type": "function", "function": _function(t)} for t in tools]
        chunks = client.chat.completions.create(
            model=spec.model,
            messages=[{"role": "system", "content": system}, *messages],
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        calls: dict[int, dict[str, str]] = {}
        usage: TokenUsage | None = None
        with chunks:
            for chunk in chunks:
                if chunk.usage is not None:  # the last chunk, with no choices (stream_options.include_usage)
                    details = chunk.usage.prompt_tokens_details
                    cached = (details.cached_tokens or 0) if details is not None else 0
                    usage = TokenUsage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens, cached)
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield choice.delta.content
                    for fragment in choice.delta.tool_calls or []:
                        call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = fragment.id or call["id"]
                        if fragment.function is not None:
                            call["name"] += fragment.function.name or ""
                            call["arguments"] += fragment.function.arguments or ""
        yield from (ToolCall(c["id"], c["name"], c["arguments"] or "{}") for _, c in sorted(calls.items()))
        if usage is not None:
            yield usage

    return stream


def _function(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "parameters": tool.parameters}


#: The providers whose text this module can stream, by the deployment's provider name.
STREAMERS: dict[str, Callable[[LLMSpec], StreamFn]] = {"bedrock": bedrock_stream, "openai": openai_stream}


# ------------------------------------------------------------------------------------------------ tools


def run_tool(tool: ToolSpec, arguments: dict[str, Any]) -> Any:
    """Run one tool through its kind's handler builder; failures and timeouts become ``{"error": ...}``.

    The options were validated (and defaults filled) when the deployment was built, so the builder gets
    them as a plain namespace: neither the registry nor pydantic is imported.
    """
    import asyncio
    from types import SimpleNamespace

    from voxpipe.tools.handlers import resolve
    from voxpipe.tools.runner import run_tool as run
    from voxpipe.tools.runner import tool_error

    try:
        handler = resolve(tool.builder)(tool.name, SimpleNamespace(**tool.options))
    except Exception as exc:
        return tool_error(tool.name, f"failed: {exc}")
    return asyncio.run(run(tool.name, handler, arguments, tool.timeout_secs, tool.parameters))  # strict arguments


# ------------------------------------------------------------------------------------------------ a reply


class Reply:
    """One assistant reply to ``history``: iterate it for the text to speak, then read what it produced.

    After iteration (complete or abandoned): ``messages`` are the new messages to store (assistant turns,
    tool calls and results, in order), ``effects`` the call-level effects of successful tools
    (``("end_call", {...})``, ``("transfer", {...})``).
    """

    def __init__(self, config: HandlerConfig, history: list[Message], redactor: Redactor | None = None):
        """``redactor``: learns the arguments of ``sensitive`` tools, so that they are never stored or logged."""
        self.config = config
        self.history = list(history)
        self.redactor = redactor
        self.messages: list[Message] = []
        self.effects: list[tuple[str, dict[str, Any]]] = []
        self.fillers: list[dict[str, Any]] = []  # each filler said: tool, text, delay_secs, at_ms (epoch ms)
        self.requests: list[Span] = []  # each LLM request (a failed one included), for traces
        self.tool_runs: list[Span] = []  # each tool call, for traces
        self._tools = {tool.name: tool for tool in config.tools}

    def __iter__(self) -> Iterator[str]:
        for _ in range(MAX_TOOL_ROUNDS + 1):
            text: list[str] = []
            assistant: Message = {"role": "assistant", "content": ""}
            self.messages.append(assistant)
            calls: list[ToolCall] = []
            for piece in self._stream():
                if isinstance(piece, TokenUsage):
                    self.requests[-1].usage = piece
                    continue
                if isinstance(piece, ToolCall):
                    calls.append(piece)
                    continue
                text.append(piece)
                assistant["content"] = "".join(text)
                yield piece
            if not calls:
                return
            assistant["tool_calls"] = [call.message() for call in calls]
            yield from self._run_tools(calls, assistant)
        logger.warning("reply stopped after %d tool rounds", MAX_TOOL_ROUNDS)

    def _stream(self) -> Iterator[str | ToolCall | TokenUsage]:
        """This round's pieces from the first provider of the chain that answers."""
        messages = self.history + self.messages[:-1]
        tools = self.config.tools
        for index, spec in enumerate(self.config.llm):
            started = False
            request = Span(spec.provider, spec.model or "", time.time())
            self.requests.append(request)
            try:
                for piece in STREAMERS[spec.provider](spec)(self.config.instructions, messages, tools):
                    if not started:
                        started, request.first = True, time.time()
                    yield piece
                return
            except Exception as exc:
                request.error = f"{type(exc).__name__}: {exc}"
                if started or index == len(self.config.llm) - 1:
                    raise
                logger.exception("llm %s failed before answering; falling back", spec.provider)
            finally:
                request.ended = time.time()

    def _run_tools(self, calls: list[ToolCall], assistant: Message) -> Generator[str, None, None]:
        """Run a round's tools at once; yield the filler if one is due before they all answered."""
        started = time.monotonic()
        futures = [_TOOL_POOL.submit(self._call, call) for call in calls]
        due = [
            (t.filler_after_secs or 0.0, t.filler, t.name) for c in calls if (t := self._tools.get(c.name)) and t.filler
        ]
        if due:
            after, said, name = min(due)
            if wait(futures, timeout=after).not_done:
                delay = round(time.monotonic() - started, 3)
                logger.info("tool %s still running after %.2fs: filler %r", name, delay, said)
                self.fillers.append({"tool": name, "text": said, "delay_secs": delay, "at_ms": int(time.time() * 1000)})
                yield Filler((" " if assistant["content"] else "") + said + " ")  # apart from the words around it
                assistant["content"] = " ".join(filter(None, (assistant["content"], said)))
        self.messages += [future.result() for future in futures]

    def _call(self, call: ToolCall) -> Message:
        run = Span(call.name, call.id, time.time())
        self.tool_runs.append(run)
        try:
            return self._run(call, run)
        finally:
            run.ended = time.time()

    def _run(self, call: ToolCall, run: Span) -> Message:
        tool = self._tools.get(call.name)
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            arguments = None
        if tool is not None and tool.sensitive and self.redactor is not None:
            self.redactor.add_secret(arguments)
        if tool is None or not isinstance(arguments, dict):
            result: Any = {"error": f"no tool {call.name!r} takes arguments {call.arguments}"}
        else:
            result = run_tool(tool, arguments)
            if isinstance(result, dict) and "error" in result:
                run.error = "the tool failed"  # its message may quote the caller: not exported
            if tool.effect and not (isinstance(result, dict) and "error" in result):
                self.effects.append((tool.effect, arguments | {"result": result}))
        return {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result, ensure_ascii=False)}


def summarise(config: HandlerConfig, messages: list[Message]) -> str | None:
    """The LLM's summary of the call so far, for the person a warm transfer rings (``None`` if none came).

    Asked of the chain in order (a tool the model calls instead is ignored); a transfer goes ahead without a
    summary rather than not at all.
    """
    from voxpipe.telephony.warm_transfer import SUMMARY_REQUEST

    request = [*messages, {"role": "user", "content": SUMMARY_REQUEST}]
    for spec in config.llm:
        try:
            # with the tools: a history holding tool calls needs them declared (Bedrock refuses it otherwise)
            pieces = STREAMERS[spec.provider](spec)(config.instructions, request, config.tools)
            text = "".join(piece for piece in pieces if isinstance(piece, str)).strip()
        except Exception as exc:
            logger.warning("warm transfer: no summary from %s (%r)", spec.provider, exc)
            continue
        return text or None
    return None
