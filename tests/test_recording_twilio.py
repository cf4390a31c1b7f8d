"""A served Twilio Media Streams call is recorded like any other: the simulator plays Twilio against the app.

The recording is 8 kHz stereo (the phone line's rate): the caller's 300 Hz "speech" on the left, the bot's
440 Hz tone on the right. The bot channel is written by playout (the marks Twilio echoes): every stretch of it
lies where the simulator played it, within one 20 ms frame; the story the caller interrupts stops where the
``clear`` cut it, and no audio the clear dropped is in the file. Each turn's gap in the file matches the
reported voice-to-voice within 20 ms. With
``redact:``, the conversation the call host stores and the record hold no card number, and neither does any
file the server wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import TwilioMediaSimulator
from tests.test_twilio_media import RATE, audible, deployment, simulator, speech, stored_messages, turn
from voxpipe.config.loader import apply_overrides
from voxpipe.records.model import CallRecord
from voxpipe.records.recording import AUDIBLE, place, read_stereo, turn_gaps
from voxpipe.records.recording_store import recording_name, uploader
from voxpipe.records.store import RecordStore
from voxpipe.records.verify import verify
from voxpipe.web.app import create_app


def phone_app(tmp_path: Path, transcripts: list[str], overrides: dict[str, Any]) -> FastAPI:
    """The app serving the test phone deployment with ``overrides``; records in ``tmp_path / "calls.db"``."""
    phone = apply_overrides(deployment(tmp_path, transcripts), overrides)
    return create_app([phone], records=RecordStore(tmp_path / "calls.db"), warm_up=False)


def recorded_to(tmp_path: Path) -> dict[str, Any]:
    return {"recording": {"enabled": True, "store": f"file://{tmp_path / 'rec'}"}}


@pytest.fixture
def server(tmp_path: Path, registry: object) -> Iterator[RunningServer]:
    transcripts = ["what are your hours", "tell me a story", "sorry to interrupt"]
    with RunningServer(phone_app(tmp_path, transcripts, recorded_to(tmp_path))) as running:
        yield running


FRAME_SECS = 0.02  # one Twilio media frame


def _loud(track: np.ndarray) -> np.ndarray:
    return np.abs(track.astype(np.int32)) > AUDIBLE


def _within(loud: np.ndarray, other: np.ndarray, samples: int) -> np.ndarray:
    """Where ``loud`` is audible with no audible sample of ``other`` within ``samples`` either side."""
    other = np.pad(other, (0, max(0, len(loud) - len(other))))[: len(loud)]
    near = np.convolve(other.astype(np.int32), np.ones(2 * samples + 1, dtype=np.int32), mode="same") > 0
    return loud & ~near


def _stretches(mask: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """Where ``mask`` is set, as (start, end) seconds into the file: what an assertion names."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    stretches: list[tuple[float, float]] = []
    for start, end in zip(edges[::2] / rate, edges[1::2] / rate, strict=True):
        if stretches and start - stretches[-1][1] < FRAME_SECS:  # one stretch across a sine's quiet samples
            stretches[-1] = (stretches[-1][0], round(end, 3))
        else:
            stretches.append((round(start, 3), round(end, 3)))
    return stretches


def _dominant_hz(track: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(track.astype(float)))
    return float(np.fft.rfftfreq(len(track), 1 / rate)[np.argmax(spectrum)])


async def test_a_twilio_call_is_recorded_as_the_caller_heard_it(server: RunningServer, tmp_path: Path) -> None:
    async with simulator(server) as call:
        await barge_in_call(call)
    await asyncio.sleep(0.5)
    [record] = RecordStore(tmp_path / "calls.db").list()
    assert_recorded_as_heard(call, record, tmp_path / "rec")


async def barge_in_call(call: TwilioMediaSimulator) -> None:
    """The greeting, a question and its answer, then a story the caller interrupts (and the reply to that)."""
    await call.wait_for(lambda: audible(call.heard), what="the greeting")
    await asyncio.sleep(1.2)
    await turn(call)
    await call.speak(speech())  # "tell me a story"
    await call.wait_for(lambda: sum(len(p.pcm) for p in audible(call.heard)) > 2.4 * RATE * 2, what="the story")
    await asyncio.sleep(1.0)
    await call.speak(speech(0.4))  # barge in
    await call.wait_for(lambda: call.clears, what="a clear")
    await asyncio.sleep(2.0)


def assert_recorded_as_heard(
    call: TwilioMediaSimulator, record: CallRecord, folder: Path, within_secs: float = FRAME_SECS
) -> None:
    """``call``'s recording (a ``barge_in_call``) is the simulator's line: the caller on the left, the bot on the
    right as it played (within ``within_secs`` either way), cut where the clear cut it, each turn's gap the
    record's voice-to-voice within 20 ms."""
    [wav] = folder.glob("*.wav")
    assert wav.name == f"{recording_name(call.call_sid, record.started_at)}.wav"
    assert [r.location for r in record.recordings] == [wav.as_uri()]
    assert uploader.drain(30)
    data = wav.read_bytes()
    caller, bot, rate = read_stereo(data)
    assert rate == RATE
    caller_loud = np.flatnonzero(np.abs(caller.astype(np.int32)) > AUDIBLE)
    bot_loud = np.flatnonzero(np.abs(bot.astype(np.int32)) > AUDIBLE)
    assert abs(_dominant_hz(caller, rate) - 300) < 10 and abs(_dominant_hz(bot, rate) - 440) < 10
    reported = [t.voice_to_voice_ms for t in record.turns]
    gaps = turn_gaps(data)
    assert len(gaps) == len(reported) >= 2
    for measured, figure in zip(gaps, reported, strict=True):
        assert figure is not None and abs(measured - figure) <= 20, (gaps, reported)
    # the story (the bot's third stretch: greeting, answer, story) ends soon after the caller barged in
    pauses = np.flatnonzero(np.diff(bot_loud) > rate * 0.3)
    story_start, story_end = bot_loud[pauses[1] + 1], bot_loud[pauses[2]]
    barge_in = caller_loud[caller_loud > story_start][0]
    assert 0.0 < (story_end - barge_in) / rate < 0.8

    # The bot channel is the simulator's playout, within ``within_secs`` either way. The file's clock is found
    # from the caller's first words (each media frame is placed where it arrived: when the simulator sent it,
    # less its length).
    origin = call.spoken[0].at - call.frame_secs - caller_loud[0] / rate
    heard = _loud(place([(p.at, p.pcm) for p in call.heard], origin, rate))
    recorded = _loud(bot)
    frame = round(within_secs * rate)
    cleared = round((call.clears[0] - origin) * rate)
    unheard, missing = _within(recorded, heard, frame), _within(heard, recorded, frame)
    assert not unheard.any(), _stretches(unheard, rate)  # no bot audio the caller did not hear
    assert not missing.any(), _stretches(missing, rate)  # all the caller heard, where it was heard
    after_clear = recorded[cleared + frame :]
    resumed = np.flatnonzero(heard[cleared + frame :])[0]  # the next reply (the simulator's)
    assert not after_clear[: resumed - frame].any()  # nothing of the dropped story after the clear
    assert recorded[cleared - 2 * frame : cleared].any()  # and the story was playing up to it


async def test_a_served_call_stores_its_history_and_record_redacted(tmp_path: Path, registry: object) -> None:
    app = phone_app(tmp_path, ["my card is 4111 1111 1111 1111"], {"redact": {"entities": ["card_number"]}})
    with RunningServer(app) as running:
        async with simulator(running) as call:
            await call.wait_for(lambda: audible(call.heard), what="the greeting")
            await asyncio.sleep(1.2)
            await turn(call)
        await asyncio.sleep(0.5)
    messages = stored_messages(tmp_path, call.call_sid)  # what the session store kept (the call host wrote it)
    assert {"role": "user", "content": "my card is [card_number]"} in messages
    assert {"role": "assistant", "content": "You said: my card is [card_number]"} in messages
    [record] = RecordStore(tmp_path / "calls.db").list()
    assert record.turns[0].heard == "my card is [card_number]"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"4111" not in path.read_bytes(), path


def audible_stretches(track: np.ndarray, rate: int) -> list[float]:
    """The lengths (seconds) of what a channel holds: audible runs apart by more than 0.3 s."""
    loud = np.flatnonzero(np.abs(track.astype(np.int32)) > AUDIBLE)
    if not loud.size:
        return []
    breaks = np.flatnonzero(np.diff(loud) > rate * 0.3)
    starts, ends = np.concatenate([[loud[0]], loud[breaks + 1]]), np.concatenate([loud[breaks], [loud[-1]]])
    return [(end - start) / rate for start, end in zip(starts, ends, strict=True)]


def _heard_secs(call: object) -> float:
    return sum(len(p.pcm) // 2 for p in audible(call.heard)) / RATE  # type: ignore[attr-defined]


async def test_a_reconnected_call_keeps_each_connections_recording(tmp_path: Path, registry: object) -> None:
    """The socket drops mid-call (no ``stop``) and the same callSid connects again: the call's one record
    names two WAVs in order, the first is not overwritten, and each holds its own connection's audio: the
    first the greeting, the caller's 0.5 s question and its answer; the second the caller's 1.2 s question and
    its answer, no greeting (a resumed call is not greeted again). Each connection's turns are verified against
    its own WAV."""
    app = phone_app(tmp_path, ["what are your hours"], recorded_to(tmp_path))  # each connection's STT hears it
    with RunningServer(app) as running:
        async with simulator(running) as call:
            await call.wait_for(lambda: audible(call.heard), what="the greeting")
            await asyncio.sleep(1.2)
            await turn(call)
            call._socket.transport.abort()  # the line drops: the TCP connection is gone, no stop event
        await asyncio.sleep(1.0)
        assert uploader.drain(30)
        [first_wav] = (tmp_path / "rec").glob("*.wav")
        first_bytes = first_wav.read_bytes()
        async with simulator(running, call_sid=call.call_sid) as again:
            await asyncio.sleep(1.0)
            assert not audible(again.heard)  # resumed, not greeted
            await turn(again, speech(1.2))
            await again.stop()
        await asyncio.sleep(1.0)
    assert uploader.drain(30)

    [record] = RecordStore(tmp_path / "calls.db").list()
    wavs = sorted((tmp_path / "rec").glob("*.wav"))  # named by call and connection start: in call order
    assert len(wavs) == 2 and wavs[0] == first_wav and first_wav.read_bytes() == first_bytes  # not overwritten
    assert all(w.name.startswith(f"{call.call_sid}-") for w in wavs)
    assert [r.location for r in record.recordings] == [w.as_uri() for w in wavs]
    assert [r.turns for r in record.recordings] == [[1], [2]]
    assert [t.heard for t in record.turns] == ["what are your hours"] * 2
    assert record.recordings[0].offset_secs == 0 and record.recordings[1].offset_secs > 3.0

    first_caller, first_bot, rate = read_stereo(wavs[0].read_bytes())
    second_caller, second_bot, _ = read_stereo(wavs[1].read_bytes())
    greeting, answer = audible_stretches(first_bot, rate)  # the greeting, then "We are open nine to five."
    [answer_again] = audible_stretches(second_bot, rate)  # only the resumed connection's answer
    assert abs(greeting + answer - _heard_secs(call)) < 0.1 and abs(answer_again - _heard_secs(again)) < 0.1
    [asked], [asked_again] = audible_stretches(first_caller, rate), audible_stretches(second_caller, rate)
    assert abs(asked - 0.5) < 0.05 and abs(asked_again - 1.2) < 0.05  # each connection's own caller audio

    checks = verify(record)
    assert [(c.index, c.recording) for c in checks] == [(1, wavs[0].as_uri()), (2, wavs[1].as_uri())]
    assert all(c.ok for c in checks), checks
