"""Presenting simulated calls: a rich table per call, or the same data as JSON."""

from __future__ import annotations

import statistics
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from voxpipe.bench.simulated_call import CallResult
from voxpipe.records.model import CallRecord, Recording
from voxpipe.records.stats import Estimate, VariantSummary, voice_to_voice
from voxpipe.records.verify import TOLERANCE_MS, TurnCheck

STAGES = ("stt_final", "llm_first_token", "tts_first_audio", "first_audio_out")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def print_call(result: CallResult, console: Console) -> None:
    if result.greeting:
        console.print(f"[bold]greeting:[/bold] {escape(result.greeting)}")
    table = Table(title=f"{result.deployment} ({result.mode}) — ms after the end of the caller's speech")
    for column in ("#", "caller said", "STT heard", "bot reply"):
        table.add_column(column, overflow="fold")
    for column in ("STT final", "LLM 1st token", "TTS 1st audio", "audio out", "voice-to-voice"):
        table.add_column(column, justify="right")
    for index, (text, turn) in enumerate(result.exchanges(), 1):
        latency = turn.latency_ms()
        table.add_row(
            str(index),
            escape(text or "(audio)"),  # words as said: "[card_number]" is a redaction, not rich markup
            escape(turn.heard or "—"),
            escape(turn.reply or "—"),
            *(_ms(latency[stage]) for stage in STAGES),
            f"[bold]{_ms(turn.voice_to_voice_ms)}[/bold]",
        )
    console.print(table)
    for usage in result.usage:
        console.print(f"{usage.role} {usage.provider} ({usage.model or '-'}): ${usage.cost_usd:.5f}")
    console.print(f"[bold]total cost:[/bold] ${result.cost_usd:.5f}")
    for event in result.fallbacks:
        console.print(
            f"[yellow]fallback[/yellow] at {event.at_secs:.1f} s: {event.role} {event.from_provider} -> "
            f"{event.to_provider} ({event.reason})",
            markup=True,
            highlight=False,
        )
    for error in result.errors:
        label = "[red]fatal error[/red]" if error.fatal else "[yellow]error[/yellow]"
        at = f" at {error.at_secs:.1f} s" if error.at_secs is not None else ""
        console.print(f"{label}{at}: ", end="")
        console.print(error.summary(), markup=False, highlight=False)
    if result.failure is not None:
        failure = result.failure
        then = f"transfer to {failure.transfer_to}" if failure.transfer_to else failure.then
        console.print(f"[bold red]call failed[/bold red]; the caller was told {failure.say!r}, then {then}")


def call_json(result: CallResult) -> dict[str, Any]:
    return {
        "deployment": result.deployment,
        "mode": result.mode,
        "greeting": result.greeting,
        "turns": [
            {
                "caller_text": text,
                "heard": turn.heard,
                "reply": turn.reply,
                "latency_ms": turn.latency_ms(),
                "voice_to_voice_ms": turn.voice_to_voice_ms,
            }
            for text, turn in result.exchanges()
        ],
        "usage": [usage.model_dump() for usage in result.usage],
        "cost_usd": result.cost_usd,
        "errors": [error.model_dump() for error in result.errors],
        "fallbacks": [event.model_dump() for event in result.fallbacks],
        "failure": result.failure.model_dump() if result.failure else None,
        "failed": result.failed,
    }


def _estimate(estimate: Estimate | None) -> str:
    if estimate is None or estimate.value is None:
        return "—"
    if estimate.low is None or estimate.high is None:
        return f"{estimate.value:.0f}"
    return f"{estimate.value:.0f} [{estimate.low:.0f}–{estimate.high:.0f}]"


def print_comparison(summaries: list[VariantSummary], console: Console, title: str) -> None:
    """Variants side by side; the first is the baseline the others are tested against."""
    table = Table(title=f"{title} — voice-to-voice ms with 95% bootstrap intervals")
    for column in ("variant", "calls", "turns", "p50", "p90", "p99", "$/min", "errors", "fallbacks", "Δp50 vs base"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for summary in summaries:
        latency = summary.voice_to_voice_ms
        diff = _estimate(summary.median_diff_vs_baseline_ms)
        if summary.significant is not None:
            diff += " significant" if summary.significant else " n.s."
        table.add_row(
            summary.variant,
            str(summary.calls),
            str(summary.turns),
            _estimate(latency["p50"]),
            _estimate(latency["p90"]),
            _estimate(latency["p99"]),
            f"{summary.cost_per_minute_usd:.4f}",
            f"{summary.error_rate:.0%}",
            f"{summary.fallback_rate:.0%}",
            diff if summary.median_diff_vs_baseline_ms else "baseline",
        )
    console.print(table)


def print_verification(checks: list[TurnCheck], console: Console) -> bool:
    """A table of turns, reported vs recorded voice-to-voice, each with the recording (file name) it was read
    from; ``False`` if any is off by more than the tolerance."""
    table = Table("call", "turn", "recording", "reported ms", "from recording ms", "difference ms", "ok")
    for c in checks:
        difference = "—" if c.reported_ms is None or c.recorded_ms is None else f"{c.reported_ms - c.recorded_ms:+.1f}"
        ok = "yes" if c.ok else "[red]NO[/red]"
        turn = "—" if c.index is None else str(c.index)
        recording = c.recording.rsplit("/", 1)[-1]
        table.add_row(c.call_id[:12], turn, recording, _ms(c.reported_ms), _ms(c.recorded_ms), difference, ok)
    console.print(table)
    bad = [c for c in checks if not c.ok]
    if not checks:
        console.print("no recorded calls to verify")
    elif bad:
        console.print(
            f"{len(bad)} of {len(checks)} turns differ from their recording by more than {TOLERANCE_MS:.0f} ms"
        )
    else:
        console.print(f"all {len(checks)} turns within {TOLERANCE_MS:.0f} ms of their recording")
    return not bad


def print_calls(records: list[CallRecord], console: Console) -> None:
    """``voxpipe calls``: one row per recorded call (scenario calls with their verdicts; the location of each
    connection's recording, one a line, a later connection's with its start on the call's clock)."""
    scenarios = any(record.scenario for record in records)  # bench scenario calls: show their verdicts
    table = Table("started", "call", "deployment", "variant", "turns", "v2v p50 ms", "cost $", "$/min", "errors")
    if scenarios:
        table.add_column("scenario")
        table.add_column("expectations passed", justify="right")
    table.add_column("recording", overflow="fold")
    for record in records:
        latencies = voice_to_voice([record])
        p50 = f"{statistics.median(latencies):.0f}" if latencies else "—"
        passed = sum(verdict.outcome == "pass" for verdict in record.verdicts)
        table.add_row(
            record.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            record.call_id[:12],
            record.deployment,
            record.variant or "",
            str(len(record.turns)),
            p50,
            f"{record.cost_usd:.4f}",
            f"{record.cost_per_minute:.4f}",
            f"{len(record.errors)}{' (failed)' if record.failed else ''}",
            *(
                [record.scenario or "", f"{passed}/{len(record.verdicts)}" if record.scenario else ""]
                if scenarios
                else []
            ),
            "\n".join(_recording(r) for r in record.recordings),
        )
    console.print(table)


def _recording(recording: Recording) -> str:
    """A recording's location; a later connection's with when it started (seconds into the call)."""
    return escape(recording.location) + (f" (+{recording.offset_secs:.1f} s)" if recording.offset_secs else "")
