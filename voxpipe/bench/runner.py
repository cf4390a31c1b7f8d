"""``voxpipe bench``: replay a corpus of caller audio through deployments and compare them.

Each utterance is one single-turn simulated call (greeting first, if the deployment has one), played in real
time, so a bench measures the latency a caller would hear. Calls are interleaved across deployments
(utterance 1 on every deployment, then utterance 2, ...) so that a slow moment of the machine does not land
on one deployment only. The records are the same ``CallRecord``s a live call leaves, labelled with a bench
experiment, so ``voxpipe report`` can show them again later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from typing import TypeVar

from loguru import logger
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from voxpipe.bench import simulated_call
from voxpipe.bench.corpus import Utterance, load_corpus
from voxpipe.bench.report import print_comparison
from voxpipe.bench.turn_taking import print_turn_taking
from voxpipe.bench.wer import corpus_word_error_rate
from voxpipe.config.models import Deployment
from voxpipe.logs import log_to_stderr
from voxpipe.records.model import CallError, CallRecord
from voxpipe.records.recording_store import uploader
from voxpipe.records.stats import VariantSummary, compare
from voxpipe.records.store import RecordStore

# The stages of a turn in time order, as named in ``VariantSummary.stage_p50_ms``, with the name of the step
# that ends at each one (the step starts at the previous stage; the first starts at the end of speech).
T = TypeVar("T")

STAGES = {"stt_final": "STT", "llm_first_token": "LLM", "tts_first_audio": "TTS", "voice_to_voice": "playout"}


@dataclass(frozen=True)
class BenchPlan:
    """What a bench runs: deployments by label (the first is the baseline), the corpus and how to play it."""

    deployments: dict[str, Deployment]
    utterances: list[Utterance]
    corpus_dir: Path
    sources: dict[str, Path] = field(default_factory=dict)  # label -> the YAML file it came from
    repeat: int = 1
    concurrency: int = 1
    warmup: int = 1  # untimed calls per deployment first: model loading and caches stay out of the numbers
    settle_secs: float = 1.0
    reply_timeout_secs: float = 20.0

    def __post_init__(self) -> None:
        if not self.deployments:
            raise ValueError("a bench needs at least one deployment")
        if self.repeat < 1 or self.concurrency < 1 or self.warmup < 0:
            raise ValueError("repeat and concurrency must be at least 1, warmup at least 0")

    @classmethod
    def load(
        cls, configs: Sequence[Path], corpus_dir: Path, *, repeat: int = 1, concurrency: int = 1, warmup: int = 1
    ) -> BenchPlan:
        """Load deployment files and a corpus; raises ``ConfigError`` or ``CorpusError``."""
        deployments, sources = load_deployments(configs)
        return cls(deployments, load_corpus(corpus_dir), corpus_dir, sources, repeat, concurrency, warmup)

    @property
    def calls(self) -> int:
        """Timed calls (warm-up calls excluded)."""
        return len(self.deployments) * len(self.utterances) * self.repeat


def load_deployments(configs: Sequence[Path]) -> tuple[dict[str, Deployment], dict[str, Path]]:
    """Deployment files by label (their names, made unique), and the file of each. Raises ``ConfigError``."""
    from voxpipe.config.loader import load_deployment

    deployments: dict[str, Deployment] = {}
    sources: dict[str, Path] = {}
    for path in configs:
        deployment = load_deployment(path)
        label = unique_label(deployment.name, deployments)
        deployments[label], sources[label] = deployment, path
    return deployments, sources


def unique_label(name: str, taken: Container[str]) -> str:
    """``name``, or ``name#2``, ``name#3``... when two files use the same deployment name."""
    label, number = name, 1
    while label in taken:
        number += 1
        label = f"{name}#{number}"
    return label


@dataclass(frozen=True)
class CallOutcome:
    """One utterance played once through one deployment: what was expected, heard and answered."""

    deployment: str
    utterance: str
    expected: str
    heard: str
    reply: str
    voice_to_voice_ms: float | None
    repeat: int
    recording: str | None = None  # where the call's recording is, when the deployment records calls
    voice: str = ""


@dataclass
class BenchResult:
    """Everything a bench measured; ``records`` are grouped by deployment label, baseline first."""

    plan: BenchPlan
    experiment: str
    started_at: datetime
    wall_secs: float
    records: dict[str, list[CallRecord]]
    outcomes: list[CallOutcome]

    @cached_property
    def summaries(self) -> list[VariantSummary]:
        """The same comparison as ``voxpipe report``: percentiles with bootstrap intervals, significance."""
        return compare(self.records)

    def word_error_rate(self, label: str, voice: str | None = None) -> float:
        """The STT's corpus word error rate on ``label``'s calls (a failed call counts as nothing heard), on one
        ``voice`` of the corpus or all of them."""
        return corpus_word_error_rate(
            (o.expected, o.heard)
            for o in self.outcomes
            if o.deployment == label and (voice is None or o.voice == voice)
        )

    @property
    def voices(self) -> list[str]:
        """The corpus's voices, in corpus order (``[""]`` when it names none)."""
        return list(dict.fromkeys(utterance.voice for utterance in self.plan.utterances))


def stage_breakdown(summary: VariantSummary) -> dict[str, float | None]:
    """Median milliseconds spent in each step of a turn: the difference of consecutive stage medians.

    "STT" runs from the end of the caller's speech to the final transcript, so it includes the VAD's stop
    delay; waiting for the end of the turn lands in whichever step it overlaps (see docs/latency.md). A stage
    that was never measured (no STT in realtime mode) gives ``None`` and its time goes to the next step.
    """
    steps: dict[str, float | None] = {}
    previous = 0.0
    for stage, step in STAGES.items():
        moment = summary.stage_p50_ms.get(stage)
        steps[step] = None if moment is None else moment - previous
        previous = previous if moment is None else moment
    return steps


async def run_bench(plan: BenchPlan, console: Console | None = None) -> BenchResult:
    """Play every utterance ``plan.repeat`` times through every deployment, at most ``concurrency`` at once."""
    started_at = datetime.now(UTC)
    experiment = f"bench-{started_at:%Y%m%d-%H%M%S}"
    gate = asyncio.Semaphore(plan.concurrency)
    records: dict[str, list[CallRecord]] = {label: [] for label in plan.deployments}
    outcomes: list[CallOutcome] = []

    async def play(label: str, utterance: Utterance, repeat: int | None, done: Callable[[], None]) -> None:
        """One call; ``repeat`` ``None`` is a warm-up call, whose measurements are dropped."""
        deployment = plan.deployments[label]
        labels = {"caller_id": f"bench:{utterance.name}", "experiment": experiment, "variant": label}
        async with gate:
            try:
                result = await simulated_call.simulate_call(
                    deployment,
                    [utterance.turn],
                    settle_secs=plan.settle_secs,
                    reply_timeout_secs=plan.reply_timeout_secs,
                )
            except Exception as exc:  # a failing provider is a measured outcome, not the end of the bench
                error = CallError(kind="exception", message=f"{type(exc).__name__}: {exc}", fatal=True)
                record = CallRecord.starting_now(deployment.name, deployment.mode, **labels, errors=[error])
            else:
                # a warm-up call is redacted but not kept: no recording, no trace
                record = result.record(**labels) if repeat is None else result.kept_record(**labels)
                if not any(turn.voice_to_voice_ms is not None for turn in record.turns):
                    record.errors.append(CallError(message=f"no reply heard within {plan.reply_timeout_secs:g} s"))
        done()
        if repeat is None:
            return
        records[label].append(record)
        turn = record.turns[0] if record.turns else None
        outcomes.append(
            CallOutcome(
                deployment=label,
                utterance=utterance.name,
                expected=utterance.text,
                heard=turn.heard if turn else "",
                reply=turn.reply if turn else "",
                voice_to_voice_ms=turn.voice_to_voice_ms if turn else None,
                repeat=repeat,
                recording=record.recordings[0].location if record.recordings else None,  # a bench call: one connection
                voice=utterance.voice,
            )
        )

    clock = time.monotonic()
    with progress_bar(console or Console(stderr=True)) as progress:
        for description, jobs in interleaved(list(plan.deployments), plan.utterances, plan.repeat, plan.warmup):
            task = progress.add_task(description, total=len(jobs))
            await asyncio.gather(*(play(*job, partial(progress.advance, task)) for job in jobs))

    order = {utterance.name: index for index, utterance in enumerate(plan.utterances)}
    labels = list(plan.deployments)
    outcomes.sort(key=lambda o: (order[o.utterance], labels.index(o.deployment), o.repeat))
    return BenchResult(plan, experiment, started_at, time.monotonic() - clock, records, outcomes)


Job = tuple[str, T, int | None]  # deployment label, what to play, repeat (None: a warm-up call)


def interleaved(labels: list[str], items: Sequence[T], repeat: int, warmup: int) -> list[tuple[str, list[Job[T]]]]:
    """The warm-up calls (the first item, ``warmup`` times per deployment), then the timed calls in the order
    item 1 on every deployment, item 2 on every deployment, ..., then the next repeat: a slow moment of the
    machine is shared by all deployments."""
    warmups: list[Job[T]] = [(label, items[0], None) for _ in range(warmup) for label in labels]
    calls: list[Job[T]] = [
        (label, item, number) for number in range(1, repeat + 1) for item in items for label in labels
    ]
    return [("warm-up", warmups), ("calls", calls)]


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
    )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def print_bench(result: BenchResult, console: Console) -> None:
    """The ``voxpipe report`` comparison table, then each step's median and the STT's word error rate."""
    plan = result.plan
    print_comparison(
        result.summaries,
        console,
        title=f"bench {plan.corpus_dir.name}: {len(plan.utterances)} utterances × {plan.repeat}",
    )
    table = Table(title="median ms per step after speech ends; STT WER")
    table.add_column("variant")
    for step in STAGES.values():
        table.add_column(step, justify="right")
    voices = [voice for voice in result.voices if voice] if len(result.voices) > 1 else []
    for column in ("WER", *(f"WER {voice}" for voice in voices)):
        table.add_column(column, justify="right")
    for summary in result.summaries:
        steps = stage_breakdown(summary)
        wers = [result.word_error_rate(summary.variant, voice) for voice in (None, *voices)]
        table.add_row(summary.variant, *(_ms(steps[step]) for step in STAGES.values()), *(f"{wer:.1%}" for wer in wers))
    console.print(table)
    print_turn_taking(result, console)


@contextmanager
def logs_above_progress(console: Console, level: str = "WARNING") -> Iterator[None]:
    """Send loguru (pipecat's logger) through ``console`` at ``level`` and above, so it neither floods nor
    tears the progress bar; standard error (at VOXPIPE_LOG_LEVEL) is put back afterwards."""
    logger.remove()
    sink = logger.add(lambda message: console.print(message.rstrip(), markup=False, highlight=False), level=level)
    try:
        yield
    finally:
        logger.remove(sink)
        log_to_stderr()


def bench_command(
    configs: Sequence[Path],
    corpus_dir: Path,
    *,
    repeat: int = 1,
    concurrency: int = 1,
    report: Path | None = None,
    records_db: str | None = None,
    out: Console,
    err: Console,
) -> BenchResult:
    """What ``voxpipe bench`` does: run, save the records, print the tables, write the HTML report.

    The records go to ``records_db``, else where the baseline deployment's ``records:`` says, else the
    default store. The store is opened before the run, so an unreachable database fails in a second, not
    after the whole corpus was played.
    """
    plan = BenchPlan.load(configs, corpus_dir, repeat=repeat, concurrency=concurrency)
    baseline = next(iter(plan.deployments.values()))
    store = RecordStore(records_db or baseline.records.target())
    with logs_above_progress(err):
        result = asyncio.run(run_bench(plan, err))
        uploader.drain()  # the report links to recordings: let them land first
    for record in (record for group in result.records.values() for record in group):
        store.save(record)
    print_bench(result, out)
    records_option = f" --records {store.location}" if records_db else ""
    out.print(f"records saved to {store.location}: voxpipe report --experiment {result.experiment}{records_option}")
    if report is not None:
        from voxpipe.bench.html import write_report  # matplotlib: imported only when a report is asked for

        for path in write_report(result, report):
            out.print(f"wrote {path}")
    return result
