"""Presenting simulated calls: a rich table per call, or the same data as JSON."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from voxpipe.bench.simulated_call import CallResult

STAGES = ("stt_final", "llm_first_token", "tts_first_audio", "first_audio_out")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def print_call(result: CallResult, console: Console) -> None:
    if result.greeting:
        console.print(f"[bold]greeting:[/bold] {result.greeting}")
    table = Table(title=f"{result.deployment} ({result.mode}) — ms after the end of the caller's speech")
    for column in ("#", "caller said", "STT heard", "bot reply"):
        table.add_column(column, overflow="fold")
    for column in ("STT final", "LLM 1st token", "TTS 1st audio", "audio out", "voice-to-voice"):
        table.add_column(column, justify="right")
    for index, turn in enumerate(result.turns, 1):
        latency = turn.latency_ms()
        table.add_row(
            str(index),
            turn.caller_text or "(audio)",
            turn.heard or "—",
            turn.reply or "—",
            *(_ms(latency[stage]) for stage in STAGES),
            f"[bold]{_ms(turn.voice_to_voice_ms)}[/bold]",
        )
    console.print(table)
    for usage in result.usage:
        console.print(f"{usage.role} {usage.provider} ({usage.model or '-'}): ${usage.cost_usd:.5f}")


def call_json(result: CallResult) -> dict[str, Any]:
    return {
        "deployment": result.deployment,
        "mode": result.mode,
        "greeting": result.greeting,
        "turns": [
            {
                "caller_text": turn.caller_text,
                "heard": turn.heard,
                "reply": turn.reply,
                "latency_ms": turn.latency_ms(),
                "voice_to_voice_ms": turn.voice_to_voice_ms,
            }
            for turn in result.turns
        ],
        "usage": [usage.model_dump() for usage in result.usage],
    }
