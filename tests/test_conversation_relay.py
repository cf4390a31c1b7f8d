"""ConversationRelay end to end: the relay simulator plays Twilio against the app served by uvicorn."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.fault_transports import the_record
from tests.simulators.conversation_relay import RelaySimulator
from tests.simulators.server import RunningServer
from voxpipe.config.loader import parse_deployment
from voxpipe.sessions import SQLiteSessionStore
from voxpipe.web.app import create_app

TOKEN = "test-auth-token"  # noqa: S105 — a made-up credential for a local fake; nothing real
LONG = "Let me tell you everything about our opening hours and our many services in great detail today."

DEPLOYMENT = f"""
name: relay
agent:
  instructions: You are a scripted test agent.
  greeting: Hi, this is the relay agent.
  tools:
    - kind: end_call
    - kind: transfer
      options: {{to: "+15557770000"}}
vad: {{provider: testkit_vad}}
stt: {{provider: testkit_stt}}
llm:
  provider: testkit_llm
  options:
    tokens_per_sec: 40
    replies:
      - {{when: hours, say: "We are open nine to five."}}
      - {{when: everything, say: "{LONG}"}}
      - {{when: keypad, say: "Thanks for the digits."}}
      - {{when: human, tool_call: {{name: transfer, arguments: {{reason: asked}}}}, say: "Transferring you now."}}
      - {{when: bye, tool_call: {{name: end_call, arguments: {{reason: done}}}}, say: "Goodbye."}}
      - {{when: "*", say: "You said: {{user}}"}}
tts: {{provider: testkit_tts}}
transport:
  public_url: https://voice.example.com
  twilio:
    auth_token: "${{TWILIO_AUTH_TOKEN}}"
    connect: conversation_relay
  conversation_relay: {{language: en-GB, tts_provider: ElevenLabs, voice: Rachel, transcription_provider: Deepgram}}
sessions: {{store: sqlite, path: "{{db}}"}}
"""


@pytest.fixture
def server(tmp_path: Path, registry: object) -> RunningServer:
    text = DEPLOYMENT.replace("{db}", str(tmp_path / "s.db"))
    app = create_app([parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN})], warm_up=False)
    with RunningServer(app) as running:
        yield running


def relay(server: RunningServer, **kwargs: object) -> RelaySimulator:
    return RelaySimulator(f"{server.ws_url}/relay/relay", "wss://voice.example.com/relay/relay", **kwargs)


async def stored(tmp_path: Path, session_id: str) -> list[dict]:
    store = SQLiteSessionStore(tmp_path / "s.db")
    try:
        session = await store.get(session_id)
    finally:
        await store.close()
    assert session is not None
    return session.messages


async def test_twiml_names_the_relay_and_its_settings(server: RunningServer) -> None:
    form = {"CallSid": "CA1", "From": "+1555"}
    signature = RequestValidator(TOKEN).compute_signature("https://voice.example.com/relay/twiml", form)
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/relay/twiml", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    for attribute in [
        'url="wss://voice.example.com/relay/relay"',
        'welcomeGreeting="Hi, this is the relay agent."',
        'language="en-GB"',
        'ttsProvider="ElevenLabs"',
        'voice="Rachel"',
        'transcriptionProvider="Deepgram"',
        'interruptible="true"',
        'dtmfDetection="true"',
    ]:
        assert attribute in response.text


def test_a_recorded_relay_deployment_asks_twilio_to_record_the_call(tmp_path: Path) -> None:
    """voxpipe has no audio of a relay call (Twilio speaks): ``recording.enabled`` makes Twilio record it."""
    from voxpipe.config.loader import apply_overrides
    from voxpipe.transports.twilio_account import relay_twiml

    plain = parse_deployment(DEPLOYMENT.replace("{db}", str(tmp_path / "s.db")), environ={"TWILIO_AUTH_TOKEN": TOKEN})
    recorded = apply_overrides(plain, {"recording": {"enabled": True}})
    start = (
        '<Start><Recording channels="dual" recordingStatusCallback="https://voice.example.com/relay/recording-status" '
        'recordingStatusCallbackEvent="completed" /></Start><Connect'
    )
    assert start in relay_twiml(recorded) and start not in relay_twiml(plain)
    assert start not in relay_twiml(recorded, resumed=True)  # back from a transfer: already recording


async def test_multi_turn_tokens_interrupt_dtmf_and_resume(server: RunningServer, tmp_path: Path) -> None:
    async with relay(server) as call:
        await call.prompt("what are your hours")
        assert (await call.reply())[0] == "We are open nine to five."
        assert len([m for m in call.messages if m["type"] == "text"]) > 3  # streamed token by token
        # Barge-in: Twilio had spoken a few words when the caller talked over the long answer.
        await call.prompt("tell me everything")
        spoken = await call.tokens(3)
        await call.interrupt(spoken)
        tail = await call.drain()
        assert sum(1 for m in tail if m["type"] == "text") < 5  # the response stopped
        # Keypad digits reach the agent as one entry.
        for digit in "42#":
            await call.dtmf(digit)
        assert (await call.reply())[0] == "Thanks for the digits."
        await call.prompt("what are your hours")
        assert (await call.reply())[1] < 0.1  # prompt in, first token out (once the call has started)
    await asyncio.sleep(0.5)
    messages = await stored(tmp_path, call.session_id)
    assert messages[0] == {"role": "assistant", "content": "Hi, this is the relay agent."}
    assert messages[1:5] == [
        {"role": "user", "content": "what are your hours"},
        {"role": "assistant", "content": "We are open nine to five."},
        {"role": "user", "content": "tell me everything"},
        {"role": "assistant", "content": spoken},  # cut to utteranceUntilInterrupt
    ]
    assert "42#" in messages[5]["content"] and messages[6]["content"] == "Thanks for the digits."

    # The same call reconnecting with the same sessionId resumes the conversation (another call may not:
    # tests/security/test_call_binding.py).
    async with relay(server, session_id=call.session_id, call_sid=call.call_sid) as again:
        await again.prompt("anything else")
        assert (await again.reply())[0] == "You said: anything else"
    await asyncio.sleep(0.5)
    resumed = await stored(tmp_path, call.session_id)
    assert resumed[:7] == messages[:7] and resumed[-1]["content"] == "You said: anything else"


async def test_tools_end_and_hand_off_the_call(server: RunningServer) -> None:
    async with relay(server) as call:
        await call.prompt("thanks, bye")
        assert (await call.reply())[0] == "Goodbye."
        end = await call.next_message()
        assert end["type"] == "end" and json.loads(end["handoffData"])["reason"] == "end_call"
    async with relay(server) as call:
        await call.prompt("a human please")
        assert (await call.reply())[0] == "Transferring you now."
        end = await call.next_message()
        handoff = json.loads(end["handoffData"])
        assert handoff == {"reason": "transfer", "to": "+15557770000", "detail": "asked"}
    # Twilio then posts HandoffData to <Connect action>: the answer dials the target.
    form = {"CallSid": call.call_sid, "HandoffData": end["handoffData"]}
    url = "https://voice.example.com/relay/connect-action"
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/relay/connect-action", data=form, headers={"X-Twilio-Signature": signature})
    assert "<Dial>+15557770000</Dial>" in response.text


async def test_bad_signature_and_malformed_messages(server: RunningServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with relay(server, auth_token="wrong-token"):  # noqa: S106 — a made-up credential for a local fake; nothing real
            pass
    assert refused.value.response.status_code == 403
    async with relay(server) as broken, relay(server) as healthy:
        for raw in [
            "{oops",
            "42",
            json.dumps({"type": "mystery"}),
            json.dumps({"type": "dtmf", "digit": "x"}),
            "y" * 100_000,
        ]:
            await broken.send_raw(raw)
        await broken.prompt("what are your hours")
        await healthy.prompt("what are your hours")
        assert (await broken.reply())[0] == (await healthy.reply())[0] == "We are open nine to five."


async def test_a_relay_session_leaves_a_call_record_with_text_latency(tmp_path: Path, registry: object) -> None:
    from voxpipe.records.store import RecordStore

    records = RecordStore(tmp_path / "calls.db")
    text = DEPLOYMENT.replace("{db}", str(tmp_path / "s.db"))
    app = create_app([parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN})], warm_up=False, records=records)
    with RunningServer(app) as running:
        async with relay(running) as call:
            await call.prompt("what are your hours")
            assert (await call.reply())[0] == "We are open nine to five."
        await the_record(records)
        async with httpx.AsyncClient(base_url=running.url) as client:
            metrics = (await client.get("/metrics")).text
    [record] = records.list()
    assert record.call_id == call.session_id and record.mode == "cascade" and record.caller_id == "+15550001111"
    [turn] = record.turns
    assert turn.heard == "what are your hours" and turn.reply == "We are open nine to five."
    assert 0 < turn.llm_first_token_ms <= turn.reply_complete_ms  # prompt in -> first token -> last: true
    assert [u.provider for u in record.usage] == ["testkit_llm"]
    assert 'voxpipe_calls_total{deployment="relay",variant=""} 1.0' in metrics
    assert 'stage="reply_complete"' in metrics
