"""The fault matrix: each provider kind x each way a vendor fails x with and without a backup, on a whole call.

Every cell is one simulated call against the protocol-faithful fakes (``tests/fakes``): a caller asks one
question, and one provider of the call fails in one way while the others stay healthy. The faulty provider is
always the primary of its role (STT Deepgram, LLM Bedrock, TTS OpenAI, Realtime OpenAI); the backup, when the
cell has one, is a healthy provider of another vendor (OpenAI STT, OpenAI LLM, ElevenLabs; a second Realtime
endpoint). Each cell asserts what the caller hears, when, how the call ends, and what the record keeps:

- with a backup, the caller hears the backup's answer, the switch is a ``FallbackEvent`` and the call completes;
- without one, the caller hears the deployment's ``on_failure`` message within 2 s of the fatal error, the
  call ends within 2 s too, and the record keeps the error (role, provider, kind) and every stage that worked
  (the heard text, the reply so far, the LLM's usage and cost).

Every outcome is collected, and once the whole matrix has run, ``docs/reliability.md`` must be the table
rendered from them (``VOXPIPE_WRITE_DOCS=1`` rewrites it; see ``tests/reliability_doc.py``). A transport
axis is one more entry in ``TRANSPORTS`` (Twilio Media Streams and ConversationRelay come with the
``voxpipe.pipeline.host`` layer).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pipecat.processors.aggregators.llm_context import standard_message_text

from tests.cloud_fixtures import (  # noqa: F401 (pytest fixtures, by name)
    KEY,
    CallLog,
    calls_fixture,
    cloud_fixture,
    config,
    fakes_fixture,
    said,
)
from tests.fakes import Behaviour, FakeBedrock, FakeDeepgram, FakeElevenLabs, FakeOpenAI, FakeOpenAIRealtime, FakeServer
from tests.fault_transports import HungVendor, Observed, on_relay
from tests.fault_transports import on_twilio as on_twilio_media
from tests.reliability_doc import DOC, Outcome, render
from voxpipe.bench.simulated_call import simulate_call
from voxpipe.config.models import Deployment, ServiceConfig

pytestmark = pytest.mark.usefixtures("cloud")

ASKED = "When do you open?"
ANSWER = "We open at nine."
FAILURE_SAY = "Sorry, our line has a problem. Goodbye."
TIMEOUT_SECS = 1.0  # connect and response timeouts of the faulty provider
WITHIN_SECS = 2.0  # a dead call is detected, told and ended within this of the fatal error

KINDS = ("stt", "llm", "tts", "realtime")
FAULTS: dict[str, Behaviour | None] = {
    "401": Behaviour(api_key="another-key"),
    "429": Behaviour(api_key=KEY, fail_status=429, fail_count=1000),
    "500": Behaviour(api_key=KEY, fail_status=500, fail_count=1000),
    "cut stream": Behaviour(api_key=KEY, cut_after_n_chunks=1),
    "slow first byte": Behaviour(api_key=KEY, first_byte_delay_s=4 * TIMEOUT_SECS),
    "hung handshake": None,  # a TCP port that accepts and never answers
}


async def on_memory(deployment: Deployment) -> Observed:
    """The simulated caller of ``voxpipe call`` (memory transport): it is told ``on_failure``'s text as printed."""
    result = await simulate_call(deployment, [said(ASKED)], settle_secs=0.5, reply_timeout_secs=8.0)
    record = result.record("matrix")
    told = record.failure.say if record.failure and result.failure_heard_at else None
    return Observed(record, told, result.failure_heard_at, result.ended_at)


async def on_twilio(deployment: Deployment) -> Observed:
    return await on_twilio_media(deployment, said(ASKED).audio)


async def on_conversation_relay(deployment: Deployment) -> Observed:
    return await on_relay(deployment, ASKED)


#: How a call is placed on each transport (served ones: ``tests/fault_transports.py``).
TRANSPORTS: dict[str, Callable[[Deployment], Awaitable[Observed]]] = {
    "memory": on_memory,
    "twilio media streams": on_twilio,
    "conversation relay": on_conversation_relay,
}
#: The pipecat error categories each fault is reported as.
KIND_OF_FAULT = {
    "401": {"authentication"},
    "429": {"rate_limit"},
    "500": {"server"},
    "cut stream": {"connectivity", "server"},
    "slow first byte": {"connectivity"},
    "hung handshake": {"connectivity"},
}
#: The cells run: every one on the memory transport; on the served transports those that add something, within
#: the matrix's time budget (a served call runs in real time): Twilio Media Streams, every role failing with
#: an HTTP error (500) and a hung handshake, without a backup, and the 500 with one (the switch is invisible to
#: the caller); ConversationRelay, where only the LLM is voxpipe's (Twilio recognises and speaks), every fault.
CELLS: list[tuple[str, str, bool, str]] = (
    [(kind, fault, backup, "memory") for kind in KINDS for fault in FAULTS for backup in (False, True)]
    + [(kind, fault, False, "twilio media streams") for kind in KINDS for fault in ("500", "hung handshake")]
    + [(kind, "500", True, "twilio media streams") for kind in ("stt", "llm", "tts")]
    + [("llm", fault, backup, "conversation relay") for fault in FAULTS for backup in (False, True)]
)
OUTCOMES: list[Outcome] = []
#: Faults that come after the call first reaches the vendor: a streaming session (Deepgram, Realtime) is opened
#: when the call starts, and cut or slow only once the caller has spoken. These cells time the caller's hearing
#: from the fatal error's time in the record instead.
FAULT_LATER = {(kind, fault) for kind in ("stt", "realtime") for fault in ("cut stream", "slow first byte")}


@dataclass(frozen=True)
class Choice:
    """A provider of a role, how to point it at a fake, and the fake it talks to."""

    role: str
    provider: str
    fake: type
    options: Callable[[str, str], dict[str, Any]]  # (http url, ws url) -> options
    fake_kwargs: dict[str, Any]
    ws: bool = False


def _timeouts(response: float = TIMEOUT_SECS) -> dict[str, float]:
    return {"connect_timeout_secs": TIMEOUT_SECS, "response_timeout_secs": response}


PRIMARY = {
    "stt": Choice(
        "stt",
        "deepgram",
        FakeDeepgram,
        lambda url, ws: {"api_key": KEY, "base_url": ws, **_timeouts()},
        {"transcripts": [ASKED]},
        ws=True,
    ),
    "llm": Choice(
        "llm",
        "bedrock",
        FakeBedrock,
        lambda url, ws: {
            "endpoint_url": url,
            "aws_access_key_id": KEY,
            "aws_secret_access_key": "test-secret",
            **_timeouts(),
        },
        {"replies": [ANSWER]},
    ),
    "tts": Choice(
        "tts", "openai", FakeOpenAI, lambda url, ws: {"api_key": KEY, "base_url": url + "/v1", **_timeouts()}, {}
    ),
    "realtime": Choice(
        "realtime",
        "openai_realtime",
        FakeOpenAIRealtime,
        lambda url, ws: {"api_key": KEY, "base_url": ws + "/v1/realtime", **_timeouts()},
        {"replies": [ANSWER], "transcripts": [ASKED]},
        ws=True,
    ),
}
OPENAI_BACKUP = {"api_key": KEY, "response_timeout_secs": 5.0}
BACKUP = {
    "stt": Choice(
        "stt",
        "openai",
        FakeOpenAI,
        lambda url, ws: {**OPENAI_BACKUP, "base_url": url + "/v1"},
        {"transcripts": [ASKED]},
    ),
    "llm": Choice(
        "llm", "openai", FakeOpenAI, lambda url, ws: {**OPENAI_BACKUP, "base_url": url + "/v1"}, {"replies": [ANSWER]}
    ),
    "tts": Choice("tts", "elevenlabs", FakeElevenLabs, lambda url, ws: {"api_key": KEY, "url": ws}, {}),
    "realtime": PRIMARY["realtime"],
}


@pytest.fixture(scope="module", autouse=True)
def reliability_doc() -> Iterator[None]:
    """Once every cell has run, ``docs/reliability.md`` must be the table rendered from their outcomes."""
    OUTCOMES.clear()
    yield
    if len(OUTCOMES) != len(CELLS):
        return  # a partial run (-k, -x) says nothing about the whole table
    rendered = render(OUTCOMES)
    if os.environ.get("VOXPIPE_WRITE_DOCS"):
        DOC.write_text(rendered, encoding="utf-8")
    assert DOC.read_text(encoding="utf-8") == rendered, (
        "docs/reliability.md is out of date: rerun with VOXPIPE_WRITE_DOCS=1 "
        "python -m pytest tests/test_fault_matrix.py"
    )


@pytest.fixture(name="hung_vendor")
def hung_vendor_fixture() -> Iterator[HungVendor]:
    with HungVendor() as vendor:
        yield vendor


def service(
    choice: Choice, start: Callable[..., Any], behaviour: Behaviour | None, hung: HungVendor
) -> tuple[ServiceConfig, FakeServer | HungVendor]:
    """``choice`` as a deployment entry, on its own fake (or on the hung vendor for a hung handshake), and that
    fake or vendor."""
    vendor: FakeServer | HungVendor = hung
    if behaviour is None:
        url, ws = f"http://{hung.address}", f"ws://{hung.address}"
    else:
        vendor = start(choice.fake, behaviour, **choice.fake_kwargs)
        url, ws = vendor.url, vendor.ws_url
    return ServiceConfig(provider=choice.provider, options=choice.options(url, ws)), vendor


def first_contact(vendor: FakeServer | HungVendor) -> float | None:
    """When the call first reached the faulty vendor (``time.monotonic()``): the fault, for a vendor that fails
    every request (an HTTP error, a hung handshake) or each request it is sent (an LLM or TTS cut or slow)."""
    if isinstance(vendor, HungVendor):
        return vendor.first_contact
    return min((entry["time"] for entry in vendor.received), default=None)


def deployment(
    kind: str, fault: str, backup: bool, start: Callable[..., Any], hung: HungVendor
) -> tuple[Deployment, FakeServer | HungVendor]:
    """The example deployment of the mode, on healthy fakes, with ``kind``'s primary failing as ``fault`` (and
    the primary's fake, or the hung vendor)."""
    if kind == "realtime":
        base = config("realtime-openai")  # its realtime role is replaced below
    else:
        base = config(
            "cascade-deepgram-bedrock-elevenlabs",
            deepgram=start(FakeDeepgram, transcripts=[ASKED]),
            bedrock=start(FakeBedrock, replies=[ANSWER]),
            elevenlabs=start(FakeElevenLabs),
        )
    primary, faulty = service(PRIMARY[kind], start, FAULTS[fault], hung)
    chain = [primary]
    if backup:
        chain.append(service(BACKUP[kind], start, Behaviour(api_key=KEY), hung)[0])
    agent = base.agent.model_copy(update={"greeting": None, "tools": []})  # the fault meets the caller's turn
    on_failure = base.on_failure.model_copy(update={"say": FAILURE_SAY})
    return base.model_copy(update={kind: chain, "agent": agent, "on_failure": on_failure}), faulty


def conversation(calls: CallLog) -> list[tuple[str, str]]:
    """The (role, text) of the call's conversation (its LLM context) once it is over."""
    (call,) = calls.pipelines
    return [(m["role"], standard_message_text(m)) for m in call.context.get_messages() if isinstance(m, dict)]


def heard(observed: Observed) -> str:
    """What the caller heard, in the document's words."""
    reply = observed.record.turns[-1].reply if observed.record.turns else ""
    if observed.told:
        return f"on_failure: {observed.told}"
    if reply and reply != ANSWER and reply.endswith(ANSWER):
        return "the first words of each cut reply, then the answer"
    return "the answer" if reply else "nothing"


def summarise(kind: str, fault: str, backup: bool, transport: str, observed: Observed) -> Outcome:
    record = observed.record
    fatal = next((e for e in record.errors if e.fatal), None)
    return Outcome(
        transport=transport,
        kind=kind,
        fault=fault,
        backup=backup,
        caller_hears=heard(observed),
        end="failed, " + record.failure.then if record.failure else "completed",
        error=f"{fatal.role} {fatal.provider}: {fatal.kind}" if fatal else "",
        fallback=", ".join(f"{e.role} {e.from_provider} -> {e.to_provider}" for e in record.fallbacks),
        kept=", ".join(
            name
            for name, kept in (
                ("heard", any(t.heard for t in record.turns)),
                ("reply", any(t.reply for t in record.turns)),
                ("usage", bool(record.usage)),
            )
            if kept
        ),
    )


@pytest.mark.parametrize(
    ("kind", "fault", "backup", "transport"),
    CELLS,
    ids=[f"{k}-{f}-{'backup' if b else 'no backup'}-{t}" for k, f, b, t in CELLS],
)
async def test_fault_matrix_cell(
    kind: str,
    fault: str,
    backup: bool,
    transport: str,
    fakes: Callable[..., Any],
    hung_vendor: HungVendor,
    calls: CallLog,
) -> None:
    call, faulty = deployment(kind, fault, backup, fakes, hung_vendor)
    observed = await TRANSPORTS[transport](call)
    record = observed.record
    primary, backup_choice = PRIMARY[kind], BACKUP[kind]
    faults = [e for e in record.errors if e.role == kind and e.provider == primary.provider]
    assert faults, f"the {fault} of {primary.provider} was not recorded: {record.errors}"
    assert faults[0].kind in KIND_OF_FAULT[fault], faults[0]

    if backup:
        # The caller hears the backup's answer; the switch is recorded; nothing ends the call early.
        assert record.failure is None, record.failure
        assert [t.heard for t in record.turns] == [ASKED], record.turns
        if kind == "realtime" and fault == "cut stream":  # the caller heard what each cut reply began with
            assert record.turns[0].reply.endswith(ANSWER), record.turns
        else:
            assert record.turns[0].reply == ANSWER, record.turns
        # The conversation holds the turn once, answered once (what the next request of the call would send).
        assert conversation(calls) == [("user", ASKED), ("assistant", ANSWER)]
        assert transport == "conversation relay" or record.turns[0].voice_to_voice_ms is not None
        assert [(e.role, e.from_provider, e.to_provider) for e in record.fallbacks] == [
            (kind, primary.provider, backup_choice.provider)
        ]
        assert not any(e.fatal for e in record.errors) and observed.told is None
    else:
        # The caller is told, quickly, and the call is over; the record says why and keeps what worked.
        failure = record.failure
        assert failure is not None and failure.say == FAILURE_SAY and failure.then == "hangup"
        assert (failure.error.role, failure.error.provider) == (kind, primary.provider)
        assert failure.error.fatal and failure.error in record.errors
        assert failure.at_secs is not None and failure.error.at_secs is not None
        assert failure.at_secs - failure.error.at_secs <= WITHIN_SECS
        assert observed.told == FAILURE_SAY, observed.told  # as the transport said it to the caller
        assert observed.told_at is not None and observed.ended_at - observed.told_at <= WITHIN_SECS
        if (kind, fault) not in FAULT_LATER:  # from the outside: the fault reached, then the caller told
            fault_at = first_contact(faulty)
            assert fault_at is not None and observed.told_at - fault_at <= WITHIN_SECS, observed.told_at - fault_at
        assert record.fallbacks == []
        if kind in ("llm", "tts"):  # the STT worked: the caller's words are kept
            assert record.turns and record.turns[-1].heard == ASKED, record.turns
        if kind == "tts" and fault != "cut stream":  # the LLM worked too: its reply and its cost are kept
            assert record.turns[-1].reply == ANSWER and record.turns[-1].voice_to_voice_ms is None
            llm = [u for u in record.usage if u.role == "llm"]
            assert llm and llm[0].text_output_tokens > 0 and llm[0].cost_usd > 0

    OUTCOMES.append(summarise(kind, fault, backup, transport, observed))
