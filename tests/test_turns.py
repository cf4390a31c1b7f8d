"""Turn-taking with simulated callers (issue 14): speculative replies, resume, backchannels, endpointing.

The testkit providers are deterministic: an energy VAD hears the caller's tones, the scripted STT gives one
transcript per VAD utterance, the scripted LLM answers "You said: {user}", the TTS speaks a tone as long as
the text. Each test plays a caller in real time and looks at what the caller heard and what the call kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from voxpipe_testkit.audio import tone

from voxpipe.bench.simulated_call import (
    INPUT_RATE,
    OUTPUT_RATE,
    CallerTurn,
    CallResult,
    CallUnderTest,
    drive_call,
)
from voxpipe.bench.turn_taking import reply_onsets
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import InterruptionsConfig
from voxpipe.pipeline.barge_in import is_backchannel
from voxpipe.pipeline.builder import CallPipeline, build_call
from voxpipe.pipeline.endpointing import looks_unfinished
from voxpipe.pipeline.latency import TurnMeter
from voxpipe.transports.memory import MemoryTransport

BASE = """
name: turns
agent: {instructions: You are a receptionist.}
vad: {provider: testkit_vad, stop_secs: 0.2}
"""


def speech(*parts: float) -> bytes:
    """Caller audio: tone, silence, tone, ... (seconds each, starting with a tone)."""
    pcm = b""
    for index, secs in enumerate(parts):
        pcm += tone(secs, INPUT_RATE) if index % 2 == 0 else b"\0\0" * int(secs * INPUT_RATE)
    return pcm


@dataclass
class Played:
    call: CallPipeline
    result: CallResult

    def service(self, role: str) -> Any:
        return self.call.services[role]

    def messages(self, role: str) -> list[str]:
        return [str(m["content"]) for m in self.call.context.messages if isinstance(m, dict) and m["role"] == role]


async def play(yaml: str, turns: list[CallerTurn]) -> Played:
    deployment = parse_deployment(BASE + yaml)
    transport = MemoryTransport(INPUT_RATE, OUTPUT_RATE)
    meter = TurnMeter(transport.output())
    call = build_call(deployment, transport, observers=[meter], clock=meter.clock)
    target = CallUnderTest(deployment.name, deployment.mode, transport, call.worker, meter, call.meter)
    return Played(call, await drive_call(target, turns, settle_secs=0.8))


# ------------------------------------------------------------------------------------- speculation

PAUSE = """
turn: {strategy: silence, timeout_secs: 0.8, speculate: true}
stt: {provider: testkit_stt, options: {transcripts: ["I'd like to book a", "tune-up on Saturday"]}}
llm: {provider: testkit_llm, options: {latency_secs: 0.05}}
tts: {provider: testkit_tts, options: {latency_secs: 0.05, secs_per_char: 0.01}}
"""


async def test_a_pause_mid_sentence_gets_no_answer_and_the_speculative_reply_is_withdrawn() -> None:
    played = await play(PAUSE, [CallerTurn(speech(0.8, 0.5, 0.8))])
    llm, tts, stats = played.service("llm"), played.service("tts"), played.result.turn_taking

    # The LLM did answer the first half (speculatively) while the caller paused...
    asked = [inference.messages[-1]["content"] for inference in llm.inferences]
    assert asked[0] == "I'd like to book a"
    assert asked[-1] == "I'd like to book a tune-up on Saturday"
    # ...but the caller heard one reply, to the whole sentence, after they finished.
    spoken = " ".join(tts.spoken)
    assert spoken.count("You said") == 1 and "book a tune-up on Saturday" in spoken
    assert len(played.result.turns) == 1 and stats.premature_replies == 0
    # The history holds the whole turn and the reply heard, nothing of the withdrawn one.
    assert played.messages("user") == ["I'd like to book a tune-up on Saturday"]
    assert played.messages("assistant") == ["You said: I'd like to book a tune-up on Saturday"]
    # The withdrawn reply's tokens are wasted, not used.
    assert stats.withdrawn == 1 and stats.speculations >= 2
    wasted = {usage.role: usage for usage in stats.wasted_usage}
    withdrawn_reply = "You said: I'd like to book a"
    assert wasted["llm"].text_output_tokens == len(withdrawn_reply.split())
    assert wasted["llm"].cost_usd > 0
    used = {usage.role: usage for usage in played.result.usage}
    heard_reply = played.messages("assistant")[0]
    assert used["llm"].text_output_tokens == len(heard_reply.split())


async def test_a_reply_withdrawn_before_its_usage_is_reported_is_still_counted_as_wasted() -> None:
    slow_llm = PAUSE.replace("latency_secs: 0.05}", "latency_secs: 0.8}", 1)
    played = await play(slow_llm, [CallerTurn(speech(0.8, 0.5, 0.8))])
    stats = played.result.turn_taking
    assert stats.withdrawn == 1 and stats.wasted_estimated == 1  # cancelled before its first token
    (wasted,) = stats.wasted_usage
    (used,) = [usage for usage in played.result.usage if usage.role == "llm"]
    # Estimated from the request that replaced it: the same prompt, no output.
    assert wasted.text_input_tokens == used.text_input_tokens > 0 and wasted.text_output_tokens == 0
    assert played.messages("assistant") == ["You said: I'd like to book a tune-up on Saturday"]


SPECULATE_GAIN = """
turn: {strategy: silence, timeout_secs: 0.6, speculate: SPECULATE}
stt: {provider: testkit_stt, options: {transcripts: ["what time do you open"]}}
llm: {provider: testkit_llm, options: {latency_secs: 0.3}}
tts: {provider: testkit_tts, options: {latency_secs: 0.05}}
"""


async def test_speculation_answers_sooner_with_the_same_reply() -> None:
    turns = [CallerTurn(speech(0.8))]
    off = await play(SPECULATE_GAIN.replace("SPECULATE", "false"), turns)
    on = await play(SPECULATE_GAIN.replace("SPECULATE", "true"), turns)
    assert on.messages("assistant") == off.messages("assistant") == ["You said: what time do you open"]
    latency_off, latency_on = off.result.turns[0].voice_to_voice_ms, on.result.turns[0].voice_to_voice_ms
    assert latency_off is not None and latency_on is not None
    # The LLM's 300 ms ran inside the 600 ms wait instead of after it.
    assert latency_off - latency_on >= 200, (latency_off, latency_on)
    assert on.result.turn_taking.speculations == 1 and on.result.turn_taking.withdrawn == 0
    assert on.result.turn_taking.wasted_usage == []


# ------------------------------------------------------------------------------------- barge-in

LONG_REPLY = """
turn: {strategy: silence, timeout_secs: 0.2}
stt: {provider: testkit_stt, options: {transcripts: ["tell me everything", "SECOND"]}}
llm:
  provider: testkit_llm
  options: {default_reply: "We open at nine. We close at six. We are closed on Sundays. Bookings are free."}
tts: {provider: testkit_tts, options: {secs_per_char: 0.03}}
"""


async def test_a_cough_during_the_reply_resumes_it() -> None:
    yaml = LONG_REPLY.replace('"SECOND"', '""') + "interruptions: {resume_after_secs: 0.4}\n"
    cough = CallerTurn(speech(0.3), barge_in_after_secs=0.5)
    played = await play(yaml, [CallerTurn(speech(0.6)), cough])
    tts, stats = played.service("tts"), played.result.turn_taking
    assert stats.resumed == 1
    # The reply was cut by the cough, then spoken on from the first sentence the caller had not heard.
    reply = "We open at nine. We close at six. We are closed on Sundays. Bookings are free."
    assert "".join(tts.spoken).replace(" ", "") != reply.replace(" ", "")
    resumed = tts.spoken[-1]
    assert reply.endswith(resumed.strip()) and "Bookings are free." in resumed
    # What the caller heard is what the history says: the heard part, then the resumed part, nothing twice.
    heard = " ".join(played.messages("assistant"))
    assert " ".join(heard.split()) == reply
    assert played.messages("user") == ["tell me everything"]  # no reply to the cough, no "please repeat"
    assert len(played.service("llm").inferences) == 1


async def test_without_resume_a_cough_drops_the_reply() -> None:
    yaml = LONG_REPLY.replace('"SECOND"', '""')
    played = await play(yaml, [CallerTurn(speech(0.6)), CallerTurn(speech(0.3), barge_in_after_secs=0.5)])
    assert played.result.turn_taking.resumed == 0
    assert "Bookings are free." not in " ".join(played.messages("assistant"))


async def test_uh_huh_does_not_stop_the_bot() -> None:
    yaml = LONG_REPLY.replace("SECOND", "uh-huh") + "interruptions: {backchannels: []}\n"
    played = await play(yaml, [CallerTurn(speech(0.6)), CallerTurn(speech(0.4), barge_in_after_secs=0.5)])
    reply = "We open at nine. We close at six. We are closed on Sundays. Bookings are free."
    assert played.result.turn_taking.backchannels == ["uh-huh"]
    assert len(played.service("llm").inferences) == 1  # not answered
    assert " ".join(" ".join(played.messages("assistant")).split()) == reply  # said in full
    assert len(reply_onsets(played.result.bot_audio)) == 1  # one stretch of speech, never cut
    # In the history as what it was: an acknowledgement said over the reply, after it, not a turn answered.
    history = [(m["role"], m["content"]) for m in played.call.context.messages if isinstance(m, dict)]
    assert history[-3:] == [
        ("user", "tell me everything"),
        ("assistant", reply),
        ("user", "(backchannel) uh-huh"),
    ]


async def test_words_that_are_not_a_backchannel_still_interrupt() -> None:
    yaml = LONG_REPLY.replace("SECOND", "wait, on Saturday") + "interruptions: {backchannels: [uh-huh]}\n"
    played = await play(yaml, [CallerTurn(speech(0.6)), CallerTurn(speech(0.5), barge_in_after_secs=0.5)])
    assert played.result.turn_taking.backchannels == []
    assert played.messages("user") == ["tell me everything", "wait, on Saturday"]


# ------------------------------------------------------------------------------------- endpointing

NUMBER = """
turn: {strategy: silence, timeout_secs: 0.3, MAX}
stt: {provider: testkit_stt, options: {transcripts: ["my number is 415 555", "0123"]}}
llm: {provider: testkit_llm}
tts: {provider: testkit_tts, options: {secs_per_char: 0.01}}
"""


@pytest.mark.parametrize("dynamic", [True, False])
async def test_a_dictated_phone_number_is_not_cut_off(dynamic: bool) -> None:
    yaml = NUMBER.replace("MAX", "max_delay_secs: 1.5" if dynamic else "speculate: false")
    played = await play(yaml, [CallerTurn(speech(0.8, 0.7, 0.6))])
    if dynamic:
        assert played.messages("user") == ["my number is 415 555 0123"]
        assert played.result.turn_taking.premature_replies == 0
    else:  # the fixed short wait answers the half number while the caller is still dictating
        assert played.messages("user")[0] == "my number is 415 555"
        assert played.result.turn_taking.premature_replies >= 1


# ------------------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("I'd like to book a", True),
        ("My chain keeps slipping and", True),
        ("my number is 415 555", True),
        ("my number is four one five,", True),
        ("Is the shop on", True),
        ("Are you open on Sunday?", False),
        ("I'd like to book a tune-up.", False),
        ("Thanks", False),
        ("", False),
    ],
)
def test_what_looks_unfinished(text: str, unfinished: bool) -> None:
    assert looks_unfinished(text) is unfinished


@pytest.mark.parametrize(
    ("text", "backchannel"),
    [("Uh-huh.", True), ("okay", True), ("Yeah, right.", True), ("mm-hmm", True), ("okay, but Saturday", False)],
)
def test_what_is_a_backchannel(text: str, backchannel: bool) -> None:
    phrases = InterruptionsConfig(backchannels=[]).backchannel_phrases()
    assert phrases is not None and is_backchannel(text, phrases) is backchannel
