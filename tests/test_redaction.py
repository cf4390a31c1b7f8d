"""Redaction (issue 18): a caller who speaks or types a card number and an email leaves no trace of either.

- detection: the labelled set of ``benchmarks/redaction_cases.jsonl`` (cards pass Luhn, spoken digits,
  keypad entries, emails written and spoken, SSNs, phones, everyday numbers left alone), and numbers split
  across entries;
- a whole call: every byte it wrote (records database, session store, log file, exported spans, recording
  folder) is searched for the card, the email and a PIN given to a ``sensitive`` tool; the tool still got the
  PIN, and the caller's audio is silenced in the recording while they said it;
- ``before_llm`` masks what the model sees; ``voxpipe call --json`` prints and stores nothing in clear.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tool_functions
from live_caller import LiveCaller, live_call
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pipecat.frames.frames import LLMMessagesAppendFrame

from voxpipe.bench.simulated_call import CallerTurn
from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import RedactConfig
from voxpipe.pipeline import tracing
from voxpipe.pipeline.builder import CallContext, CallPipeline
from voxpipe.pipeline.host import CallBookkeeping
from voxpipe.records.recording import AUDIBLE, read_stereo
from voxpipe.records.recording_store import uploader
from voxpipe.records.store import RecordStore
from voxpipe.redaction import Redactor
from voxpipe.redaction.sessions import RedactingSessionStore
from voxpipe.sessions import Session, SessionRecorder, SQLiteSessionStore
from voxpipe.telephony.keypad_entry import KeypadEntry

CASES = Path(__file__).resolve().parent.parent / "benchmarks" / "redaction_cases.jsonl"
SPOKEN_CARD = "four one one one one one one one one one one one one one one one"
TYPED_CARD = "5500000000000004"
EMAIL = "jo.smith@example.com"
PIN = "4821"
TYPED_REPLY = "You said: (The caller pressed these keys on the phone keypad: [card_number]#)"
TRACES = ["4111", "four one one one", "jo.smith", "example.com", "5500", PIN, "four eight two one"]

PIN_TOOL = {
    "kind": "python",
    "name": "check_pin",
    "sensitive": True,
    "parameters": {"type": "object", "properties": {"pin": {"type": "string"}}, "required": ["pin"]},
    "options": {"function": f"{tool_functions.__name__}:check_pin"},
}
DEPLOYMENT = f"""
name: payments
agent:
  instructions: You take card payments.
  tools: [{json.dumps(PIN_TOOL)}]
vad: {{stop_secs: 0.2}}
turn: {{strategy: silence, timeout_secs: 0.2}}
stt:
  provider: testkit_stt
  options:
    transcripts: ["my card number is {SPOKEN_CARD}", "my email is {EMAIL}", "my pin is four eight two one"]
llm:
  provider: testkit_llm
  options:
    default_reply: "You said: {{user}}"
    replies:
      - when: pin
        tool_call: {{name: check_pin, arguments: {{pin: "{PIN}"}}}}
        say: "Your PIN is {{result.status}}."
tts: {{provider: testkit_tts}}
redact: {{entities: [card_number, email, ssn, phone_number]}}
recording: {{enabled: true, store: "file://RECORDINGS"}}
"""


def test_the_labelled_set_is_redacted_exactly() -> None:
    redactor = Redactor(RedactConfig())
    for case in map(json.loads, CASES.read_text().splitlines()):
        found = redactor.found(case["text"])
        masked = redactor.text(case["text"])
        assert {f.entity for f in found} == set(case["entities"]), case
        assert not any(secret in masked for secret in case["masked"]), (case, masked)


def test_numbers_split_across_entries_are_found_whole() -> None:
    redactor = Redactor(RedactConfig())
    keypad = "(The caller pressed these keys on the phone keypad: {})"
    messages = [
        {"role": "user", "content": keypad.format("41111111#")},
        {"role": "assistant", "content": "I got 41111111, go on."},
        {"role": "user", "content": keypad.format("11111111#")},
        {"role": "user", "content": "my card is four one one one one one one one"},
        {"role": "user", "content": "one one one one one one one one"},
    ]
    masked = redactor.messages(messages)
    assert masked[0]["content"] == keypad.format("[card_number]#")
    assert masked[1]["content"] == "I got [sensitive], go on."  # the echoed piece is masked too
    assert masked[2]["content"] == keypad.format("[card_number]#")
    assert masked[3]["content"] == "my card is [card_number]" and masked[4]["content"] == "[card_number]"
    assert Redactor(RedactConfig()).texts(["order 1234", "5678 9012 3456"]) == ["order 1234", "5678 9012 3456"]


def test_a_bad_pattern_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        parse_deployment("name: x\nagent: {instructions: hi}\nredact: {patterns: ['(unclosed']}\n")
    assert "redact.patterns" in str(error.value) and "not a valid regular expression" in str(error.value)
    realtime = "name: x\nmode: realtime\nagent: {instructions: hi}\nrealtime: {provider: testkit_realtime}\n"
    with pytest.raises(ConfigError, match=r"redact\.before_llm needs mode: cascade"):
        parse_deployment(realtime + "redact: {before_llm: true}\n")


def _bytes_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _contains_clear(data: bytes, clear: str) -> bool:
    """True when `clear` appears as its own token: random trace ids, uuids and timestamps hold digit runs
    such as 4821 by chance, so a match glued to other letters or digits is not a leak."""
    return re.search(rb"(?<![0-9A-Za-z])" + re.escape(clear.encode()) + rb"(?![0-9A-Za-z])", data) is not None


async def test_a_call_leaves_no_card_email_or_pin_anywhere(tmp_path: Path) -> None:
    written = tmp_path / "written"
    written.mkdir()
    deployment = parse_deployment(DEPLOYMENT.replace("RECORDINGS", str(written / "recordings")))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    log_sink = logger.add(written / "voxpipe.log", level="DEBUG")
    sessions = SQLiteSessionStore(written / "sessions.db")
    call = CallContext()
    utterances = [CallerTurn.from_text(text).audio for text in ("My card number.", "My email.", "My PIN.")]
    recorders: list[SessionRecorder] = []

    async def on_built(call_pipeline: CallPipeline) -> None:
        # what the server does with a session store, the store wrapped by the call's redactor
        assert call_pipeline.keeping is not None and call_pipeline.keeping.redactor is not None
        store = RedactingSessionStore(sessions, call_pipeline.keeping.redactor)
        recorders.append(SessionRecorder(store, Session(call.call_id), lambda: call_pipeline.context.messages))

    async def caller(live: LiveCaller, call_pipeline: CallPipeline) -> None:
        await live.silence(1.0)
        for audio in utterances:
            played = len(live.transport.played)
            await live.send(audio)
            await live.silence_until(live.bot_played_since(played))
            await live.silence(1.5)

        async def deliver(message: dict) -> None:  # as a Media Streams call hands a keypad entry to the pipeline
            await call_pipeline.worker.queue_frame(LLMMessagesAppendFrame(messages=[message], run_llm=True))

        keypad = KeypadEntry(deliver)
        for digit in TYPED_CARD + "#":
            await keypad.press(digit)
        await live.silence(2.0)
        await recorders[0].sync()

    bookkeeping = CallBookkeeping(RecordStore(written / "calls.db"))
    try:
        record = await live_call(deployment, caller, call=call, bookkeeping=bookkeeping, on_built=on_built)
        await recorders[0].flush()
        assert uploader.drain(30)
    finally:
        logger.remove(log_sink)
        tracing.use_tracer_provider(None)
        await sessions.close()
    assert tool_functions.PINS_SEEN[-1] == PIN  # the sensitive tool got the PIN
    # the keypad entry is answered within the last turn (no caller speech starts a new one)
    assert record.turns[-1].reply == "Your PIN is verified. " + TYPED_REPLY
    assert record.turns[0].heard == "my card number is [card_number]"
    assert record.turns[1].heard == "my email is [email]"
    assert record.turns[2].heard == "my pin is [sensitive]"
    (written / "spans.json").write_text("\n".join(span.to_json() for span in exporter.get_finished_spans()))
    stored = await SQLiteSessionStore(written / "sessions.db").get(call.call_id)
    assert stored is not None and any("[card_number]" in str(m.get("content")) for m in stored.messages)
    everything = _bytes_under(written)
    assert {"calls.db", "sessions.db", "voxpipe.log", "spans.json"} <= set(everything)
    assert any(name.endswith(".wav") for name in everything)
    assert b"[card_number]" in everything["voxpipe.log"] or b"You said" in everything["voxpipe.log"]
    for name, data in everything.items():
        for clear in TRACES:
            assert not _contains_clear(data, clear), f"{clear!r} found in {name}"
    # the caller's audio is silent while the PIN was said: two utterances are heard, not three
    caller_track, _, rate = read_stereo(everything[next(n for n in everything if n.endswith(".wav"))])
    loud = np.flatnonzero(np.abs(caller_track.astype(np.int32)) > AUDIBLE)
    utterances_heard = 1 + int(np.sum(np.diff(loud) > rate * 0.8))
    assert utterances_heard == 2


BEFORE_LLM = """
name: masked-model
agent: {instructions: Echo.}
vad: {stop_secs: 0.2}
turn: {strategy: silence, timeout_secs: 0.2}
stt: {provider: testkit_stt, options: {transcripts: ["my card is 4111 1111 1111 1111"]}}
llm: {provider: testkit_llm, options: {default_reply: "You said: {user}"}}
tts: {provider: testkit_tts}
redact: {before_llm: true}
"""


async def test_before_llm_masks_what_the_model_sees() -> None:
    from voxpipe.bench.simulated_call import simulate_call

    result = await simulate_call(parse_deployment(BEFORE_LLM), [CallerTurn.from_text("My card.")], settle_secs=0.5)
    assert result.turns[0].reply == "You said: my card is [card_number]"


def test_voxpipe_call_prints_and_stores_nothing_in_clear(run_cli, write_yaml, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_yaml(
        DEPLOYMENT.replace("RECORDINGS", str(tmp_path / "recordings"))
        .replace(f"tools: [{json.dumps(PIN_TOOL)}]", "tools: []")
        .replace("my pin is four eight two one", "thanks")
    )
    db = tmp_path / "calls.db"
    done = run_cli(
        "call", str(config), "--say", "My card.", "--say", "My email.", "--json", "--records", str(db),
        env={"VOXPIPE_LOG_LEVEL": "DEBUG"}, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    turns = json.loads(done.stdout)["turns"]
    assert [t["heard"] for t in turns] == ["my card number is [card_number]", "my email is [email]"]
    written = done.stdout + done.stderr
    assert "You said" in written
    for clear in TRACES:
        assert not _contains_clear(written.encode(), clear), clear  # (a recording's random id may hold 4821)
        for name, data in _bytes_under(tmp_path).items():
            assert not _contains_clear(data, clear) or name == config.name, (clear, name)


def test_voxpipe_call_out_is_silenced_while_the_pin_is_said(run_cli, write_yaml, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--out`` is a copy of the call's audio: the PIN given to a ``sensitive`` tool is silenced there too,
    with or without ``recording:``."""
    config = write_yaml(DEPLOYMENT.replace('recording: {enabled: true, store: "file://RECORDINGS"}\n', ""))
    out = tmp_path / "call.wav"
    done = run_cli(
        "call", str(config), "--say", "My card.", "--say", "My email.", "--say", "My PIN.", "--out", str(out),
        "--json", "--records", str(tmp_path / "calls.db"),
        env={"PYTHONPATH": str(Path(tool_functions.__file__).parent)}, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["turns"][2]["reply"] == "Your PIN is verified."  # the tool got the PIN
    caller_track, bot_track, rate = read_stereo(out.read_bytes())
    loud = np.flatnonzero(np.abs(caller_track.astype(np.int32)) > AUDIBLE)
    assert 1 + int(np.sum(np.diff(loud) > rate * 0.8)) == 2  # the card and the email; the PIN is silent
    assert np.abs(bot_track.astype(np.int32)).max() > AUDIBLE  # the bot's side is there


def test_the_call_table_shows_redaction_marks() -> None:
    """``[card_number]`` in a printed table is the redaction's mark, not rich markup to swallow."""
    from rich.console import Console

    from voxpipe.bench.report import print_call
    from voxpipe.bench.simulated_call import CallResult
    from voxpipe.pipeline.latency import MeasuredTurn

    turn = MeasuredTurn(user_speech_end=0.0, audio_out_first=0.5, heard="my card is [card_number]", reply="[sensitive]")
    console = Console(record=True, width=200)
    print_call(CallResult("payments", "cascade", 0.0, greeting="Hi [email]", turns=[turn]), console)
    printed = console.export_text()
    assert "my card is [card_number]" in printed and "[sensitive]" in printed and "Hi [email]" in printed
