"""The scripted "model" shared by ``testkit_llm`` and ``testkit_realtime``: rules in, replies or tool calls out.

A rule ``{when, say}`` answers any user message containing ``when`` (case-insensitive; ``"*"`` matches all).
A rule with ``tool_call`` first calls that function; once the tool's result is in the context the model
answers with ``say`` (default ``"The result is {result}"``). Templates may use ``{user}`` (the last user
message), ``{result}`` (the tool result: a string as-is, anything else as compact JSON) and
``{result.key.subkey}`` (a field of a JSON object result).

Pure Python and pydantic: importing this module never imports pipecat.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_AFTER_TOOL = "The result is {result}"
_PLACEHOLDER = re.compile(r"\{(user|result)((?:\.[A-Za-z0-9_]+)*)\}")


class ToolCallSpec(BaseModel):
    """A function call the scripted model makes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name of a function registered on the service (a deployment tool).")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Arguments passed to the function.")


class ReplyRule(BaseModel):
    """``when`` the last user message contains this text, ``say`` this and/or make this ``tool_call``."""

    model_config = ConfigDict(extra="forbid")

    when: str = Field("*", description='Substring of the last user message (case-insensitive), or "*" for any.')
    say: str | None = Field(
        None, description="Reply text; after a tool call, the answer given once the result is in ({result})."
    )
    tool_call: ToolCallSpec | None = Field(None, description="Call this function before answering.")

    @model_validator(mode="after")
    def _says_or_calls(self) -> ReplyRule:
        if self.say is None and self.tool_call is None:
            raise ValueError("a reply rule needs 'say', 'tool_call' or both")
        return self

    def matches(self, user_text: str) -> bool:
        return self.when == "*" or self.when.lower() in user_text.lower()


@dataclass(frozen=True)
class Say:
    """Decision: speak ``text``."""

    text: str


@dataclass(frozen=True)
class CallTool:
    """Decision: call ``spec`` (the answer comes on the next inference, after the result)."""

    spec: ToolCallSpec


def message_text(message: Any) -> str:
    """The text of a standard context message (string content or a list of text parts)."""
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def render(template: str, *, user: str = "", result: Any = None) -> str:
    """Fill ``{user}``, ``{result}`` and ``{result.a.b}``; other braces are left as they are."""

    def substitute(match: re.Match[str]) -> str:
        name, path = match.group(1), match.group(2)
        value: Any = user if name == "user" else result
        for key in filter(None, path.split(".")):
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            return value
        return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)

    return _PLACEHOLDER.sub(substitute, template)


def decode_tool_result(content: str) -> Any:
    """pipecat stores tool results in the context as JSON text; decode it when it is JSON."""
    try:
        return json.loads(content)
    except (TypeError, ValueError):
        return content


class Script:
    """The rules of one service, and what they answer to a conversation."""

    def __init__(self, rules: Sequence[ReplyRule], default_reply: str):
        self.rules = list(rules)
        self.default_reply = default_reply

    def rule_for(self, user_text: str) -> ReplyRule | None:
        return next((rule for rule in self.rules if rule.matches(user_text)), None)

    def answer(self, user_text: str) -> Say | CallTool:
        """What to do about a new user message."""
        rule = self.rule_for(user_text)
        if rule is None:
            return Say(render(self.default_reply, user=user_text))
        if rule.tool_call is not None:
            return CallTool(rule.tool_call)
        return Say(render(rule.say or "", user=user_text))

    def answer_tool_result(self, function_name: str, user_text: str, result: Any) -> Say:
        """The answer once ``function_name`` returned ``result`` (for the rule that called it)."""
        rule = next(
            (
                r
                for r in self.rules
                if r.tool_call is not None and r.tool_call.name == function_name and r.matches(user_text)
            ),
            None,
        )
        template = rule.say if rule is not None and rule.say is not None else DEFAULT_AFTER_TOOL
        return Say(render(template, user=user_text, result=result))

    def decide(self, messages: Sequence[Any]) -> Say | CallTool:
        """What to do next given a whole (standard-format) context.

        Words the bot said on its own after the last tool result or user turn (a filler spoken while a tool
        ran) are not something to answer: the turn before them is.
        """
        settled = list(messages)
        while settled and _said_on_its_own(settled[-1]):
            settled.pop()
        last = settled[-1] if settled else {}
        if isinstance(last, Mapping) and last.get("role") == "tool":
            function_name = _function_name_of(messages, str(last.get("tool_call_id", "")))
            result = decode_tool_result(message_text(last))
            return self.answer_tool_result(function_name, last_user_text(messages), result)
        return self.answer(last_user_text(messages))


def _said_on_its_own(message: Any) -> bool:
    return isinstance(message, Mapping) and message.get("role") == "assistant" and not message.get("tool_calls")


def last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message)
    return ""


def _function_name_of(messages: Sequence[Any], tool_call_id: str) -> str:
    for message in reversed(messages):
        if not isinstance(message, Mapping):
            continue
        for call in message.get("tool_calls") or []:
            if call.get("id") == tool_call_id:
                return str(call.get("function", {}).get("name", ""))
    return ""


def tokens_of(text: str) -> list[str]:
    """Split a reply into streamed tokens (words with their trailing whitespace)."""
    return re.findall(r"\S+\s*", text.strip())


def count_words(text: str) -> int:
    return len(text.split())
