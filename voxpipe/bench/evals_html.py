"""The scenario bench's HTML report: one self-contained file, the latency chart embedded and beside it.

Top: the terminal's own tables (exported by rich, so the report and the terminal never disagree) and the
latency CDF. Then the scenario x deployment grid: each cell links to its runs, and each run shows its
verdicts and the transcript, with the turn of the first failed expectation marked and linked from the grid.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from rich.console import Console

from voxpipe.bench.evals import EvalResult, EvalRun
from voxpipe.bench.evals_report import print_evals
from voxpipe.bench.html import STYLE, latency_cdf_png

EXTRA_STYLE = """
td.pass { background: #e7f6e7; } td.fail { background: #fbe3e3; } td.mixed { background: #fff4d6; }
li.fail, li.error { color: #a40000; } li.pass { color: #1f6f1f; }
.turn { margin: 0.3em 0; padding: 0.2em 0.5em; border-left: 3px solid #ddd; }
.turn.failing { border-left-color: #c00; background: #fff0f0; }
"""


def write_evals_report(result: EvalResult, path: str | Path) -> list[Path]:
    """Write the report to ``path`` and its chart to ``<stem>-cdf.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart = latency_cdf_png(result.records)
    chart_path = path.with_name(f"{path.stem}-cdf.png")
    chart_path.write_bytes(chart)
    path.write_text(render_evals_html(result, chart), encoding="utf-8")
    return [path, chart_path]


def _anchor(run: EvalRun) -> str:
    return f"run-{run.call.record.call_id[:12]}"


def _target(run: EvalRun) -> str:
    """The failing turn of a run (its first failed turn expectation), else the run itself."""
    turn = next((v.turn for v in run.call.record.verdicts if v.outcome != "pass" and v.turn), None)
    return f"{_anchor(run)}-turn-{turn}" if turn else _anchor(run)


def _grid(result: EvalResult) -> str:
    labels = list(result.plan.deployments)
    head = "<th>scenario</th>" + "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    rows = []
    for scenario, cells in result.grid().items():
        row = f"<td>{html.escape(scenario)}</td>"
        for runs in cells.values():
            passed = sum(bool(run.call.record.passed) for run in runs)
            css = "pass" if runs and passed == len(runs) else "fail" if passed == 0 else "mixed"
            links = " ".join(f'<a href="#{_target(run)}">{"✓" if run.call.record.passed else "✗"}</a>' for run in runs)
            row += f'<td class="{css}">{passed}/{len(runs)} {links}</td>'
        rows.append(f"<tr>{row}</tr>")
    return f'<table class="data"><tr>{head}</tr>{"".join(rows)}</table>'


def _run_section(run: EvalRun) -> str:
    record = run.call.record
    verdicts = "".join(
        f'<li class="{v.outcome}">{v.outcome}: {html.escape(v.expectation)}'
        f"{f' (turn {v.turn})' if v.turn else ''} — {html.escape(v.detail)}</li>"
        for v in record.verdicts
    )
    failing = {v.turn for v in record.verdicts if v.outcome != "pass" and v.turn}
    conversation = run.call.conversation
    lines = (
        [f"<div class=turn><b>Agent:</b> {html.escape(conversation.greeting)}</div>"] if conversation.greeting else []
    )
    for index, turn in enumerate(conversation.turns, 1):
        css = "turn failing" if index in failing else "turn"
        tools = "".join(
            f"<br><i>called {html.escape(use.name)}({html.escape(str(use.arguments))})</i>" for use in turn.tools
        )
        reply = "(never played: the call had ended)" if turn.reply is None else turn.reply or "(no answer)"
        latency = f" <small>{turn.latency_ms:.0f} ms</small>" if turn.latency_ms is not None else ""
        lines.append(
            f'<div class="{css}" id="{_anchor(run)}-turn-{index}"><b>Caller:</b> {html.escape(turn.said)}{tools}'
            f"<br><b>Agent:</b> {html.escape(reply)}{latency}</div>"
        )
    status = "passed" if record.passed else "failed"
    errors = "; errors: " + "; ".join(e.summary() for e in record.errors) if record.errors else ""
    return (
        f'<section id="{_anchor(run)}"><h3>{html.escape(run.scenario)} on {html.escape(run.deployment)}'
        f" (repeat {run.repeat}): {status}</h3><ul>{verdicts}</ul>"
        f"<p>ended with {html.escape(conversation.ending)}; cost ${record.cost_usd:.5f}"
        f"{html.escape(errors)}</p>{''.join(lines)}</section>"
    )


def render_evals_html(result: EvalResult, chart: bytes) -> str:
    plan = result.plan
    title = f"voxpipe bench — scenarios {plan.scenarios_path.name}"
    console = Console(record=True, file=io.StringIO(), width=160, color_system="truecolor")
    print_evals(result, console)
    tables = console.export_html(inline_styles=True, code_format='<pre class="tables">{code}</pre>')
    image = base64.b64encode(chart).decode("ascii")
    runs = sorted(result.runs, key=lambda run: (bool(run.call.record.passed), run.scenario, run.deployment))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}{EXTRA_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(plan.deployments)} deployment(s), {len(plan.scenarios)} scenario(s) × {plan.repeat} repeat(s); experiment
{html.escape(result.experiment)}. The first deployment is the baseline. A call passes when every expectation
passes; a judge without a verdict is an error, never a pass. Pass rates carry 95% Wilson intervals.</p>
<h2>Comparison</h2>
{tables}
<figure><img alt="voice-to-voice CDF" src="data:image/png;base64,{image}">
<figcaption>Voice-to-voice latency of the scenario calls' turns (audio mode): share answered within x ms.
</figcaption></figure>
<h2>Scenario × deployment</h2>
<p>Calls that passed every expectation; click a mark for the call's verdicts and transcript (failing turns marked).</p>
{_grid(result)}
<h2>Calls (failed first)</h2>
{"".join(_run_section(run) for run in runs)}
</body></html>
"""
