"""The bench's turn-taking table: what speculation, endpointing and barge-in handling did, and what they cost.

One row per deployment, from its calls' ``CallRecord.turn_taking`` and turns: the median time from the final
transcript to the reply's first audible sample (what speculation shortens), replies heard before the caller
had finished the turn (what dynamic endpointing prevents), speculative replies started and withdrawn, the
cost of the withdrawn ones against the whole (the price of speculation), resumed replies and backchannels.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from voxpipe.pipeline.latency import NEW_REPLY_GAP_SECS, first_audible, last_audible
from voxpipe.transports.memory import PlayedChunk

if TYPE_CHECKING:
    from voxpipe.bench.runner import BenchResult
    from voxpipe.records.model import CallRecord

COLUMNS = (
    "variant",
    "STT final→audio p50",
    "premature replies",
    "speculated",
    "withdrawn",
    "wasted $",
    "wasted share",
    "resumed",
    "backchannels",
)


def stt_final_to_audio_ms(records: list[CallRecord]) -> float | None:
    """Median ms from the final transcript to the first audible sample of the reply, over every turn."""
    gaps = [
        turn.voice_to_voice_ms - turn.stt_final_ms
        for record in records
        for turn in record.turns
        if turn.voice_to_voice_ms is not None and turn.stt_final_ms is not None
    ]
    return statistics.median(gaps) if gaps else None


def turn_taking_row(label: str, records: list[CallRecord]) -> list[str]:
    stats = [record.turn_taking for record in records]
    wasted = sum(s.wasted_cost_usd for s in stats)
    spent = wasted + sum(record.cost_usd for record in records)
    gap = stt_final_to_audio_ms(records)
    return [
        label,
        "—" if gap is None else f"{gap:.0f}",
        str(sum(s.premature_replies for s in stats)),
        str(sum(s.speculations for s in stats)),
        str(sum(s.withdrawn for s in stats)),
        f"{wasted:.5f}",
        f"{wasted / spent:.1%}" if spent else "—",
        str(sum(s.resumed for s in stats)),
        str(sum(len(s.backchannels) for s in stats)),
    ]


def print_turn_taking(result: BenchResult, console: Console) -> None:
    table = Table(title="turn-taking: ms, counts over all calls, US$ of withdrawn speculative replies")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for label, records in result.records.items():
        table.add_row(*turn_taking_row(label, records))
    console.print(table)


def reply_onsets(played: list[PlayedChunk]) -> list[float]:
    """When each bot reply became audible: the first audible sample after 0.3 s or more of bot silence."""
    onsets: list[float] = []
    last_end: float | None = None
    for chunk in played:
        start = first_audible(chunk.audio, chunk.sample_rate)
        if start is None:
            continue
        if last_end is None or chunk.started_at + start - last_end > NEW_REPLY_GAP_SECS:
            onsets.append(chunk.started_at + start)
        last_end = chunk.started_at + (last_audible(chunk.audio, chunk.sample_rate) or 0.0)
    return onsets


def premature_replies(spans: list[tuple[float, float]], played: list[PlayedChunk]) -> int:
    """Replies that became audible while the caller was between the start and the last word of a turn."""
    return sum(1 for onset in reply_onsets(played) for start, end in spans if start < onset < end)
