"""OpenAI Realtime sessions that drop, from ``configs/realtime-openai.yaml`` against the Realtime fake.

A dropped connection is reopened with the call's conversation, the reply it cut short is asked for again,
and the caller hears a short gap; when the attempts are spent the call gets one permanent ``CONNECTIVITY``
error. The session's input transcription is billed at its own model's prices.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pipecat.processors.aggregators.llm_context import standard_message_text
from pipecat.utils.errors import ErrorCategory

from tests.cloud_fixtures import (  # noqa: F401 (pytest fixtures, by name)
    KEY,
    PHONE,
    CallLog,
    build,
    calls_fixture,
    cloud_fixture,
    config,
    drive_service,
    fakes_fixture,
    said,
)
from tests.fakes import FakeOpenAIRealtime, Reply, Turn
from tests.test_cloud_failures import speak_to_realtime
from voxpipe.bench.simulated_call import simulate_call
from voxpipe.pipeline.latency import AUDIBLE
from voxpipe.providers import AudioFormat
from voxpipe.providers.builtin import openai_realtime

pytestmark = pytest.mark.usefixtures("cloud")

GREETING = "Hello, Harbor Bikes, how can I help you?"
ASKED = ["When do you open?", "How much is a flat?"]
HOURS = "We open at nine, every day but Sunday."
FLAT = "Fifteen dollars."


def dropping_first_answer(then: Callable[[FakeOpenAIRealtime], None] = lambda fake: None) -> Any:
    """Start a Realtime fake whose first answer (after the greeting) drops the connection after 0.2 s of
    audio, and calls ``then(fake)`` as it does; other replies are the script's."""
    answers = [GREETING, HOURS, HOURS, FLAT]
    started: list[FakeOpenAIRealtime] = []

    def reply(turn: Turn) -> Reply:
        if turn.index == 1:
            started[0].drop_next_responses(1, after_chunks=2)
            then(started[0])
        return Reply(text=answers[min(turn.index, len(answers) - 1)])

    return started, reply


def audible_gaps(chunks: list[Any], after: float, before: float) -> list[float]:
    """Seconds of silence between consecutive audible chunks the caller heard between ``after`` and ``before``."""
    spans = [
        (c.started_at, c.started_at + len(c.audio) / 2 / c.sample_rate)
        for c in chunks
        if after <= c.started_at < before
        and np.abs(np.frombuffer(c.audio, dtype=np.int16).astype(np.int32)).max() > AUDIBLE
    ]
    return [start - end for (_, end), (start, _) in itertools.pairwise(spans)]


@pytest.mark.parametrize("line", [None, PHONE], ids=["browser", "phone"])
async def test_a_dropped_session_reconnects_with_the_conversation(
    line: AudioFormat | None, fakes: Callable[..., Any], calls: CallLog
) -> None:
    started, reply = dropping_first_answer()
    realtime = fakes(FakeOpenAIRealtime, transcripts=ASKED, replies=reply)
    started.append(realtime)

    deployment = config("realtime-openai", realtime=realtime)
    result = await simulate_call(deployment, [said(t) for t in ASKED], settle_secs=0.7, audio=line)

    assert calls.errors == [[]] and result.errors == []
    assert len(realtime.sessions) == 2 and realtime.entries("cut")
    first, second = realtime.sessions
    audio_format = second.config["audio"]["output"]["format"]["type"]
    assert audio_format == ("audio/pcmu" if line else "audio/pcm")
    same = {"id", "expires_at"}  # the same instructions, voice, formats and turn detection
    assert {k: v for k, v in second.config.items() if k not in same} == {
        k: v for k, v in first.config.items() if k not in same
    }
    said_in_second = [
        (item["role"], " ".join(c.get("text") or c.get("transcript") or "" for c in item["content"]))
        for item in second.items
        if item["type"] == "message"
    ]
    # The conversation so far came back, the cut reply was asked for again, and the call went on.
    # The conversation so far came back (pipecat's adapter sends a history as one message), with the turn the
    # drop cut before the context had it; the cut reply was asked for again; the call went on.
    (role, history), *rest = said_in_second
    assert role == "user" and history.index(GREETING) < history.index(ASKED[0])
    assert rest == [("assistant", HOURS), ("user", ASKED[1]), ("assistant", FLAT)]
    assert [turn.reply.endswith(answer) for turn, answer in zip(result.turns, [HOURS, FLAT], strict=True)] == [
        True,
        True,
    ]
    first_reply = audible_gaps(result.bot_audio, result.turns[0].user_speech_end, result.turns[1].user_speech_end)
    assert max(first_reply) < 0.5, "the caller hears at most a short gap"
    # The fragment the drop cut short was heard, but the conversation holds each reply once.
    (role, greet), *turns = conversation(calls)  # (a realtime greeting is asked for as a user instruction)
    assert role == "user" and greet.endswith(GREETING)
    assert turns == [
        ("assistant", GREETING),
        ("user", ASKED[0]),
        ("assistant", HOURS),
        ("user", ASKED[1]),
        ("assistant", FLAT),
    ]


def conversation(calls: CallLog) -> list[tuple[str, str]]:
    """The (role, text) of the call's conversation: what its next request would send."""
    (call,) = calls.pipelines
    return [(m["role"], standard_message_text(m)) for m in call.context.get_messages() if isinstance(m, dict)]


async def test_a_first_turn_answered_before_the_context_has_it_is_answered_once(
    fakes: Callable[..., Any], calls: CallLog
) -> None:
    """No greeting: the session's first context comes from the user aggregator once the reply has started (or,
    for a reply over within ``ttfs_p99``, ended and been written too). Server VAD answered that turn already:
    the context must not ask for it again (pipecat would send it all and create a second response)."""
    realtime = fakes(FakeOpenAIRealtime, transcripts=ASKED[:1], replies=[FLAT])  # a short reply: over in 0.75 s
    deployment = config("realtime-openai", realtime=realtime)
    deployment = deployment.model_copy(update={"agent": deployment.agent.model_copy(update={"greeting": None})})
    result = await simulate_call(deployment, [said(ASKED[0])], settle_secs=1.5)

    assert [(turn.heard, turn.reply) for turn in result.turns] == [(ASKED[0], FLAT)]
    (session,) = realtime.sessions
    assert len(session.responses) == 1 and realtime.messages("response.create") == []
    assert conversation(calls) == [("user", ASKED[0]), ("assistant", FLAT)]


async def test_a_session_that_cannot_come_back_fails_once_the_attempts_are_spent(fakes: Callable[..., Any]) -> None:
    def refuse_reconnects(fake: FakeOpenAIRealtime) -> None:
        fake.behaviour.fail_status, fake.behaviour.fail_count = 503, 100

    started, reply = dropping_first_answer(refuse_reconnects)
    realtime = fakes(FakeOpenAIRealtime, replies=[HOURS, HOURS])
    started.append(realtime)
    realtime.script = type(realtime.script)(lambda turn: reply(Turn(turn.index + 1, turn.raw, None, [])))
    options = {"api_key": KEY, "base_url": realtime.ws_url + "/v1/realtime", "reconnect_attempts": 2}
    service = build(openai_realtime.PROVIDER, options)
    seen: list[float] = []

    def failed(run: Any) -> bool:
        if run.errors and not seen:
            seen.append(time.monotonic())
        return bool(seen)

    run = await drive_service(service, speak_to_realtime, failed, timeout=8.0)

    assert len(run.errors) == 1, [e.error for e in run.errors]
    error = run.errors[0]
    assert error.category == ErrorCategory.CONNECTIVITY and not service.is_usable  # permanent: the call ends
    assert "session lost; 2 reconnect attempt(s)" in error.error and "503" in error.error
    assert len(realtime.entries("ws_connect")) == 3  # the session, then two attempts
    assert seen[0] - realtime.entries("cut")[0]["time"] < 2.0
