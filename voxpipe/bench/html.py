"""The bench's HTML report: one self-contained file (charts embedded as base64 PNGs), the PNGs beside it.

Charts are drawn by matplotlib on its Agg canvas (no display, no global pyplot state). The comparison tables
are the terminal's own tables, exported by rich, so the report and ``voxpipe bench``'s output never disagree.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import platform
import statistics
from importlib.metadata import version
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console

from voxpipe.bench.runner import STAGES, BenchResult, CallOutcome, print_bench, stage_breakdown
from voxpipe.bench.wer import corpus_word_error_rate
from voxpipe.config.models import Deployment
from voxpipe.records.model import CallRecord
from voxpipe.records.stats import voice_to_voice

CHARTS = {
    "cdf": "Voice-to-voice latency: share of turns answered within x ms (empirical CDF).",
    "stages": "Median ms spent in each step after the end of the caller's speech.",
    "cost": "Cost per minute of call, by role (US dollars, at the deployments' price tables).",
}

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
pre.tables { font-size: 12px; overflow-x: auto; background: #fafafa; padding: 0.8em; }
table.data { border-collapse: collapse; width: 100%; font-size: 13px; }
table.data th, table.data td { border: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
table.data td.num { text-align: right; white-space: nowrap; }
table.data th { background: #f3f3f3; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; }
"""


def write_report(result: BenchResult, path: str | Path) -> list[Path]:
    """Write the report to ``path`` and its charts to ``<stem>-cdf.png``, ``-stages.png``, ``-cost.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    charts = {"cdf": latency_cdf_png(result.records), "stages": stages_png(result), "cost": cost_png(result)}
    written = []
    for name, png in charts.items():
        chart_path = path.with_name(f"{path.stem}-{name}.png")
        chart_path.write_bytes(png)
        written.append(chart_path)
    path.write_text(render_html(result, charts), encoding="utf-8")
    return [path, *written]


# ------------------------------------------------------------------------------------------------ charts


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def latency_cdf_png(records_by_label: dict[str, list[CallRecord]]) -> bytes:
    """Each deployment's voice-to-voice latencies as an empirical CDF (the corpus and scenario reports)."""
    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.add_subplot()
    measured = {label: voice_to_voice(records) for label, records in records_by_label.items()}
    for label, latencies in measured.items():
        if latencies:
            axes.ecdf(latencies, label=f"{label} (n={len(latencies)})")
    for share in (0.5, 0.9):
        axes.axhline(share, color="#bbb", linewidth=0.8, linestyle="--")
    axes.set(xlabel="voice-to-voice latency (ms)", ylabel="share of turns", ylim=(0, 1.02))
    if any(measured.values()):
        axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    return _png(figure)


def stages_png(result: BenchResult) -> bytes:
    summaries = result.summaries
    figure = Figure(figsize=(8, 1.4 + 0.6 * len(summaries)), layout="constrained")
    axes = figure.add_subplot()
    names = [summary.variant for summary in summaries]
    starts = [0.0] * len(summaries)
    for step in STAGES.values():
        widths = [stage_breakdown(summary)[step] or 0.0 for summary in summaries]
        bars = axes.barh(names, widths, left=starts, label=step)
        axes.bar_label(bars, labels=[f"{w:.0f}" if w >= 40 else "" for w in widths], label_type="center", fontsize=8)
        starts = [start + width for start, width in zip(starts, widths, strict=True)]
    axes.invert_yaxis()  # baseline on top, as in the tables
    axes.set(xlabel="ms after the end of the caller's speech (medians)")
    figure.legend(loc="outside lower center", ncols=len(STAGES))
    return _png(figure)


def cost_per_minute_by_role(result: BenchResult, label: str) -> dict[str, float]:
    """US dollars per minute of call time, by role (every role that reported usage, even free); they add up
    to the table's $/min."""
    records = result.records[label]
    minutes = sum(record.duration_secs for record in records) / 60
    totals: dict[str, float] = {}
    for record in records:
        for role, cost in record.cost_by_role().items():
            totals[role] = totals.get(role, 0.0) + cost
    return {role: cost / minutes if minutes else 0.0 for role, cost in totals.items()}


def cost_png(result: BenchResult) -> bytes:
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.add_subplot()
    labels = list(result.records)
    by_role = {label: cost_per_minute_by_role(result, label) for label in labels}
    roles = list(dict.fromkeys(role for costs in by_role.values() for role in costs))
    bottoms = [0.0] * len(labels)
    for role in roles:
        heights = [by_role[label].get(role, 0.0) for label in labels]
        axes.bar(range(len(labels)), heights, bottom=bottoms, label=role)
        bottoms = [bottom + height for bottom, height in zip(bottoms, heights, strict=True)]
    for x, total in enumerate(bottoms):
        axes.annotate(f"${total:.4f}", (x, total), xytext=(0, 3), textcoords="offset points", ha="center")
    axes.set_xticks(range(len(labels)), labels)
    axes.set(xlim=(-0.5, len(labels) - 0.5), ylabel="US$ per minute", ylim=(0, max(bottoms) * 1.25 or 0.01))
    if roles:
        axes.legend()
    return _png(figure)


# ------------------------------------------------------------------------------------------------ HTML


def _table(headers: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    """An HTML table; each cell is ``(text, numeric)``, the text is escaped here."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if num else ''}>{html.escape(text)}</td>" for text, num in row) + "</tr>"
        for row in rows
    )
    return f'<table class="data"><tr>{head}</tr>{body}</table>'


def _terminal_tables(result: BenchResult) -> str:
    console = Console(record=True, file=io.StringIO(), width=160, color_system="truecolor")
    print_bench(result, console)
    return console.export_html(inline_styles=True, code_format='<pre class="tables">{code}</pre>')


def utterance_rows(outcomes: list[CallOutcome]) -> list[list[tuple[str, bool]]]:
    """One row per utterance and deployment: what each repeat heard, WER, median voice-to-voice, a reply."""
    rows = []
    for (utterance, label), group in itertools.groupby(outcomes, key=lambda o: (o.utterance, o.deployment)):
        calls = list(group)
        heard = list(dict.fromkeys(o.heard or "(nothing)" for o in calls))
        latencies = [o.voice_to_voice_ms for o in calls if o.voice_to_voice_ms is not None]
        rows.append(
            [
                (utterance, False),
                (calls[0].expected, False),
                (label, False),
                (" / ".join(heard), False),
                (f"{corpus_word_error_rate((o.expected, o.heard) for o in calls):.0%}", True),
                (f"{statistics.median(latencies):.0f}" if latencies else "—", True),
                (next((o.reply for o in calls if o.reply), "—"), False),
            ]
        )
    return rows


def recordings_section(outcomes: list[CallOutcome]) -> str:
    """Each recorded call's stereo WAV (caller left, bot right), linked; empty when nothing was recorded."""
    recorded = [o for o in outcomes if o.recording]
    if not recorded:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(o.utterance)}</td><td>{html.escape(o.deployment)}</td><td class=num>{o.repeat}</td>"
        f'<td><a href="{html.escape(o.recording or "")}">{html.escape(o.recording or "")}</a></td></tr>'
        for o in recorded
    )
    return (
        "<h2>Recordings</h2><p>Caller on the left channel, bot on the right, as the caller heard it.</p>"
        f'<table class="data"><tr><th>utterance</th><th>deployment</th><th>repeat</th><th>recording</th></tr>'
        f"{rows}</table>"
    )


def _providers(deployment: Deployment) -> str:
    return "; ".join(
        f"{role}: "
        + " → ".join(f"{s.provider} ({s.model})" if s.model else s.provider for s in deployment.services(role))
        for role in deployment.roles()
    )


def configuration_rows(result: BenchResult) -> list[list[tuple[str, bool]]]:
    plan = result.plan
    audio_secs = sum(utterance.duration_secs for utterance in plan.utterances)
    settings = {
        "corpus": f"{plan.corpus_dir.resolve()} ({len(plan.utterances)} utterances, {audio_secs:.1f} s of audio)",
        "repeats": f"{plan.repeat} (each utterance is one single-turn call per repeat and deployment)",
        "calls": f"{plan.calls} timed, after {plan.warmup} untimed warm-up call(s) per deployment",
        "concurrency": f"{plan.concurrency} call(s) at once",
        "timing": f"{plan.settle_secs:g} s of silence after a reply ends the call; "
        f"no reply within {plan.reply_timeout_secs:g} s counts as an error",
        "started": f"{result.started_at:%Y-%m-%d %H:%M:%S} UTC, {result.wall_secs:.0f} s wall time",
        "records": f"experiment {result.experiment} (voxpipe report --experiment {result.experiment})",
        "software": ", ".join(
            [
                f"voxpipe {version('voxpipe')}",
                f"pipecat-ai {version('pipecat-ai')}",
                f"Python {platform.python_version()}",
            ]
        ),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
    }
    return [[(key, False), (value, False)] for key, value in settings.items()]


def deployment_rows(result: BenchResult) -> list[list[tuple[str, bool]]]:
    plan = result.plan
    return [
        [
            (label, False),
            (str(plan.sources.get(label, "")), False),
            (deployment.mode, False),
            (_providers(deployment), False),
            (f"{deployment.turn.strategy}, VAD {deployment.vad.provider}", False),
        ]
        for label, deployment in plan.deployments.items()
    ]


def render_html(result: BenchResult, charts: dict[str, bytes]) -> str:
    """The whole report as one HTML document, ``charts`` (PNG bytes by name) embedded."""
    plan = result.plan
    title = f"voxpipe bench — {plan.corpus_dir.name}"
    figures = "".join(
        f'<figure><img alt="{html.escape(CHARTS[name])}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}"><figcaption>{html.escape(CHARTS[name])}</figcaption></figure>'
        for name, png in charts.items()
    )
    stage_names = ", ".join(STAGES.values())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(plan.deployments)} deployment(s), {len(plan.utterances)} utterances × {plan.repeat} repeat(s).
The first deployment is the baseline the others are compared with.</p>
<h2>Comparison</h2>
{_terminal_tables(result)}
<p>p50 / p90 / p99: voice-to-voice latency percentiles (end of the caller's speech to the first audible sample of
the reply, as played), in ms, with 95% percentile-bootstrap intervals. Δp50 vs base: difference of medians with
its bootstrap interval; <em>significant</em> when the interval excludes zero. $/min: cost per minute of call.
errors: share of calls that failed or got no reply; fallbacks: share that switched provider. Steps
({html.escape(stage_names)}) are differences of the stages' median times. WER: the STT's word error rate
against the corpus text, after normalising case, punctuation and numbers.</p>
<h2>Charts</h2>
{figures}
<h2>Utterances</h2>
{_table(["utterance", "expected", "deployment", "heard", "WER", "v2v ms", "reply"], utterance_rows(result.outcomes))}
{recordings_section(result.outcomes)}
<h2>How the run was configured</h2>
{_table(["setting", "value"], configuration_rows(result))}
<h3>Deployments</h3>
{_table(["deployment", "file", "mode", "providers", "turn, VAD"], deployment_rows(result))}
</body></html>
"""
