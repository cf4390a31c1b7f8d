"""Live A/B: sticky weighted assignment, records per variant, and `voxpipe report` / `voxpipe calls`."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.experiment import ExperimentRouter, assign
from voxpipe.records.model import CallRecord, TurnRecord
from voxpipe.records.stats import compare
from voxpipe.records.store import RecordStore

EXPERIMENT = """
name: booking
agent: {instructions: You take bookings.}
vad: {stop_secs: 0.2}
turn: {timeout_secs: 0.2}
stt: {provider: testkit_stt, options: {transcripts: ["book a table"]}}
llm: {provider: testkit_llm, options: {default_reply: "Booked."}}
tts: {provider: testkit_tts}
experiment:
  name: llm-latency
  variants:
    fast: {weight: 3}
    slow: {weight: 1, overrides: {llm: {provider: testkit_llm, options: {default_reply: "Booked.", latency_secs: 0.4}}}}
"""


def test_assignment_is_sticky_and_follows_weights() -> None:
    router = ExperimentRouter(parse_deployment(EXPERIMENT))
    counts = collections.Counter(router.route(f"+1555{i:07d}")[1] for i in range(8000))
    assert counts["fast"] / 8000 == pytest.approx(0.75, abs=0.02)
    assert all(router.route("+15551234567")[1] == router.route("+15551234567")[1] for _ in range(5))
    slow = router.variants["slow"]
    assert slow.experiment is None and slow.llm[0].options["latency_secs"] == 0.4
    assert router.variants["fast"].llm[0].options == {"default_reply": "Booked."}


def test_assignment_depends_on_the_experiment_name() -> None:
    experiment = parse_deployment(EXPERIMENT).experiment
    assert experiment is not None
    renamed = experiment.model_copy(update={"name": "other"})
    callers = [f"c{i}" for i in range(200)]
    assert [assign(experiment, c) for c in callers] != [assign(renamed, c) for c in callers]


def test_a_bad_variant_fails_at_start_up() -> None:
    bad = EXPERIMENT.replace(
        "provider: testkit_llm, options: {default_reply", "provider: nope, options: {default_reply"
    )
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        ExperimentRouter(parse_deployment(bad))


async def test_live_split_is_recorded_and_reported(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    deployment = parse_deployment(EXPERIMENT)
    router = ExperimentRouter(deployment)
    store = RecordStore(tmp_path / "calls.db")
    turn = CallerTurn.from_text("I would like to book a table.")
    callers = {}
    for i in range(40):  # find two callers of each arm
        caller = f"+1555{i:07d}"
        callers.setdefault(router.route(caller)[1], []).append(caller)
    for variant in ("fast", "slow"):
        for caller in callers[variant][:2]:
            routed, assigned = router.route(caller)
            result = await simulate_call(routed, [turn, turn], settle_secs=0.5)
            store.save(result.record(caller_id=caller, experiment="llm-latency", variant=assigned))
    records = store.list(experiment="llm-latency")
    assert collections.Counter(r.variant for r in records) == {"fast": 2, "slow": 2}
    database = str(tmp_path / "calls.db")
    report = run_cli("report", "--experiment", "llm-latency", "--json", "--records", database)
    assert report.returncode == 0, report.stderr
    summaries = {s["variant"]: s for s in json.loads(report.stdout)}
    assert summaries["fast"]["calls"] == 2 and summaries["slow"]["turns"] == 4
    diff = summaries["slow"]["median_diff_vs_baseline_ms"]["value"]
    assert 330 <= diff <= 470  # the slow arm's 0.4 s LLM latency, measured on the audio
    listing = run_cli("calls", "--since", "1h", "--json", "--records", database)
    listed = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [r["deployment"] for r in listed] == ["booking"] * 4
    assert all(r["turns"][0]["heard"] == "book a table" for r in listed)


def _record(call_id: str, variant: str, latencies: list[float], started: datetime) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        deployment="d",
        mode="cascade",
        started_at=started,
        duration_secs=60,
        experiment="e",
        variant=variant,
        turns=[TurnRecord(index=i, voice_to_voice_ms=v) for i, v in enumerate(latencies)],
    )


def test_comparison_flags_a_real_difference_and_not_noise(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    a = [_record(f"a{i}", "a", [800 + (i * 37) % 50 for _ in range(5)], now) for i in range(20)]
    b = [_record(f"b{i}", "b", [950 + (i * 41) % 50 for _ in range(5)], now) for i in range(20)]
    a_again = [_record(f"c{i}", "c", [800 + (i * 29) % 50 for _ in range(5)], now) for i in range(20)]
    summaries = compare({"a": a, "b": b, "c": a_again})
    assert summaries[1].significant is True and summaries[1].median_diff_vs_baseline_ms.value > 100
    assert summaries[2].significant is False
    assert summaries[0].voice_to_voice_ms["p50"].low <= summaries[0].voice_to_voice_ms["p50"].value


def test_store_filters_by_time(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "r.db")
    old = datetime.now(UTC) - timedelta(days=3)
    store.save(_record("old", "a", [900], old))
    store.save(_record("new", "a", [900], datetime.now(UTC)))
    assert [r.call_id for r in store.list(since=datetime.now(UTC) - timedelta(days=1))] == ["new"]
    assert [r.call_id for r in store.list()] == ["old", "new"]
