"""Recordings: one stereo WAV per call, caller left, bot right, on the call's own clock (issue 18).

- the bot channel is what the caller heard: a reply cut by barge-in stops where playback stopped;
- per-turn gaps read from the file match the reported voice-to-voice within 20 ms, and ``voxpipe calls
  --verify`` says so;
- ``voxpipe calls`` links each call to its recordings; the file:// sweep deletes expired recordings;
- a call that reconnected has one WAV per connection: the sweep covers each, and ``--verify`` checks each
  connection's turns against its own (tests/test_recording_twilio.py plays the reconnect on the simulator).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from live_caller import LiveCaller, live_call

from tests.test_measurement import TESTKIT_CALL
from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.builder import CallPipeline
from voxpipe.pipeline.host import CallBookkeeping
from voxpipe.pipeline.latency import first_audible
from voxpipe.records.model import CallRecord, Recording, TurnRecord
from voxpipe.records.recording import AUDIBLE, Track, place, read_stereo, stereo_wav, turn_gaps
from voxpipe.records.recording_store import FileStore, recording_name, uploader
from voxpipe.records.store import RecordStore
from voxpipe.records.verify import verify, verify_recording

STORY = "Once upon a time there was a small red bicycle that lived in a shop by the sea. " * 3

MEASURED = TESTKIT_CALL.replace("LLM_LATENCY", "0.3") + 'recording: {enabled: true, store: "file://STORE"}\n'


@pytest.fixture(scope="module")
def speech() -> list[CallerTurn]:
    return [CallerTurn.from_text("What are your opening hours?"), CallerTurn.from_text("Thanks a lot.")]


def _stored(location: str) -> bytes:
    assert uploader.drain(30)
    return Path(location.removeprefix("file://")).read_bytes()


async def test_recording_gaps_match_reported_voice_to_voice(speech: list[CallerTurn], tmp_path: Path) -> None:
    deployment = parse_deployment(MEASURED.replace("STORE", str(tmp_path / "rec")))
    result = await simulate_call(deployment, speech, settle_secs=0.6)
    record = result.kept_record()
    [recording] = record.recordings
    assert (
        recording.location == (tmp_path / "rec" / f"{recording_name(record.call_id, record.started_at)}.wav").as_uri()
    )
    assert recording.turns == [1, 2] and recording.offset_secs == 0
    caller, bot, rate = read_stereo(_stored(recording.location))
    assert rate == 24000 and np.abs(caller).max() > AUDIBLE and np.abs(bot).max() > AUDIBLE
    reported = [turn.voice_to_voice_ms for turn in record.turns]
    gaps = turn_gaps(_stored(recording.location))
    assert len(gaps) == len(reported) == 2
    for measured, figure in zip(gaps, reported, strict=True):
        assert figure is not None and abs(measured - figure) <= 20, (gaps, reported)


BARGE_IN = f"""
name: interrupted
agent: {{instructions: You tell stories.}}
vad: {{stop_secs: 0.2}}
turn: {{strategy: silence, timeout_secs: 0.2}}
stt: {{provider: testkit_stt, options: {{transcripts: ["tell me a story", "stop please"]}}}}
llm: {{provider: testkit_llm, options: {{replies: [{{when: stop, say: Okay.}}], default_reply: "{STORY}"}}}}
tts: {{provider: testkit_tts}}
recording: {{enabled: true, store: "file://STORE"}}
"""


async def test_barge_in_cuts_the_bot_channel_where_playback_stopped(tmp_path: Path) -> None:
    deployment = parse_deployment(BARGE_IN.replace("STORE", str(tmp_path / "rec")))
    ask, stop = CallerTurn.from_text("Tell me a story.").audio, CallerTurn.from_text("Stop, please.").audio
    played: list = []

    async def caller(live: LiveCaller, _: CallPipeline) -> None:
        played.append(live.transport.played)
        await live.silence(1.0)
        await live.send(ask)
        await live.silence_until(live.bot_played_since(0))
        await live.silence(1.0)  # 1 s into a ~12 s story
        await live.send(stop)
        await live.silence(2.0)

    record = await live_call(deployment, caller, bookkeeping=CallBookkeeping(RecordStore(tmp_path / "calls.db")))
    [recording] = record.recordings
    caller_track, bot_track, rate = read_stereo(_stored(recording.location))
    caller_loud = np.flatnonzero(np.abs(caller_track.astype(np.int32)) > AUDIBLE)
    bot_loud = np.flatnonzero(np.abs(bot_track.astype(np.int32)) > AUDIBLE)
    # the barge-in: the caller's first audible sample after the story started
    story_start = bot_loud[0]
    barge_in = caller_loud[caller_loud > story_start][0]
    pauses = np.flatnonzero(np.diff(bot_loud) > rate * 0.3)
    story_end = bot_loud[pauses[0]]  # the story's last audible sample: the bot channel's first pause
    cut_after = (story_end - barge_in) / rate
    assert 0.0 < cut_after < 0.8, cut_after  # VAD start (0.2 s) plus the interruption's way through the pipeline
    assert (story_end - story_start) / rate < 3.0 < len(STORY) * 0.02  # far less than was synthesized
    # the bot channel holds exactly what was played: the cut story, then "Okay." (0.12 s), nothing else
    okay = bot_loud[bot_loud > story_end + rate * 0.3]
    assert okay.size and (okay[-1] - okay[0]) / rate < 0.3
    chunks = played[0]
    audible = sum(len(c.audio) // 2 for c in chunks if first_audible(c.audio, c.sample_rate) is not None)
    assert abs(audible / chunks[0].sample_rate - (bot_loud.size / rate)) < 0.1


def test_calls_links_recordings_and_verify_checks_them(run_cli, write_yaml, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_yaml(MEASURED.replace("STORE", str(tmp_path / "rec")).replace("0.3", "0.2"))
    db = str(tmp_path / "calls.db")
    done = run_cli("call", str(config), "--say", "What are your opening hours?", "--records", db, timeout=180)
    assert done.returncode == 0, done.stderr
    [wav] = list((tmp_path / "rec").glob("*.wav"))
    listed = run_cli("calls", "--json", "--records", db)
    assert [r["location"] for r in json.loads(listed.stdout)["recordings"]] == [wav.as_uri()]
    table = run_cli("calls", "--records", db, env={"COLUMNS": "300"})
    assert wav.as_uri() in table.stdout
    verified = run_cli("calls", "--verify", "--records", db)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "within 20 ms" in verified.stdout


def test_file_sweep_deletes_only_expired_recordings(tmp_path: Path) -> None:
    store = FileStore(tmp_path, retention_days=30)
    store.put("old", b"RIFF")
    store.put("new", b"RIFF")
    month_ago = time.time() - 31 * 86400
    os.utime(tmp_path / "old.wav", (month_ago, month_ago))
    assert store.sweep() == [tmp_path / "old.wav"]
    assert [p.name for p in tmp_path.glob("*.wav")] == ["new.wav"]


def test_the_sweep_covers_every_connection_of_a_call(tmp_path: Path) -> None:
    """A reconnected call's files are each aged by their own time: expired ones go, a recent one stays."""
    store = FileStore(tmp_path, retention_days=30)
    names = [recording_name("CA1", datetime(2026, 11, 1, 9, 0, second, tzinfo=UTC)) for second in (0, 40, 59)]
    for name in names:
        store.put(name, b"RIFF")
    month_ago = time.time() - 31 * 86400
    for name in names[:2]:
        os.utime(tmp_path / f"{name}.wav", (month_ago, month_ago))
    assert sorted(store.sweep()) == [tmp_path / f"{name}.wav" for name in names[:2]]
    assert [p.name for p in tmp_path.glob("*.wav")] == [f"{names[2]}.wav"]


def _two_turn_wav(gap_secs: float, rate: int = 8000) -> bytes:
    """A connection's WAV: the caller speaks 0.5 s, the bot answers ``gap_secs`` after for 0.5 s."""
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(rate // 2) / rate)).astype(np.int16)
    caller = np.concatenate([tone, np.zeros(int((gap_secs + 0.5) * rate), np.int16)])
    bot = np.concatenate([np.zeros(int((0.5 + gap_secs) * rate), np.int16), tone])
    return stereo_wav(caller, bot, rate)


def test_verify_checks_each_connections_turns_against_its_own_recording(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two connections, each a turn with its own gap (800 and 400 ms) in its own WAV, and a third whose WAV is
    gone: each turn is checked against its connection's file, and the missing one is named, not hidden."""
    first, second = tmp_path / "CA1-a.wav", tmp_path / "CA1-b.wav"
    first.write_bytes(_two_turn_wav(0.8))
    second.write_bytes(_two_turn_wav(0.4))
    gone = (tmp_path / "CA1-c.wav").as_uri()
    record = CallRecord(
        call_id="CA1",
        deployment="phone",
        mode="cascade",
        started_at=datetime.now(UTC),
        duration_secs=90.0,
        turns=[TurnRecord(index=i, voice_to_voice_ms=ms) for i, ms in ((1, 800.0), (2, 400.0), (3, 500.0))],
        recordings=[
            Recording(location=first.as_uri(), turns=[1]),
            Recording(location=second.as_uri(), offset_secs=30.0, turns=[2]),
            Recording(location=gone, offset_secs=60.0, turns=[3]),
        ],
    )
    checks = verify_recording(record, record.recordings[0]) + verify_recording(record, record.recordings[1])
    assert [(c.index, c.recording, c.ok) for c in checks] == [(1, first.as_uri(), True), (2, second.as_uri(), True)]
    assert [c.recorded_ms for c in checks] == [pytest.approx(800, abs=1), pytest.approx(400, abs=1)]
    with pytest.raises(OSError):
        verify(record)  # the record as a whole: its third recording is unreadable
    db = tmp_path / "calls.db"
    RecordStore(db).save(record)
    verified = run_cli("calls", "--verify", "--records", str(db), env={"COLUMNS": "300"})
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"CA1: recording {gone} unreadable" in " ".join(verified.stderr.split())
    assert "CA1-a.wav" in verified.stdout and "CA1-b.wav" in verified.stdout
    assert "all 2 turns within 20 ms" in verified.stdout


def test_the_bench_report_links_each_recording() -> None:
    from voxpipe.bench.html import recordings_section
    from voxpipe.bench.runner import CallOutcome

    def outcome(recording: str | None) -> CallOutcome:
        return CallOutcome("fast", "hours.wav", "open?", "open", "Yes.", 500.0, 1, recording)

    assert recordings_section([outcome(None)]) == ""
    section = recordings_section([outcome("file:///r/a&b.wav"), outcome(None)])
    assert '<a href="file:///r/a&amp;b.wav">file:///r/a&amp;b.wav</a>' in section and section.count("<a ") == 1


def test_an_unknown_store_is_a_config_error_naming_the_key() -> None:
    from voxpipe.config.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_deployment('name: x\nagent: {instructions: hi}\nrecording: {enabled: true, store: "gs://b/x"}\n')
    assert ":3: recording.store:" in str(error.value) and "use file://DIR or s3://BUCKET/PREFIX" in str(error.value)


def test_a_track_lays_chunks_end_to_end_even_when_their_times_bunch_up() -> None:
    """Marks that come back in a burst (a busy loop) must not overwrite audio: each chunk is kept, in order."""
    rate, chunk = 8000, 320  # 40 ms chunks
    pcm = [np.full(chunk, 1000 * (i + 1), dtype=np.int16).tobytes() for i in range(4)]
    track = Track()
    track.add(1.000, pcm[0], rate)
    track.add(1.100, pcm[1], rate)  # chunks 1 and 2 reported together: 2 proves 1 played before it
    track.add(1.101, pcm[2], rate)
    track.add(1.145, pcm[3], rate)  # 4 ms after the end of 2: jitter, closed up
    laid = place(track.laid_out(), 1.0, rate)
    starts = [round(at - 1.0, 3) for at, _ in track.laid_out()]
    assert starts == [0.0, 0.065, 0.105, 0.145]
    assert sorted(set(laid.tolist()) - {0}) == [1000, 2000, 3000, 4000]  # nothing overwritten
    assert (laid[round(0.065 * rate) :] != 0).all()  # the last three end to end
