"""Calls that fail on the telephony transports, seen from the outside (issue 10, findings 5 and 7).

- Finding 5: a Media Streams call whose pipeline fails to build ends at once; the socket is closed (it used to
  wait for the input to be ready forever), and Twilio's ``<Connect action>`` then hangs up.
- Finding 7: ConversationRelay keypad digits reach the agent in order before the next prompt, and digits still
  pending when the session ends are stored in the conversation without calling the LLM.
The fault matrix (``test_fault_matrix.py``) covers what the caller hears when a provider fails, over real
sockets; here are the outcomes it does not reach: a transfer after a failure, and the browser page's event.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.simulators.server import RunningServer
from tests.test_twilio_media import PUBLIC, deployment, simulator
from voxpipe.pipeline import host
from voxpipe.records.model import CallError, CallFailure
from voxpipe.records.store import RecordStore
from voxpipe.telephony import conversation_relay, twiml
from voxpipe.transports.media_stream_call import BrowserDialect
from voxpipe.transports.twilio_account import ACTION_TTL_SECS, ExpiringAnswers, TwilioAccount
from voxpipe.web.app import create_app


async def test_a_pipeline_that_fails_to_build_closes_the_stream(
    tmp_path: Path, registry: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no pipeline today")

    monkeypatch.setattr(host, "build_measured", broken)
    app = create_app([deployment(tmp_path, ["hello"])], records=RecordStore(tmp_path / "calls.db"), warm_up=False)
    with RunningServer(app) as server:
        async with simulator(server) as call:
            started = time.monotonic()
            await call.wait_for(call.closed.is_set, timeout=5, what="the server to close the stream")
            assert call.closed_at is not None and call.closed_at - started < 2.0
            answer = await call.connect_action(f"{server.url}/phone/connect-action", f"{PUBLIC}/phone/connect-action")
        stopping = time.monotonic()
    # The stream's handler returned: the server stops at once (a handler stuck in its wait held it 15 s).
    assert time.monotonic() - stopping < 3.0
    assert "<Hangup />" in answer


FAILURE = CallFailure(
    say="Sorry, our line has a problem.",
    then="transfer",
    transfer_to="+15557770000",
    error=CallError(role="tts", provider="openai", kind="server", message="500", fatal=True),
)


async def test_a_failed_media_stream_call_is_said_then_transferred_by_the_connect_action(tmp_path: Path) -> None:
    """With ``then: transfer`` the ``<Connect action>`` says the text and dials (the matrix's cells hang up)."""
    account = TwilioAccount(deployment(tmp_path, []))
    account.handoffs["CA1"] = "+15550000000"  # a tool's pending transfer is superseded by the failure's outcome
    await account.fail("CA1", FAILURE.say, FAILURE.transfer_to)
    assert account.connect_action("CA1", None) == twiml.end_call(FAILURE.say, FAILURE.transfer_to)
    assert "<Say>Sorry, our line has a problem.</Say><Dial>+15557770000</Dial>" in twiml.end_call(
        FAILURE.say, FAILURE.transfer_to
    )
    assert account.connect_action("CA1", None) == twiml.hangup()  # answered once


async def test_a_failed_calls_ending_is_forgotten_once_fetched_or_after_its_ttl(tmp_path: Path) -> None:
    """``endings`` (and ``handoffs``) are bounded: a call that hangs up before Twilio posts its ``<Connect
    action>`` (Twilio posts nothing then) leaves no ending behind in a long-running server."""
    now = [1000.0]
    account = TwilioAccount(deployment(tmp_path, []))
    account.endings = ExpiringAnswers(ttl_secs=ACTION_TTL_SECS, clock=lambda: now[0])
    account.handoffs = ExpiringAnswers(ttl_secs=ACTION_TTL_SECS, clock=lambda: now[0])
    for call in range(1000):  # calls that failed and hung up: no webhook ever claims their endings
        await account.fail(f"CA{call}", FAILURE.say, None)
        account.handoffs[f"CA{call}"] = "+15550000000"
    now[0] += ACTION_TTL_SECS - 1
    await account.fail("CAlate", FAILURE.say, None)
    assert "CA999" in account.endings and len(account.endings) == 1001  # within the TTL: all kept
    now[0] += 1
    assert len(account.endings) == 1 and len(account.handoffs) == 0  # past it: only the recent one is left
    assert account.connect_action("CA0", None) == twiml.hangup()  # an expired ending is no longer answered
    assert account.connect_action("CAlate", None) == twiml.end_call(FAILURE.say, None)
    assert len(account.endings) == 0  # answered once, then gone


async def test_a_relay_failure_with_a_transfer_dials_it_from_the_handoff_data() -> None:
    handoff = conversation_relay.end_session(conversation_relay.failure_handoff("+15557770000", "tts: server: 500"))
    assert conversation_relay.handoff_target(handoff["handoffData"]) == "+15557770000"
    no_transfer = conversation_relay.end_session(conversation_relay.failure_handoff(None, "llm: server: 500"))
    assert conversation_relay.handoff_target(no_transfer["handoffData"]) is None


async def test_the_browser_page_is_sent_the_failure_to_show_and_speak() -> None:
    sent: list[dict[str, Any]] = []

    class Page:
        async def send(self, event: dict[str, Any]) -> bool:
            sent.append(event)
            return True

    await BrowserDialect("s" * 32).fail(Page(), FAILURE)  # type: ignore[arg-type]  # only its send is used
    assert sent == [{"event": "failure", "say": FAILURE.say, "then": "transfer", "to": "+15557770000"}]
    page = (Path(__file__).parent.parent / "voxpipe/transports/static/app.js").read_text()
    assert 'event.event === "failure"' in page and "new SpeechSynthesisUtterance(event.say)" in page
