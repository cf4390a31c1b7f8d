"""Fallback between providers, from ``configs/fallback.yaml``: STT Deepgram then OpenAI, LLM OpenAI then Bedrock.

A failing primary moves the call to the next provider with its conversation, re-sending the request in
flight, so the caller's turn is still answered; each switch is a ``FallbackEvent``. Calls starting soon after
a failure start on the backup; once the cooldown is over a recovered primary serves calls again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from tests.cloud_fixtures import CallLog, calls_fixture, cloud_fixture, config, fakes_fixture, said  # noqa: F401 (pytest fixtures, by name)
from tests.fakes import Behaviour, FakeBedrock, FakeDeepgram, FakeOpenAI
from tests.fakes.openai_http import error_response, injected_failure
from voxpipe.bench.simulated_call import CallResult, simulate_call
from voxpipe.pipeline.fallback import HEALTH, fallback_events
from voxpipe.records.model import FallbackEvent

pytestmark = pytest.mark.usefixtures("cloud")

ASKED = "When do you open?"
FROM_OPENAI, FROM_BEDROCK = "Nine, said OpenAI.", "Nine, said Bedrock."


class ChatFailingOpenAI(FakeOpenAI):
    """``FakeOpenAI`` whose chat completions alone fail (429) or answer late (``Behaviour`` acts on every route,
    and the transcriptions and speech of the same fake must keep working)."""

    chat_status: int | None = None
    chat_delay_s: float = 0.0

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        if self.chat_status is not None:
            self.record("http", method="POST", path=request.path, failed=self.chat_status)
            return error_response(*injected_failure(self.chat_status))
        await asyncio.sleep(self.chat_delay_s)
        return await super().chat_completions(request)


async def one_turn(deployment: Any, calls: CallLog) -> tuple[CallResult, list[FallbackEvent]]:
    result = await simulate_call(deployment, [said(ASKED)], settle_secs=0.7)
    return result, fallback_events(calls.pipelines[-1].services)


def switches(events: list[FallbackEvent]) -> list[tuple[str, str, str]]:
    return [(e.role, e.from_provider, e.to_provider) for e in events]


def chats(openai: FakeOpenAI) -> int:
    return len(openai.requests("/v1/chat/completions"))


async def test_fallback_switches_and_a_recovered_primary_serves_again(
    fakes: Callable[..., Any], calls: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    deepgram = fakes(FakeDeepgram, Behaviour(api_key="test-key", fail_status=503, fail_count=1000), transcripts=[ASKED])
    openai = fakes(ChatFailingOpenAI, transcripts=[ASKED] * 2, replies=[FROM_OPENAI])
    bedrock = fakes(FakeBedrock, replies=[FROM_BEDROCK] * 2)
    deployment = config("fallback", deepgram=deepgram, openai=openai, bedrock=bedrock)
    openai.chat_status = 429
    monkeypatch.setattr(HEALTH, "cooldown_secs", 600.0)

    # Call 1: Deepgram refuses the connection (503) and OpenAI's chat throttles (429): both roles fall back,
    # and the turn is answered: heard by OpenAI, the throttled request re-sent to Bedrock.
    first, events = await one_turn(deployment, calls)
    assert [(t.heard, t.reply) for t in first.turns] == [(ASKED, FROM_BEDROCK)]
    assert switches(events) == [("stt", "deepgram", "openai"), ("llm", "openai", "bedrock")]
    assert events[0].reason.startswith("server:") and "503" in events[0].reason
    assert events[1].reason.startswith("rate_limit:") and "429" in events[1].reason
    assert 0 <= events[0].at_secs < events[1].at_secs < first.ended_at - first.started_at
    record = first.record("call-1").model_copy(update={"fallbacks": events})
    assert record.model_dump()["fallbacks"][1]["to_provider"] == "bedrock"

    # Call 2, while the failures are fresh: it starts on the backups without trying the primaries.
    throttled = chats(openai)
    second, events = await one_turn(deployment, calls)
    assert [(t.heard, t.reply) for t in second.turns] == [(ASKED, FROM_BEDROCK)]
    assert switches(events) == [("stt", "deepgram", "openai"), ("llm", "openai", "bedrock")]
    assert all("cooldown 600 s" in e.reason and e.at_secs < 0.5 for e in events)
    assert chats(openai) == throttled
    assert {type(e.processor).__name__ for e in calls.errors[1]} == {"DeepgramSTT"}  # idle, still unreachable

    # The primaries recover and the cooldown passes: call 3 is served by Deepgram and OpenAI again.
    deepgram.behaviour.fail_status, openai.chat_status = None, None
    monkeypatch.setattr(HEALTH, "cooldown_secs", 0.0)
    third, events = await one_turn(deployment, calls)
    assert [(t.heard, t.reply) for t in third.turns] == [(ASKED, FROM_OPENAI)]
    assert events == []
    assert deepgram.streams[-1].results_sent > 0 and chats(openai) == throttled + 1
    assert calls.errors[2] == []


async def test_fallback_on_no_first_result_in_time(fakes: Callable[..., Any], calls: CallLog) -> None:
    """Deepgram's first result and OpenAI's first token come later than the file's response_timeout_secs."""
    deepgram = fakes(FakeDeepgram, Behaviour(api_key="test-key", first_byte_delay_s=6.0), transcripts=[ASKED])
    openai = fakes(ChatFailingOpenAI, transcripts=[ASKED], replies=[FROM_OPENAI])
    bedrock = fakes(FakeBedrock, replies=[FROM_BEDROCK])
    openai.chat_delay_s = 6.0

    result, events = await one_turn(config("fallback", deepgram=deepgram, openai=openai, bedrock=bedrock), calls)

    # The utterance Deepgram sat on was re-sent to OpenAI, and the context OpenAI sat on to Bedrock.
    assert [(t.heard, t.reply) for t in result.turns] == [(ASKED, FROM_BEDROCK)]
    assert switches(events) == [("stt", "deepgram", "openai"), ("llm", "openai", "bedrock")]
    assert "no final transcript after Finalize within 2 s" in events[0].reason
    assert events[1].reason == "connectivity: Error during completion: Request timed out."
    assert len(openai.requests("/v1/audio/transcriptions")) == 1


async def test_healthy_providers_never_fail_over(fakes: Callable[..., Any], calls: CallLog) -> None:
    """Deepgram's endpointing finalizes each utterance before the VAD stops, so the ``Finalize`` sent at the
    stop finds nothing buffered and gets no answer, as with the real service: that is not lateness."""
    deepgram = fakes(FakeDeepgram, transcripts=[ASKED] * 20)
    openai = fakes(ChatFailingOpenAI, replies=["Nine."] * 20)
    bedrock = fakes(FakeBedrock, replies=[FROM_BEDROCK])

    deployment = config("fallback", deepgram=deepgram, openai=openai, bedrock=bedrock)
    result = await simulate_call(deployment, [said(ASKED)] * 20, settle_secs=1.0)

    assert fallback_events(calls.pipelines[-1].services) == []
    assert calls.errors[-1] == [] and result.errors == []
    assert [(t.heard, t.reply) for t in result.turns] == [(ASKED, "Nine.")] * 20
    assert len(deepgram.entries("finalize_unanswered")) >= 10  # the case the watchdog must not mistake
    assert bedrock.received == [] and openai.requests("/v1/audio/transcriptions") == []


async def test_a_deepgram_that_goes_silent_mid_call_still_fails_over(fakes: Callable[..., Any], calls: CallLog) -> None:
    """A good first turn does not blind the watchdog: the next utterance owes a final again."""
    asked_again = "Are you open on Sunday?"

    def transcript(utterance: Any) -> str:
        if utterance.index == 1:
            deepgram.muted = True  # from the second utterance on, Deepgram hears but never answers
        return ASKED

    deepgram = fakes(FakeDeepgram, transcripts=transcript)
    openai = fakes(ChatFailingOpenAI, transcripts=[asked_again], replies=["Nine.", "No, closed on Sunday."])
    bedrock = fakes(FakeBedrock, replies=[FROM_BEDROCK])

    deployment = config("fallback", deepgram=deepgram, openai=openai, bedrock=bedrock)
    result = await simulate_call(deployment, [said(ASKED), said(asked_again)], settle_secs=1.0)

    (event,) = fallback_events(calls.pipelines[-1].services)
    assert (event.role, event.from_provider, event.to_provider) == ("stt", "deepgram", "openai")
    assert "no final transcript after Finalize within 2 s" in event.reason
    assert [(t.heard, t.reply) for t in result.turns] == [(ASKED, "Nine."), (asked_again, "No, closed on Sunday.")]
    assert len(openai.requests("/v1/audio/transcriptions")) == 1  # the first utterance is not transcribed again
