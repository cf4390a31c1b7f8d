"""Scenario evals in audio mode: spoken caller turns through VAD, STT and turn-taking, and barge-in.

The caller's turns are spoken by the offline TTS and played in real time into a testkit deployment (energy
VAD, scripted STT and LLM, tone TTS). The same scenario in text mode must get the same verdicts: only the
way the words reach the model differs. A caller barging in is heard only in audio: the bot must fall silent,
and a deployment whose interruptions are off fails that expectation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxpipe.bench.scenario import load_scenarios
from voxpipe.bench.scenario_run import play_scenario
from voxpipe.config.loader import load_deployment

SAID = ["I'd like to book a tune-up for Saturday.", "Sorry, how much is a flat tyre repair?"]

DEPLOYMENT = f"""
name: shop
agent:
  instructions: A scripted receptionist.
  greeting: Hello, Harbor Bikes.
  tools: [{{kind: end_call}}]
vad: {{provider: testkit_vad, stop_secs: 0.4}}
turn: {{strategy: silence, timeout_secs: 0.2}}
interruptions: {{enabled: INTERRUPTIONS}}
stt: {{provider: testkit_stt, options: {{transcripts: {SAID!r}}}}}
llm:
  provider: testkit_llm
  options:
    replies:
      - when: book
        tool_call: {{name: book_appointment, arguments: {{day: Saturday}}}}
        say: "You are booked for {{result.day}}; a tune-up takes one day and costs forty five dollars, pay on pickup."
      - when: flat
        say: "A flat tyre repair is 15 dollars."
tts: {{provider: testkit_tts, options: {{secs_per_char: 0.04}}}}
"""

SCENARIO = f"""
name: book-then-interrupt
mode: MODE
tools:
  - kind: mock
    name: book_appointment
    parameters: {{type: object, properties: {{day: {{type: string}}}}}}
    options: {{result: {{day: Saturday}}}}
turns:
  - say: "{SAID[0]}"
    expect:
      tool_called: {{name: book_appointment, arguments: {{day: {{contains: sat}}}}}}
      reply: {{contains: booked}}
      within_ms: 3000
  - say: "{SAID[1]}"
    BARGE_IN
    expect:
      reply: {{matches: "15|fifteen"}}
expect:
  ends_with: caller_hangup
  no_tool: end_call
"""


def _play(write_yaml: Callable[..., Path], mode: str, interruptions: bool = True) -> Any:
    barge_in = "barge_in_after_ms: 600" if mode == "audio" else ""
    scenario = write_yaml(SCENARIO.replace("MODE", mode).replace("BARGE_IN", barge_in), f"{mode}.yaml")
    deployment = write_yaml(DEPLOYMENT.replace("INTERRUPTIONS", str(interruptions).lower()), "shop.yaml")
    (loaded,) = load_scenarios(scenario)
    return play_scenario(loaded, load_deployment(deployment), None, settle_secs=0.6)


def _outcomes(call: Any) -> dict[tuple[str, int | None], str]:
    return {(v.expectation, v.turn): v.outcome for v in call.record.verdicts}


async def test_audio_and_text_mode_agree_and_a_barge_in_is_heard(
    write_yaml: Callable[..., Path], registry: Any
) -> None:
    audio = await _play(write_yaml, "audio")
    text = await _play(write_yaml, "text")

    spoken = _outcomes(audio)
    assert spoken.pop(("barge_in", 2)) == "pass", audio.record.verdicts
    assert spoken == _outcomes(text)
    assert set(spoken.values()) == {"pass"} and len(spoken) == 6
    assert [t.heard for t in audio.conversation.turns] == SAID  # through VAD and STT, one utterance per turn
    assert audio.record.turns[0].voice_to_voice_ms is not None
    assert text.record.turns[0].voice_to_voice_ms is None and text.record.turns[0].llm_first_token_ms is not None
    (barge_in,) = [v for v in audio.record.verdicts if v.expectation == "barge_in"]
    assert barge_in.detail.startswith("the bot fell silent ")


async def test_a_bot_that_talks_over_the_caller_fails_the_barge_in(
    write_yaml: Callable[..., Path], registry: Any
) -> None:
    call = await _play(write_yaml, "audio", interruptions=False)
    (verdict,) = [v for v in call.record.verdicts if v.expectation == "barge_in"]
    assert verdict.outcome == "fail", verdict
