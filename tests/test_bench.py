"""``voxpipe bench``: word error rate, corpus loading, and a real bench of two testkit deployments.

The bench run plays a 3-utterance corpus (tones: the testkit's energy VAD hears them) in real time through two
deployments that differ only by ``latency_secs: 0.4`` on the scripted LLM, and checks that those 400 ms show
up as the LLM step of the report, and as a significant difference of voice-to-voice medians.
"""

from __future__ import annotations

import io
import json
import re
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from voxpipe_testkit.audio import tone

from voxpipe.bench import simulated_call
from voxpipe.bench.corpus import MANIFEST, CorpusError, load_corpus
from voxpipe.bench.runner import BenchPlan, BenchResult, bench_command, run_bench, stage_breakdown
from voxpipe.bench.wer import corpus_word_error_rate, normalise, word_error_rate, word_errors
from voxpipe.config.loader import parse_deployment
from voxpipe.providers.registry import Registry
from voxpipe.records.store import RecordStore

REPO_ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["Are you open on Sunday?", "How much is a tune-up?", "Book me in for ten thirty."]
HEARD = "are you open on sunday"  # what the scripted STT hears in every call

# ----------------------------------------------------------------------------------------------- WER


@pytest.mark.parametrize(
    ("reference", "hypothesis"),
    [
        ("Are you open on Sunday?", "are you open on sunday"),
        ("A tune-up costs forty-five dollars.", "A tune up costs $45"),
        ("Book me in at nine thirty a.m.", "book me in at 9:30 AM"),
        ("Book me in at nine thirty a.m.", "Book me in at 9.30 am."),
        ("two hundred and five", "205"),
        ("my booking for the twelfth", "My booking for the 12th."),
        ("twenty-first of May", "21st of May"),
        ("Um, OK, one thousand", "okay 1,000"),
    ],
)
def test_wer_ignores_writing_style(reference: str, hypothesis: str) -> None:
    assert word_error_rate(reference, hypothesis) == 0.0


def test_numbers_read_as_whisper_reads_them() -> None:
    assert normalise("nine thirty") == normalise("9:30") == ["930"]  # a clock time
    assert normalise("forty five") == ["45"]
    assert normalise("nineteen ninety") == ["1990"]
    assert normalise("I'd like a new tyre, OK?") == ["i", "would", "like", "a", "new", "tire", "okay"]


def test_word_errors_count_substitutions_deletions_and_insertions() -> None:
    assert word_errors(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert word_errors(["a", "b", "c"], ["a", "c"]) == 1
    assert word_errors(["a", "b", "c"], ["a", "b", "c", "d"]) == 1
    assert word_errors(["a", "b"], []) == 2
    assert word_error_rate("book a table for two", "book table for 2 people") == pytest.approx(2 / 5)


def test_corpus_wer_weighs_utterances_by_their_words() -> None:
    pairs = [("please book me in", "please book me in"), ("yes", "no")]
    assert corpus_word_error_rate(pairs) == pytest.approx(1 / 5)  # not the mean of 0 and 1
    assert word_error_rate("hello there", "") == 1.0
    with pytest.raises(ValueError, match="reference word"):
        word_error_rate("?!", "hello")


# -------------------------------------------------------------------------------------------- corpus


def write_wav(path: Path, pcm: bytes, sample_rate: int = 16000, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(width)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def tone_corpus(directory: Path, texts: list[str], *, manifest: bool = True) -> Path:
    """A corpus of 1 s tones (0.6 s is too short to make a turn), one per text: in ``manifest.jsonl``, or as
    ``.wav`` + ``.txt`` pairs."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, text in enumerate(texts, 1):
        write_wav(directory / f"u{index}.wav", tone(1.0, 16000, frequency_hz=220.0 * index))
        if manifest:
            lines.append(json.dumps({"audio": f"u{index}.wav", "text": text}))
        else:
            (directory / f"u{index}.txt").write_text(text + "\n", encoding="utf-8")
    if manifest:
        (directory / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "wav-and-txt"])
def test_corpus_layouts(tmp_path: Path, manifest: bool) -> None:
    utterances = load_corpus(tone_corpus(tmp_path, TEXTS, manifest=manifest))
    assert [(u.name, u.text) for u in utterances] == [(f"u{i}.wav", text) for i, text in enumerate(TEXTS, 1)]
    assert all(u.duration_secs == pytest.approx(1.0) for u in utterances)


def test_wav_rate_is_converted_to_the_callers_rate(tmp_path: Path) -> None:
    write_wav(tmp_path / "hi.wav", tone(0.5, 8000), sample_rate=8000)
    (tmp_path / "hi.txt").write_text("hi", encoding="utf-8")
    assert load_corpus(tmp_path)[0].duration_secs == pytest.approx(0.5)


def _bad_manifest(directory: Path, lines: list[str]) -> None:
    tone_corpus(directory, TEXTS[:1])
    write_wav(directory / "u8bit.wav", b"\x80" * 800, width=1)
    (directory / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: _bad_manifest(d, ['{"audio": "u1.wav"']), rf"{MANIFEST}:1: not JSON"),
        (lambda d: _bad_manifest(d, ['{"audio": "u1.wav", "text": " "}']), rf"{MANIFEST}:1: \"text\" must be"),
        (lambda d: _bad_manifest(d, ["", '{"text": "hi"}']), rf"{MANIFEST}:2: \"audio\" must name a WAV"),
        (lambda d: _bad_manifest(d, ['{"audio": "gone.wav", "text": "hi"}']), r"cannot read gone\.wav"),
        (lambda d: _bad_manifest(d, ['{"audio": "u8bit.wav", "text": "hi"}']), r"u8bit\.wav: only 16-bit"),
        (lambda d: (d / "u1.wav").write_bytes(tone(0.1, 16000)), r"u1\.wav: needs its text in u1\.txt"),
        (lambda d: (d / "notes.md").write_text("x"), r"no utterances: write a manifest\.jsonl"),
    ],
    ids=["json", "no-text", "no-audio", "missing-wav", "8-bit", "no-txt", "empty"],
)
def test_bad_corpus_is_reported_clearly(tmp_path: Path, setup: Callable[[Path], Any], expected: str) -> None:
    setup(tmp_path)
    with pytest.raises(CorpusError, match=expected):
        load_corpus(tmp_path)


def test_every_problem_is_listed_and_a_file_is_not_a_corpus(tmp_path: Path) -> None:
    _bad_manifest(tmp_path, ['{"audio": "gone.wav", "text": "hi"}', "nope", '{"audio": "u1.wav", "text": "ok"}'])
    with pytest.raises(CorpusError) as caught:
        load_corpus(tmp_path)
    assert [p.split(":")[1] for p in caught.value.problems] == ["2", "1"]  # parse problems, then audio ones
    with pytest.raises(CorpusError, match="not a directory"):
        load_corpus(tmp_path / "u1.wav")


def test_shipped_corpus() -> None:
    corpus = REPO_ROOT / "benchmarks" / "corpus"
    utterances = load_corpus(corpus)
    assert len(utterances) == 36
    voices = {utterance.voice for utterance in utterances}
    assert voices == {"heart", "joe", "espeak"}
    assert sum(f.stat().st_size for f in corpus.rglob("*.wav")) < 4 * 1024 * 1024
    for utterance in utterances:
        with wave.open(str(corpus / utterance.name)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert 1.0 < utterance.duration_secs < 5.0


# --------------------------------------------------------------------------------------------- bench


def deployment_yaml(name: str, llm_latency_secs: float) -> str:
    return f"""\
name: {name}
agent:
  instructions: You are a scripted test agent.
vad: {{provider: testkit_vad}}
turn: {{strategy: silence, timeout_secs: 0.1}}
stt: {{provider: testkit_stt, options: {{transcripts: ["{HEARD}"]}}}}
llm: {{provider: testkit_llm, options: {{latency_secs: {llm_latency_secs}, default_reply: "Yes, we are."}}}}
tts: {{provider: testkit_tts, options: {{secs_per_char: 0.01}}}}
"""


@dataclass
class Bench:
    """A finished bench: its result, where the report went, what it printed, and the most calls at once."""

    result: BenchResult
    report: Path
    out: str
    err: str
    most_in_flight: int


@pytest.fixture(scope="module")
def bench(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """One real bench, shared by the tests below. ``simulate_call`` is wrapped (not replaced) to count the
    calls in flight."""
    tmp = tmp_path_factory.mktemp("bench")
    configs = []
    for name, latency in (("fast", 0.0), ("slow-llm", 0.4)):
        configs.append(tmp / f"{name}.yaml")
        configs[-1].write_text(deployment_yaml(name, latency), encoding="utf-8")
    corpus = tone_corpus(tmp / "corpus", TEXTS)
    real_simulate_call = simulated_call.simulate_call
    in_flight = [0, 0]  # now, most

    async def counting(*args: Any, **kwargs: Any) -> simulated_call.CallResult:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        try:
            return await real_simulate_call(*args, **kwargs)
        finally:
            in_flight[0] -= 1

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(simulated_call, "simulate_call", counting)
        result = bench_command(
            configs,
            corpus,
            concurrency=2,
            report=tmp / "report" / "bench.html",
            records_db=tmp / "calls.db",
            out=Console(file=out, width=200),
            err=Console(file=err, width=200),
        )
    return Bench(result, tmp / "report" / "bench.html", out.getvalue(), err.getvalue(), in_flight[1])


def test_bench_compares_the_deployments(bench: Bench) -> None:
    fast, slow = bench.result.summaries
    assert (fast.variant, fast.calls, slow.variant, slow.calls) == ("fast", 3, "slow-llm", 3)
    assert fast.error_rate == slow.error_rate == 0.0
    assert slow.median_diff_vs_baseline_ms is not None and slow.significant is True
    assert slow.median_diff_vs_baseline_ms.value == pytest.approx(400, abs=60)
    assert "voice-to-voice ms with 95% bootstrap intervals" in bench.out and "significant" in bench.out


def test_bench_runs_calls_concurrently_with_a_progress_bar(bench: Bench) -> None:
    assert bench.most_in_flight == 2, "at most, and up to, --concurrency calls at once"
    assert re.search(r"warm-up .*2/2", bench.err) and re.search(r"calls .*6/6", bench.err)


def test_configured_llm_latency_shows_up_as_the_llm_step(bench: Bench) -> None:
    fast, slow = (stage_breakdown(summary) for summary in bench.result.summaries)
    assert slow["LLM"] - fast["LLM"] == pytest.approx(400, abs=60)
    for step in ("STT", "TTS", "playout"):
        assert slow[step] == pytest.approx(fast[step], abs=60), step


def test_bench_word_error_rate(bench: Bench) -> None:
    result = bench.result
    expected = corpus_word_error_rate((text, HEARD) for text in TEXTS)
    assert 0 < expected < 1
    assert result.word_error_rate("fast") == result.word_error_rate("slow-llm") == pytest.approx(expected)
    first = [o for o in result.outcomes if o.utterance == "u1.wav"]
    assert [(o.deployment, o.heard) for o in first] == [("fast", HEARD), ("slow-llm", HEARD)]


def test_bench_writes_the_html_report_and_charts(bench: Bench) -> None:
    result, report = bench.result, bench.report
    page = report.read_text(encoding="utf-8")
    for chart in ("cdf", "stages", "cost"):
        png = report.with_name(f"bench-{chart}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert page.count('src="data:image/png;base64,') == 3
    assert "significant" in page and "Δp50 vs base" in page
    for text in TEXTS:
        assert text in page.replace("&#x27;", "'")
    assert f"voxpipe report --experiment {result.experiment}" in page


def test_bench_records_can_be_reported_again(bench: Bench) -> None:
    saved = RecordStore(bench.report.parent.parent / "calls.db").list(experiment=bench.result.experiment)
    assert sorted((r.variant, r.caller_id) for r in saved) == sorted(
        (label, f"bench:u{i}.wav") for label in ("fast", "slow-llm") for i in (1, 2, 3)
    )


async def test_a_failing_call_is_counted_as_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async def unreachable(*args: Any, **kwargs: Any) -> simulated_call.CallResult:
        raise ConnectionError("provider unreachable")

    monkeypatch.setattr(simulated_call, "simulate_call", unreachable)
    plan = BenchPlan(
        {"down": parse_deployment(deployment_yaml("down", 0.0))},
        load_corpus(tone_corpus(tmp_path, TEXTS[:2])),
        tmp_path,
        warmup=0,
    )
    result = await run_bench(plan, Console(file=io.StringIO()))
    assert [[e.message for e in r.errors] for r in result.records["down"]] == [
        ["ConnectionError: provider unreachable"]
    ] * 2
    assert all(r.failed for r in result.records["down"])
    assert result.summaries[0].error_rate == 1.0
    assert result.word_error_rate("down") == 1.0  # nothing was heard
