"""Turn-taking settings in realtime (speech-to-speech) mode: what maps onto the provider's server VAD, and what
is refused when the file is loaded instead of being silently ignored.

``interruptions.enabled: false`` reaches the OpenAI Realtime fake as ``interrupt_response: false`` in the
``session.update`` it receives, and the caller speaking over the reply then leaves it playing; the
cascade-only keys (speculation, smart-turn, dynamic endpointing, backchannels, resume) are config errors
naming file, line and key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.cloud_fixtures import (  # noqa: F401 (pytest fixtures, by name)
    KEY,
    CallLog,
    calls_fixture,
    cloud_fixture,
    config,
    fakes_fixture,
    said,
)
from tests.fakes import Behaviour, FakeOpenAIRealtime
from tests.test_config import problems_of
from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import apply_overrides, parse_deployment

GREETING = "Hello, Harbor Bikes, how can I help you?"
LONG_REPLY = "We open at nine in the morning and close at six in the evening, Monday to Saturday."
pytestmark = pytest.mark.usefixtures("registry")

REALTIME = "name: rt\nmode: realtime\nagent:\n  instructions: Hi.\nrealtime:\n  provider: testkit_realtime\n"


async def call_with_barge_in(realtime: FakeOpenAIRealtime, overrides: dict[str, Any]) -> Any:
    """A realtime call whose caller asks, then speaks again 0.8 s into the (long) reply."""
    deployment = apply_overrides(config("realtime-openai", realtime=realtime), overrides)
    barge_in = CallerTurn(said("Sorry, one more thing.").audio, barge_in_after_secs=0.8)
    return await simulate_call(deployment, [said("When do you open?"), barge_in], settle_secs=0.7)


def cancelled_responses(realtime: FakeOpenAIRealtime) -> list[dict[str, Any]]:
    done = [e for s in realtime.sessions for e in s.sent if e["type"] == "response.done"]
    return [e for e in done if e["response"]["status"] == "cancelled"]


@pytest.mark.usefixtures("cloud")
@pytest.mark.parametrize("enabled", [False, True], ids=["interruptions-off", "interruptions-on"])
async def test_interruptions_setting_reaches_the_server_vad(
    fakes: Callable[..., Any], calls: CallLog, enabled: bool
) -> None:
    # Audio streamed at about real time, as the real service does for a long reply: the caller speaks over a
    # response the server is still producing.
    paced = Behaviour(api_key=KEY, per_chunk_delay_s=0.09)
    replies = [GREETING, LONG_REPLY, "Sure."]
    realtime = fakes(FakeOpenAIRealtime, paced, transcripts=["When do you open?"], replies=replies)

    await call_with_barge_in(realtime, {"interruptions": {"enabled": enabled}})

    (session,) = realtime.sessions
    detection = session.config["audio"]["input"]["turn_detection"]
    # (Left out when enabled: the server's default interrupts.)
    assert detection["type"] == "server_vad" and detection.get("interrupt_response", True) is enabled
    # The vad section still maps as before (phone_line preset, stop_secs 0.5).
    assert (detection["threshold"], detection["prefix_padding_ms"], detection["silence_duration_ms"]) == (
        0.65,
        200,
        500,
    )
    cancelled = cancelled_responses(realtime)
    if enabled:
        assert [e["response"]["status_details"]["reason"] for e in cancelled] == ["turn_detected"]
    else:
        assert cancelled == [], "the caller's speech cut the reply off although interruptions are disabled"


@pytest.mark.usefixtures("cloud")
async def test_semantic_vad_without_interruptions(fakes: Callable[..., Any]) -> None:
    realtime = fakes(FakeOpenAIRealtime, transcripts=["When do you open?"], replies=[GREETING, "At nine."])
    deployment = apply_overrides(
        config("realtime-openai", realtime=realtime),
        {"interruptions": {"enabled": False}, "realtime": {"options": {"turn_detection": "semantic_vad"}}},
    )

    await simulate_call(deployment, [said("When do you open?")], settle_secs=0.5)

    detection = realtime.sessions[0].config["audio"]["input"]["turn_detection"]
    assert (detection["type"], detection["eagerness"], detection["interrupt_response"]) == (
        "semantic_vad",
        "auto",
        False,
    )


SERVER_VAD = "in realtime mode the provider's server VAD ends the caller's turn"
BARGE_IN = "in realtime mode the provider's server VAD stops the bot on speech"


@pytest.mark.parametrize(
    ("section", "key_line", "why"),
    [
        ("turn:\n  strategy: smart_turn\n", "f.yaml:8: turn.strategy", "turn_detection: semantic_vad"),
        ("turn:\n  speculate: true\n", "f.yaml:8: turn.speculate", "speculative replies need a cascade"),
        ("turn:\n  timeout_secs: 0.3\n", "f.yaml:8: turn.timeout_secs", "set vad.stop_secs"),
        ("turn:\n  min_delay_secs: 0.3\n", "f.yaml:8: turn.min_delay_secs", "set vad.stop_secs"),
        ("turn:\n  max_delay_secs: 1.0\n", "f.yaml:8: turn.max_delay_secs", "dynamic endpointing"),
        ("interruptions:\n  min_words: 2\n", "f.yaml:8: interruptions.min_words", BARGE_IN),
        ("interruptions:\n  backchannels: []\n", "f.yaml:8: interruptions.backchannels", BARGE_IN),
        ("interruptions:\n  resume_after_secs: 0.6\n", "f.yaml:8: interruptions.resume_after_secs", BARGE_IN),
    ],
)
def test_cascade_only_turn_settings_are_refused_for_realtime(section: str, key_line: str, why: str) -> None:
    (problem,) = problems_of(REALTIME + section)

    assert problem.startswith(f"{key_line}: cascade only, not for mode: realtime: ") and why in problem


def test_what_applies_to_realtime_is_accepted() -> None:
    text = REALTIME + "turn:\n  strategy: silence\ninterruptions:\n  enabled: false\nvad:\n  stop_secs: 0.4\n"

    deployment = parse_deployment(text, "f.yaml", environ={})

    assert deployment.interruptions.enabled is False and deployment.vad.resolved().stop_secs == 0.4


def test_every_refused_key_of_a_realtime_file_is_reported_at_its_line() -> None:
    text = REALTIME + "turn:\n  strategy: smart_turn\n  speculate: true\n  max_delay_secs: 1.5\n"

    assert [p.split(": cascade only")[0] for p in problems_of(text)] == [
        "f.yaml:8: turn.strategy",
        "f.yaml:9: turn.speculate",
        "f.yaml:10: turn.max_delay_secs",
    ]
