"""The example scenario set (benchmarks/scenarios/bike-shop) on the offline default and on the OpenAI cascade.

The cascade (configs/cascade-openai.yaml) runs against tests/fakes' FakeOpenAI on 127.0.0.1: no network, no
key. The fake speaks OpenAI's real wire protocol; what it says is scripted here as a well-behaved receptionist
model would answer (it calls the booking tool, declines stock tips, ends the call on goodbye), and its
transcription endpoint recognises each caller turn by its audio (the scenario's sentence, spoken by the
offline TTS). So the cloud column measures the pipeline, the protocol and the judging with a model that does
its job, and the offline column measures what Gemma 3 270M really does.

    python benchmarks/scenario_evals.py [--repeat 3] [--report evals.html]

Prints the tables of ``voxpipe bench --scenarios`` and a Markdown summary (docs/evals.md holds one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402

from tests.fakes import Behaviour, FakeOpenAI, Reply, ToolCall  # noqa: E402
from tests.fakes.script import Turn, Utterance  # noqa: E402
from voxpipe.bench.evals import EvalPlan, EvalResult, run_evals  # noqa: E402
from voxpipe.bench.evals_report import percent, print_evals  # noqa: E402
from voxpipe.bench.runner import logs_above_progress  # noqa: E402
from voxpipe.bench.scenario import load_scenarios  # noqa: E402
from voxpipe.bench.scenario_run import spoken_turn  # noqa: E402

SCENARIOS = ROOT / "benchmarks" / "scenarios" / "bike-shop"
DEPLOYMENTS = [ROOT / "voxpipe" / "configs" / "offline.yaml", ROOT / "configs" / "cascade-openai.yaml"]
KEY = "bench-key"


def receptionist(turn: Turn) -> Reply | ToolCall:
    """What a capable model answers in these scenarios."""
    said = (turn.last_user_text or "").lower()
    if turn.tool_results:
        if "HB-1042" in str(turn.tool_results[-1].output):
            return Reply("You're booked in for a tune-up on Saturday at ten, reference H B 1042. See you then!")
        return Reply("Thanks for calling Harbor Bikes, goodbye!")
    if "goodbye" in said or "bye" in said.split():
        return ToolCall("end_call", {"reason": "the caller said goodbye"})
    if "book" in said:
        return ToolCall("book_appointment", {"service": "tune-up", "day": "Saturday", "time": "10:00"})
    if "sunday" in said:
        return Reply("Sorry, we're closed on Sundays; we open 9 am to 6 pm, Monday to Saturday.")
    if "stock" in said:
        return Reply("Sorry, I can only help with bike repairs here at Harbor Bikes.")
    if "flat" in said:
        return Reply("A flat tyre repair is 15 dollars, done while you wait.")
    if "tune-up" in said and "includes" in said:
        return Reply(
            "A tune-up includes adjusting the gears and brakes, truing the wheels, checking the chain and "
            "bearings, inflating the tyres and a safety check, all for 45 dollars in one day."
        )
    if "tune-up" in said:
        return Reply("A basic tune-up is 45 dollars and takes one day.")
    return Reply("Harbor Bikes repairs and tunes bicycles; how can I help?")


def caller_turns() -> dict[str, bytes]:
    """Every scripted caller turn's words and its audio, as the offline TTS speaks it (as the bench will)."""
    return {
        turn.say: spoken_turn(turn.say).audio  # the bench's own copy: the offline TTS is not bit-exact twice
        for scenario in load_scenarios(SCENARIOS)
        for turn in scenario.turns or []
        if turn.say
    }


def transcriber(spoken: dict[str, bytes]):
    """The STT a good model would be: finds the uploaded segment inside a caller turn's audio and returns the
    words of that stretch (a turn the VAD split in two is transcribed in two parts, as a real STT would)."""

    def transcribe(utterance: Utterance) -> str:
        samples = np.frombuffer(utterance.pcm, dtype=np.int16)
        audible = np.flatnonzero(np.abs(samples.astype(np.int32)) > 500)
        if audible.size == 0:
            return ""
        at = int(audible[audible.size // 2])  # a probe from the middle of the speech: 320 samples (20 ms)
        probe = utterance.pcm[2 * at : 2 * at + 640]
        for text, audio in spoken.items():
            found = audio.find(probe)
            if found < 0 or found % 2:
                continue
            start = found // 2 - at  # where the segment begins in the turn's audio, in samples
            words = text.split()
            first = round(max(0, start) / (len(audio) // 2) * len(words))
            last = round(min(len(audio) // 2, start + samples.size) / (len(audio) // 2) * len(words))
            return " ".join(words[first : max(first + 1, last)])
        return ""

    return transcribe


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def markdown(result: EvalResult) -> str:
    lines = [
        "| deployment | pass rate [95% CI] | v2v p50 ms | v2v p90 ms | $ per call | judge $ | WER |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    summaries = {s.variant: s for s in result.summaries}
    for success in result.success:
        latency = summaries[success.variant].voice_to_voice_ms
        wer = result.word_error_rate(success.variant)
        lines.append(
            f"| {success.variant} | {success.passed}/{success.calls} = {percent(success.pass_rate)}"
            f" | {_ms(latency['p50'].value)} | {_ms(latency['p90'].value)} | {success.cost_per_call_usd:.5f}"
            f" | {success.judge_cost_usd:.5f} | {'—' if wer is None else f'{wer:.1%}'} |"
        )
    lines += [
        "",
        "| scenario | " + " | ".join(result.plan.deployments) + " |",
        "| --- |" + " --- |" * len(result.plan.deployments),
    ]
    for scenario, cells in result.grid().items():
        marks = [f"{sum(bool(r.call.record.passed) for r in runs)}/{len(runs)}" for runs in cells.values()]
        lines.append(f"| {scenario} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--report", type=Path, help="also write the HTML report here")
    args = parser.parse_args()
    console, err = Console(width=140), Console(stderr=True)
    with FakeOpenAI(Behaviour(api_key=KEY), replies=receptionist, transcripts=transcriber(caller_turns())) as fake:
        os.environ.update({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.url + "/v1"})
        plan = EvalPlan.load(DEPLOYMENTS, SCENARIOS, repeat=args.repeat)
        with logs_above_progress(err):
            result = asyncio.run(run_evals(plan, err))
    print_evals(result, console)
    for summary in result.success:
        for failure in summary.failures:
            console.print(f"{summary.variant}: {failure.expectation} failed in {failure.calls}: {failure.example}")
    if args.report:
        from voxpipe.bench.evals_html import write_evals_report

        write_evals_report(result, args.report)
    print(markdown(result))


if __name__ == "__main__":
    main()
