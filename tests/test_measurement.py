"""Latency and cost are what a caller hears and what the price table says (issue 6).

- The voice-to-voice figure equals the silence gap in the call's own stereo recording within 20 ms.
- A stage's configured latency shows up in that stage.
- A call's cost equals a hand calculation from the reported usage and the price table.
"""

from __future__ import annotations

import io
import wave
from datetime import date

import numpy as np
import pytest
from pipecat.observers.service_metrics_observer import ServiceUsageKind, ServiceUsageRecord

from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.latency import AUDIBLE
from voxpipe.providers.spec import Prices
from voxpipe.records.cost import add_usage, price
from voxpipe.records.model import Usage

TESTKIT_CALL = """
name: measured
agent: {instructions: You are a receptionist.}
vad: {stop_secs: 0.2}
turn: {strategy: silence, timeout_secs: 0.2}
stt: {provider: testkit_stt, options: {transcripts: ["what are your opening hours", "thanks"]}}
llm: {provider: testkit_llm, options: {default_reply: "We are open nine to six.", latency_secs: LLM_LATENCY}}
tts: {provider: testkit_tts, options: {latency_secs: 0.1}}
"""


@pytest.fixture(scope="module")
def speech() -> list[CallerTurn]:
    return [CallerTurn.from_text("What are your opening hours?"), CallerTurn.from_text("Thanks a lot.")]


def _gaps_in_recording(result) -> list[float]:
    """For each caller utterance: ms from its last audible sample to the bot's next audible sample."""
    buffer = io.BytesIO()
    result.write_wav(buffer, stereo=True)
    buffer.seek(0)
    with wave.open(buffer) as wav:
        rate = wav.getframerate()
        track = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2).astype(np.int32)
    caller, bot = np.abs(track[:, 0]) > AUDIBLE, np.abs(track[:, 1]) > AUDIBLE
    # utterance ends: audible caller samples followed by > 0.5 s of caller silence
    loud = np.flatnonzero(caller)
    ends = [int(a) + 1 for a, b in zip(loud, [*loud[1:], len(caller) + rate], strict=True) if b - a > rate // 2]
    bot_loud = np.flatnonzero(bot)
    return [(bot_loud[bot_loud >= end][0] - end) / rate * 1000 for end in ends]


async def test_voice_to_voice_matches_the_recording(speech: list[CallerTurn]) -> None:
    deployment = parse_deployment(TESTKIT_CALL.replace("LLM_LATENCY", "0.3"))
    result = await simulate_call(deployment, speech, settle_secs=0.6)
    reported = [turn.voice_to_voice_ms for turn in result.turns]
    assert all(value is not None for value in reported)
    gaps = _gaps_in_recording(result)
    assert len(gaps) == len(reported)
    for measured, figure in zip(gaps, reported, strict=True):
        assert abs(measured - figure) <= 20, (gaps, reported)
    # VAD stop (0.2 s) + LLM latency (0.3 s) + TTS latency (0.1 s) at least
    assert all(figure >= 600 for figure in reported)


async def test_configured_latency_shows_in_its_stage(speech: list[CallerTurn]) -> None:
    fast = await simulate_call(parse_deployment(TESTKIT_CALL.replace("LLM_LATENCY", "0.0")), speech[:1])
    slow = await simulate_call(parse_deployment(TESTKIT_CALL.replace("LLM_LATENCY", "0.5")), speech[:1])

    def llm_stage(result) -> float:
        turn = result.turns[0].latency_ms()
        return turn["llm_first_token"] - turn["stt_final"]

    assert 450 <= llm_stage(slow) - llm_stage(fast) <= 560
    heard = slow.turns[0]
    assert heard.heard == "what are your opening hours"
    assert heard.reply == "We are open nine to six."


async def test_call_cost_equals_hand_calculation(speech: list[CallerTurn]) -> None:
    deployment = parse_deployment(TESTKIT_CALL.replace("LLM_LATENCY", "0.0"))
    result = await simulate_call(deployment, speech, settle_secs=0.6)
    record = result.record(caller_id="+15550100")
    by_role = {usage.role: usage for usage in record.usage}
    assert set(by_role) == {"stt", "llm", "tts"}
    from voxpipe_testkit.plugin import LLM, STT, TTS

    llm, stt, tts = by_role["llm"], by_role["stt"], by_role["tts"]
    llm_prices, stt_prices, tts_prices = LLM.prices_for(None), STT.prices_for(None), TTS.prices_for(None)
    expected_llm = (
        llm.text_input_tokens * llm_prices.per_million_input_tokens
        + llm.text_output_tokens * llm_prices.per_million_output_tokens
    ) / 1e6
    expected_stt = stt.audio_seconds / 60 * stt_prices.per_audio_minute
    expected_tts = tts.characters / 1000 * tts_prices.per_thousand_characters
    assert llm.text_input_tokens > 0 and llm.text_output_tokens > 0 and stt.audio_seconds > 0
    assert tts.characters == len("We are open nine to six.") * 2
    assert llm.cost_usd == pytest.approx(expected_llm)
    assert stt.cost_usd == pytest.approx(expected_stt)
    assert tts.cost_usd == pytest.approx(expected_tts)
    assert record.cost_usd == pytest.approx(expected_llm + expected_stt + expected_tts)
    assert record.cost_per_minute == pytest.approx(record.cost_usd / (record.duration_secs / 60))


def _record(**tokens: int | None) -> ServiceUsageRecord:
    return ServiceUsageRecord(kind=ServiceUsageKind.LLM, processor="x", timestamp=0.0, **tokens)


def test_gross_and_net_usage_are_billed_once() -> None:
    prices = Prices(
        source="test",
        as_of=date(2026, 11, 1),
        per_million_input_tokens=4.0,
        per_million_cached_input_tokens=0.4,
        per_million_output_tokens=16.0,
        per_million_audio_input_tokens=32.0,
        per_million_cached_audio_input_tokens=0.4,
        per_million_audio_output_tokens=64.0,
    )
    # OpenAI Realtime style (gross): prompt 1000 = 300 text + 700 audio, of which 200 text + 100 audio cached.
    gross = Usage(role="realtime", provider="p")
    add_usage(
        gross,
        _record(
            prompt_tokens=1000,
            completion_tokens=500,
            total_tokens=1500,
            cache_read_input_tokens=300,
            cache_read_input_audio_tokens=100,
            input_audio_tokens=700,
            output_audio_tokens=400,
        ),
        prompt_tokens_include_cached=True,
    )
    assert (gross.text_input_tokens, gross.cached_text_input_tokens) == (100, 200)
    assert (gross.audio_input_tokens, gross.cached_audio_input_tokens) == (600, 100)
    assert (gross.text_output_tokens, gross.audio_output_tokens) == (100, 400)
    by_hand = (100 * 4.0 + 200 * 0.4 + 600 * 32.0 + 100 * 0.4 + 100 * 16.0 + 400 * 64.0) / 1e6
    assert price(gross, prices) == pytest.approx(by_hand)
    # Bedrock style (net): cache reads are reported beside prompt_tokens.
    net = Usage(role="llm", provider="bedrock")
    add_usage(
        net,
        _record(prompt_tokens=800, completion_tokens=50, total_tokens=1050, cache_read_input_tokens=200),
        prompt_tokens_include_cached=False,
    )
    assert (net.text_input_tokens, net.cached_text_input_tokens, net.text_output_tokens) == (800, 200, 50)
    assert price(net, prices) == pytest.approx((800 * 4.0 + 200 * 0.4 + 50 * 16.0) / 1e6)
