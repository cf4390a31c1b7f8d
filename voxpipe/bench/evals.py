"""``voxpipe bench --scenarios``: does each deployment still do its job, and at what latency and cost?

Every scenario is played on every deployment, ``repeat`` times, interleaved the way the corpus bench is
(scenario 1 on every deployment, then scenario 2, ...), after one untimed warm-up call per deployment. Each
run is a ``CallRecord`` labelled with the bench experiment, the deployment (variant) and the scenario, with
its verdicts, so ``voxpipe report`` and ``voxpipe calls`` show them again later. The result carries the
voice-to-voice and cost comparison of ``voxpipe report`` and, beside it, each deployment's task success.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from rich.console import Console

from voxpipe.bench.judge import DEFAULT_JUDGE, Judge
from voxpipe.bench.runner import interleaved, load_deployments, progress_bar
from voxpipe.bench.scenario import Scenario, load_scenarios
from voxpipe.bench.scenario_run import ScenarioCall, play_scenario
from voxpipe.bench.wer import corpus_word_error_rate
from voxpipe.config.models import Deployment
from voxpipe.records.model import CallRecord
from voxpipe.records.stats import TaskSuccess, VariantSummary, compare, task_success


@dataclass(frozen=True)
class EvalPlan:
    """Deployments by label (the first is the baseline), scenarios, and the judge's deployment (its ``llm``)."""

    deployments: dict[str, Deployment]
    scenarios: list[Scenario]
    scenarios_path: Path
    judge: Deployment | None = None
    sources: dict[str, Path] = field(default_factory=dict)
    repeat: int = 1
    warmup: int = 1
    settle_secs: float = 1.0
    reply_timeout_secs: float = 20.0

    @classmethod
    def load(
        cls, configs: Sequence[Path], scenarios_path: Path, *, judge: Path | None = None, repeat: int = 1
    ) -> EvalPlan:
        """Load deployments, scenarios and (when a scenario needs it) the judge. Raises ``ConfigError``."""
        from voxpipe.config.loader import load_deployment

        deployments, sources = load_deployments(configs)
        scenarios = load_scenarios(scenarios_path)
        needs_llm = any(s.expect.judge or (s.caller and s.caller.llm is None) for s in scenarios)
        judge_deployment = load_deployment(judge or DEFAULT_JUDGE) if judge or needs_llm else None
        return cls(deployments, scenarios, scenarios_path, judge_deployment, sources, repeat)


@dataclass(frozen=True)
class EvalRun:
    """One scenario played once on one deployment."""

    deployment: str
    scenario: str
    repeat: int
    call: ScenarioCall


@dataclass
class EvalResult:
    plan: EvalPlan
    experiment: str
    started_at: datetime
    wall_secs: float
    runs: list[EvalRun]

    @cached_property
    def records(self) -> dict[str, list[CallRecord]]:
        """Every run's record, by deployment label, baseline first."""
        groups: dict[str, list[CallRecord]] = {label: [] for label in self.plan.deployments}
        for run in self.runs:
            groups[run.deployment].append(run.call.record)
        return groups

    @cached_property
    def summaries(self) -> list[VariantSummary]:
        """Latency percentiles with bootstrap intervals, cost, errors: the same as ``voxpipe report``."""
        return compare(self.records)

    @cached_property
    def success(self) -> list[TaskSuccess]:
        return [task_success(label, records) for label, records in self.records.items()]

    def word_error_rate(self, label: str) -> float | None:
        """The STT's word error rate on the spoken (audio-mode) caller turns of ``label``'s runs."""
        pairs = [
            (turn.said, turn.heard)
            for run in self.runs
            if run.deployment == label and self._spoken(run.scenario)
            for turn in run.call.conversation.turns
            if turn.reply is not None and turn.said.strip()
        ]
        return corpus_word_error_rate(pairs) if pairs else None

    def _spoken(self, name: str) -> bool:
        scenario = next(s for s in self.plan.scenarios if s.name == name)
        return scenario.mode == "audio" and scenario.caller is None

    def grid(self) -> dict[str, dict[str, list[EvalRun]]]:
        """Runs by scenario, then by deployment label (both in plan order)."""
        cells: dict[str, dict[str, list[EvalRun]]] = {
            s.name: {label: [] for label in self.plan.deployments} for s in self.plan.scenarios
        }
        for run in self.runs:
            cells[run.scenario][run.deployment].append(run)
        return cells

    def below(self, min_pass: float) -> list[TaskSuccess]:
        """Deployments whose pass rate is under ``min_pass`` (0-1)."""
        return [s for s in self.success if (s.pass_rate.value or 0.0) < min_pass]


async def run_evals(plan: EvalPlan, console: Console | None = None) -> EvalResult:
    """Play every scenario ``plan.repeat`` times on every deployment, one call at a time."""
    started_at = datetime.now(UTC)
    experiment = f"bench-{started_at:%Y%m%d-%H%M%S}"
    judge = Judge(plan.judge) if plan.judge is not None else None
    runs: list[EvalRun] = []

    async def play(label: str, scenario: Scenario, repeat: int | None) -> None:
        """One call; ``repeat`` ``None`` is a warm-up, whose results are dropped."""
        call = await play_scenario(
            scenario,
            plan.deployments[label],
            judge if repeat is not None else None,
            caller_llm=plan.judge,
            settle_secs=plan.settle_secs,
            reply_timeout_secs=plan.reply_timeout_secs,
        )
        if repeat is None:
            return
        record = call.record
        record.experiment, record.variant, record.caller_id = experiment, label, f"scenario:{scenario.name}"
        runs.append(EvalRun(label, scenario.name, repeat, call))

    clock = time.monotonic()
    with progress_bar(console or Console(stderr=True)) as progress:
        for description, jobs in interleaved(list(plan.deployments), plan.scenarios, plan.repeat, plan.warmup):
            task = progress.add_task(description, total=len(jobs))
            for job in jobs:
                await play(*job)
                progress.advance(task)
    return EvalResult(plan, experiment, started_at, time.monotonic() - clock, runs)
