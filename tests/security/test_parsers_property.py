"""Property-based (hypothesis): the attacker-facing checks of this package never fail in an unexpected way.

Whatever a client sends as a token, and whatever JSON a model or page sends as tool arguments, the answer is
the documented refusal (``TokenError``, ``InvalidArguments`` / an error result), never another exception.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxpipe.security.browser_access import AccessRefused, BrowserAccess, bearer
from voxpipe.security.tokens import Signer, TokenError
from voxpipe.tools.arguments import InvalidArguments, check_arguments
from voxpipe.tools.runner import run_tool

SIGNER = Signer(b"p" * 32, clock=lambda: 1_000_000.0)
VALID = SIGNER.mint("call", "CA-one", 60)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "party": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=100).map(lambda b: b.decode("latin-1")), JSON))
def test_any_token_is_accepted_or_refused_with_token_error(token: Any) -> None:
    try:
        SIGNER.verify(token, "call", "CA-one")
    except TokenError:
        return
    assert token == VALID  # only the genuine token passes


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.characters(codec="ascii"))
def test_a_token_changed_in_any_one_place_is_refused(position: int, character: str) -> None:
    forged = VALID[:position] + character + VALID[position + 1 :]
    if forged != VALID:  # the signature covers the payload's text, so even base64's spare bits count
        with pytest.raises(TokenError):
            SIGNER.verify(forged, "call", "CA-one")


PAGES = BrowserAccess(["https://app.example.com"], SIGNER, 60)
PAGE_TOKEN = PAGES.issue("https://app.example.com").token


@settings(max_examples=300, deadline=None)
@given(
    token=st.none() | st.text(max_size=300) | st.just(PAGE_TOKEN),
    origin=st.none() | st.text(max_size=60) | st.just("https://app.example.com"),
    authorization=st.text(max_size=80),
)
def test_any_page_token_origin_or_header_is_accepted_or_refused_with_a_status(
    token: str | None, origin: str | None, authorization: str
) -> None:
    for offered in (token, bearer({"authorization": authorization})):
        try:
            session = PAGES.check(offered, origin)
        except AccessRefused as refused:
            assert refused.status in (401, 403) and len(str(refused).encode()) <= 123  # fits a close frame
            continue
        assert offered == PAGE_TOKEN and origin == "https://app.example.com" and session.origin == origin


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_arguments_are_accepted_as_declared_or_refused(arguments: Any) -> None:
    try:
        checked = check_arguments(SCHEMA, arguments)
    except InvalidArguments:
        return
    assert set(checked) <= {"city", "party"} and isinstance(checked["city"], str)


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_run_tool_answers_any_arguments_without_raising(arguments: Any) -> None:
    seen: list[Any] = []

    async def handler(checked: dict[str, Any]) -> Any:
        seen.append(checked)
        return {"ok": True}

    result = asyncio.run(run_tool("book", handler, arguments, 1.0, SCHEMA))
    if seen:
        assert result == {"ok": True} and seen == [arguments]
    else:
        assert set(result) == {"error"}
