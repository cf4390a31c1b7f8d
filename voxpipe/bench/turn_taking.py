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
