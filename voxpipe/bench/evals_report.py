"""Presenting a scenario bench: terminal tables, JSON, and JUnit XML for CI systems.

The task-success table sits beside the latency and cost figures of the same calls: pass rate with its 95%
Wilson interval, p50/p90 voice-to-voice, cost per call (the judge's cost apart), and the STT's word error
rate on the spoken caller turns. Then which expectation failed how often, with an example each, and the
scenario x deployment grid.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from voxpipe.bench.evals import EvalResult, EvalRun
from voxpipe.bench.report import print_comparison
from voxpipe.records.stats import Estimate, TaskSuccess, VariantSummary


def percent(estimate: Estimate) -> str:
    """``90% [60–98]``, or ``—`` when nothing was run."""
    if estimate.value is None:
        return "—"
    interval = f" [{estimate.low:.0%}–{estimate.high:.0%}]" if estimate.low is not None else ""
    return f"{estimate.value:.0%}{interval}"


def _ms(summary: VariantSummary, key: str) -> str:
    value = summary.voice_to_voice_ms[key].value
    return "—" if value is None else f"{value:.0f}"


def print_success(
    success: list[TaskSuccess], summaries: list[VariantSummary], console: Console, wer: dict[str, float | None]
) -> None:
    """Task success beside latency and cost, one row per deployment; ``wer``: label -> rate or ``None``."""
    table = Table(title="task success (95% Wilson interval) beside voice-to-voice ms and cost")
    for column in ("variant", "calls", "pass rate", "v2v p50", "v2v p90", "$/call", "judge $", "WER"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for result, summary in zip(success, summaries, strict=True):
        rate = wer.get(result.variant)
        table.add_row(
            result.variant,
            str(result.calls),
            percent(result.pass_rate),
            _ms(summary, "p50"),
            _ms(summary, "p90"),
            f"{result.cost_per_call_usd:.5f}",
            f"{result.judge_cost_usd:.5f}",
            "—" if rate is None else f"{rate:.1%}",
        )
    console.print(table)
    failures = Table(title="failed expectations: in how many calls, with an example")
    for column in ("variant", "expectation", "calls", "example"):
        failures.add_column(column, overflow="fold", justify="right" if column == "calls" else "left")
    for result in success:
        for failure in result.failures:
            failures.add_row(result.variant, failure.expectation, str(failure.calls), failure.example)
    if failures.row_count:
        console.print(failures)


def _cell(runs: list[EvalRun]) -> str:
    passed = sum(bool(run.call.record.passed) for run in runs)
    return f"{passed}/{len(runs)}" if runs else "—"


def print_evals(result: EvalResult, console: Console) -> None:
    plan = result.plan
    title = f"bench {plan.scenarios_path.name}: {len(plan.scenarios)} scenarios × {plan.repeat}"
    print_comparison(result.summaries, console, title=title)
    wer = {label: result.word_error_rate(label) for label in plan.deployments}
    print_success(result.success, result.summaries, console, wer)
    grid = Table(title="scenario × deployment: calls that passed every expectation")
    grid.add_column("scenario")
    for label in plan.deployments:
        grid.add_column(label, justify="right")
    for scenario, cells in result.grid().items():
        grid.add_row(scenario, *(_cell(runs) for runs in cells.values()))
    console.print(grid)


def evals_json(result: EvalResult) -> dict[str, Any]:
    """The same results as the tables, plus every run with its verdicts and transcript."""
    summaries = {s.variant: s for s in result.summaries}
    return {
        "experiment": result.experiment,
        "scenarios": [s.name for s in result.plan.scenarios],
        "repeat": result.plan.repeat,
        "deployments": {
            success.variant: {
                **success.model_dump(),
                "voice_to_voice_ms": summaries[success.variant].model_dump()["voice_to_voice_ms"],
                "word_error_rate": result.word_error_rate(success.variant),
                "source": str(result.plan.sources.get(success.variant, "")),
            }
            for success in result.success
        },
        "runs": [
            {
                "deployment": run.deployment,
                "scenario": run.scenario,
                "repeat": run.repeat,
                "call_id": run.call.record.call_id,
                "passed": run.call.record.passed,
                "verdicts": [v.model_dump() for v in run.call.record.verdicts],
                "errors": [error.model_dump() for error in run.call.record.errors],
                "transcript": run.call.conversation.transcript(),
            }
            for run in result.runs
        ],
    }


def write_junit(result: EvalResult, path: Path) -> Path:
    """JUnit XML: a test suite per deployment, a test case per scenario run; failures and errors carry the
    failing verdicts, and the transcript is the case's output."""
    suites = ET.Element("testsuites", name=f"voxpipe {result.experiment}")
    for label in result.plan.deployments:
        runs = [run for run in result.runs if run.deployment == label]
        suite = ET.SubElement(suites, "testsuite", name=label)
        failures = errors = 0
        for run in runs:
            record = run.call.record
            name = run.scenario + (f" #{run.repeat}" if result.plan.repeat > 1 else "")
            case = ET.SubElement(suite, "testcase", classname=label, name=name, time=f"{record.duration_secs:.3f}")
            bad = [v for v in record.verdicts if v.outcome != "pass"]
            lines = [f"{v.expectation}" + (f" (turn {v.turn})" if v.turn else "") + f": {v.detail}" for v in bad]
            if any(v.outcome == "fail" for v in bad):
                failures += 1
                ET.SubElement(case, "failure", message=lines[0]).text = "\n".join(lines)
            elif bad:
                errors += 1
                ET.SubElement(case, "error", message=lines[0]).text = "\n".join(lines)
            ET.SubElement(case, "system-out").text = run.call.conversation.transcript()
        suite.set("tests", str(len(runs)))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
    ET.indent(suites)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    return path


def evals_command(
    configs: list[Path],
    scenarios: Path,
    *,
    judge: Path | None = None,
    repeat: int = 1,
    report: Path | None = None,
    junit: Path | None = None,
    as_json: bool = False,
    records_db: Path | None = None,
    out: Console,
    err: Console,
) -> EvalResult:
    """What ``voxpipe bench --scenarios`` does: run, save the records, print (or JSON), JUnit, HTML report."""
    import asyncio
    import json

    from voxpipe.bench.evals import EvalPlan, run_evals
    from voxpipe.bench.runner import logs_above_progress
    from voxpipe.records.store import RecordStore

    plan = EvalPlan.load(configs, scenarios, judge=judge, repeat=repeat)
    with logs_above_progress(err):
        result = asyncio.run(run_evals(plan, err))
    store = RecordStore(records_db)
    for run in result.runs:
        store.save(run.call.record)
    if as_json:
        print(json.dumps(evals_json(result), indent=2))
    else:
        print_evals(result, out)
    notes = err if as_json else out
    records_option = f" --records {records_db}" if records_db else ""
    notes.print(f"records saved to {store.path}: voxpipe report --experiment {result.experiment}{records_option}")
    if junit is not None:
        notes.print(f"wrote {write_junit(result, junit)}")
    if report is not None:
        from voxpipe.bench.evals_html import write_evals_report  # matplotlib: only when a report is asked for

        for path in write_evals_report(result, report):
            notes.print(f"wrote {path}")
    return result
