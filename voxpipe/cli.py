"""The ``voxpipe`` command line.

Light commands (``validate``, ``schema``, ``providers``) never import pipecat, so they answer in a fraction of
a second. Every configuration error is printed as ``file:line: key.path: message`` and exits with code 2,
without a traceback.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voxpipe.config.errors import ConfigError
from voxpipe.records.model import CallRecord, Recording
from voxpipe.records.store import RecordStoreError

app = typer.Typer(
    help="Phone and browser voice agents from YAML: run, measure and compare providers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

EXIT_CONFIG = 2
EXIT_CALL_FAILED = 1
OFFLINE = Path(__file__).parent / "configs" / "offline.yaml"
RecordsOption = Annotated[
    str | None,
    typer.Option(
        "--records",
        help="Call records: a SQLite file or a postgresql:// URL (default: $VOXPIPE_RECORDS or voxpipe-calls.db).",
    ),
]
EXIT_RECORDS = 1


def _since(value: str | None) -> datetime | None:
    """``30m``, ``6h``, ``7d`` ago, or an ISO date/time."""
    if not value:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("use 30m, 6h, 7d or an ISO date such as 2026-11-01") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Deployment YAML files.")]) -> None:
    """Check deployment files; print every problem with its file, line and key."""
    from voxpipe.config.loader import load_deployment

    failed = False
    for path in files:
        try:
            deployment = load_deployment(path)
        except ConfigError as exc:
            failed = True
            _print_problems(exc)
            continue
        out.print(f"[green]ok[/green] {path} ({deployment.name}, {deployment.mode})")
    if failed:
        raise typer.Exit(EXIT_CONFIG)


@app.command()
def schema() -> None:
    """Print the JSON Schema of a deployment file, every installed provider's options included."""
    from voxpipe.config.schema import deployment_json_schema

    print(json.dumps(deployment_json_schema(), indent=2))


@app.command()
def providers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON with option schemas.")] = False) -> None:
    """List installed providers and tool kinds, with the package that ships each."""
    from voxpipe.providers.registry import default_registry

    registry = default_registry()
    rows = [
        {
            "name": r.provider.name,
            "kind": r.provider.kind,
            "package": r.package,
            "version": r.version,
            "default_model": r.provider.default_model,
            "description": r.provider.description,
            "options_schema": r.provider.options.model_json_schema(),
        }
        for r in sorted(registry.providers.values(), key=lambda r: (r.provider.kind, r.provider.name))
    ]
    tools = [
        {"name": name, "kind": "tool", "package": t.package, "version": t.version}
        for name, t in sorted(registry.tool_kinds.items())
    ]
    if as_json:
        print(json.dumps({"providers": rows, "tools": tools, "problems": registry.problems}, indent=2))
    else:
        table = Table("name", "kind", "package", "version", "default model")
        for row in rows + tools:
            table.add_row(row["name"], row["kind"], row["package"], row["version"], row.get("default_model") or "")
        out.print(table)
    for problem in registry.problems:
        print(f"warning: {problem}", file=sys.stderr)


@app.command()
def call(
    config: Annotated[Path, typer.Argument(help="Deployment YAML file (default: the offline one).")] = OFFLINE,
    say: Annotated[list[str] | None, typer.Option("--say", help="A caller turn, spoken by the local TTS.")] = None,
    input_wav: Annotated[list[Path] | None, typer.Option("--input", help="A caller turn read from a WAV.")] = None,
    out_wav: Annotated[Path | None, typer.Option("--out", help="Write the call's audio (caller L, bot R).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the turns as JSON.")] = False,
    caller: Annotated[str, typer.Option(help="Caller id (picks the experiment variant, if any).")] = "+15550100",
    records_db: RecordsOption = None,
) -> None:
    """Play a caller against a deployment and report, per turn, what was heard, said, and how fast.

    Exits 1 if the call failed (a provider could not go on): the last line names the role, provider and error.
    """
    from voxpipe.bench.report import call_json, print_call
    from voxpipe.bench.simulated_call import CallerTurn, simulate_call
    from voxpipe.config.loader import load_deployment
    from voxpipe.pipeline.experiment import ExperimentRouter
    from voxpipe.records.store import RecordStore

    deployment = load_deployment(config)
    turns = [CallerTurn.from_text(text) for text in say or []]
    turns += [CallerTurn.from_wav(path) for path in input_wav or []]
    if not turns:
        err.print("give at least one caller turn with --say TEXT or --input WAV")
        raise typer.Exit(EXIT_CONFIG)
    import asyncio

    store = RecordStore(records_db or deployment.records.target())
    routed, variant = ExperimentRouter(deployment).route(caller)
    result = asyncio.run(simulate_call(routed, turns))
    experiment = deployment.experiment.name if deployment.experiment else None
    record = result.kept_record(caller_id=caller, experiment=experiment, variant=variant)  # redacted, recorded
    store.save(record)
    _drain_recordings()
    if out_wav:
        result.write_wav(out_wav, stereo=True)
    recording = record.recordings[0].location if record.recordings else None  # a simulated call: one connection
    if as_json:
        print(json.dumps(call_json(result) | {"recording": recording}, indent=2))
    else:
        print_call(result, out)
        if out_wav:
            out.print(f"wrote {out_wav}")
        if recording:
            out.print(f"recording: {recording}")
    if result.failure is not None:  # one line, no traceback: what broke, and what the caller was told
        err.print(f"call failed: {result.failure.error.summary()}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CALL_FAILED)


@app.command()
def serve(
    configs: Annotated[list[Path], typer.Argument(help="Deployment YAML files; each is served under /{name}/.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes on the one port (default: one per core).")
    ] = None,
) -> None:
    """Serve deployments to Twilio (Media Streams, ConversationRelay) and browsers, each under /{name}/."""
    from voxpipe.web.serve import serve as serve_deployments

    serve_deployments(configs, host, port, workers)


deploy = typer.Typer(help="Generate deployment artifacts.", no_args_is_help=True)
app.add_typer(deploy, name="deploy")


@deploy.command("sam")
def deploy_sam(
    config: Annotated[Path, typer.Argument(help="Deployment YAML file.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (replaced).")],
    relay: Annotated[bool, typer.Option("--relay/--no-relay", help="ConversationRelay on Lambda.")] = True,
    bridge: Annotated[bool, typer.Option("--bridge/--no-bridge", help="The API Gateway audio bridge.")] = True,
) -> None:
    """Write an AWS SAM application (template.yaml + the functions' code) for a deployment."""
    from voxpipe.serverless.sam import SamError, write_sam

    try:
        template = write_sam(config, out_dir, relay=relay, bridge=bridge)
    except SamError as exc:
        print(exc, file=sys.stderr)
        raise typer.Exit(EXIT_CONFIG) from None
    out.print(f"wrote {template}; next: cd {out_dir} && sam build && sam deploy --guided")


@app.command()
def calls(
    since: Annotated[str | None, typer.Option(help="Only calls since: 30m, 6h, 7d or an ISO date.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON lines.")] = False,
    check: Annotated[
        bool, typer.Option("--verify", help="Check each turn's voice-to-voice against the call's recording.")
    ] = False,
    records_db: RecordsOption = None,
) -> None:
    """List recorded calls: turns, voice-to-voice latency, cost and where the recording is."""
    from voxpipe.bench.report import print_calls
    from voxpipe.records.store import RecordStore

    records = RecordStore(records_db).list(since=_since(since))
    if check:
        _verify_calls(records)
        return
    if as_json:
        for record in records:
            print(record.model_dump_json())
        return
    print_calls(records, out)


@app.command("import-relay")
def import_relay(
    config: Annotated[Path, typer.Argument(help="The deployment YAML the Lambda relay serves.")],
    table: Annotated[
        str | None,
        typer.Option(help="The relay's DynamoDB table: the SAM stack's TableName (default: sessions.table)."),
    ] = None,
    records_db: RecordsOption = None,
) -> None:
    """Record the Lambda relay's ended calls (kept in its DynamoDB table) where the deployment's records go."""
    from botocore.exceptions import BotoCoreError, ClientError

    from voxpipe.aws.conversations import ConversationTable
    from voxpipe.config.loader import load_deployment
    from voxpipe.providers.registry import default_registry
    from voxpipe.records.relay import ended_relay_records
    from voxpipe.records.store import RecordStore

    deployment = load_deployment(config)
    table = table or deployment.sessions.table
    if not table:
        err.print(f"{config}: give the relay's DynamoDB table with --table (sessions.table is not set)")
        raise typer.Exit(EXIT_CONFIG)
    conversations = ConversationTable(table, deployment.sessions.ttl_secs).conversations()
    try:
        records = ended_relay_records(conversations, deployment, default_registry())
    except (BotoCoreError, ClientError) as exc:  # no such table, no credentials, DynamoDB out of reach
        err.print(f"cannot read the relay's table {table}: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_RECORDS) from None
    store = RecordStore(records_db or deployment.records.target())
    for record in records:
        store.save(record)
    out.print(f"{len(records)} ended relay calls of {deployment.name} recorded in {store.location}")


def _verify_calls(records: list) -> None:  # type: ignore[type-arg]
    """Print each recorded turn's reported and recorded voice-to-voice, each connection's turns against that
    connection's recording; exit 1 if any differ by > 20 ms."""
    from voxpipe.bench.report import print_verification
    from voxpipe.records.verify import verify

    def unreadable(record: CallRecord, recording: Recording, exc: Exception) -> None:
        err.print(f"{record.call_id}: recording {recording.location} unreadable: {exc}")

    checks = [check for record in records for check in verify(record, unreadable)]
    if not print_verification(checks, out):
        raise typer.Exit(1)


@app.command()
def report(
    experiment: Annotated[str, typer.Option(help="Experiment name (the deployment's experiment.name).")],
    since: Annotated[str | None, typer.Option(help="Only calls since: 30m, 6h, 7d or an ISO date.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    records_db: RecordsOption = None,
) -> None:
    """Compare an experiment's variants: latency percentiles with 95% intervals, cost, errors, fallbacks."""
    from voxpipe.bench.report import print_comparison
    from voxpipe.records.stats import compare, task_success
    from voxpipe.records.store import RecordStore

    groups: dict[str, list] = {}
    for record in RecordStore(records_db).list(since=_since(since), experiment=experiment):
        groups.setdefault(record.variant or "?", []).append(record)
    if not groups:
        err.print(f"no recorded calls for experiment {experiment!r}")
        raise typer.Exit(1)
    summaries = compare(dict(sorted(groups.items())))
    # Bench scenario calls carry verdicts: their task success goes beside latency and cost.
    success = [task_success(s.variant, groups[s.variant]) for s in summaries] if _has_scenarios(groups) else []
    if as_json:
        success_by_variant = {result.variant: result.model_dump() for result in success}
        rows = [
            s.model_dump() | ({"task_success": success_by_variant[s.variant]} if success else {}) for s in summaries
        ]
        print(json.dumps(rows, indent=2))
    else:
        print_comparison(summaries, out, title=f"experiment {experiment}")
        if success:
            from voxpipe.bench.evals_report import print_success

            print_success(success, summaries, out, {})


@app.command()
def bench(
    configs: Annotated[list[Path], typer.Argument(help="Deployment YAML files; the first is the baseline.")],
    corpus: Annotated[
        Path | None, typer.Option(help="Corpus directory: manifest.jsonl, or *.wav with same-name *.txt.")
    ] = None,
    scenarios: Annotated[
        Path | None, typer.Option(help="Scenario file or directory of them: multi-turn task-success evals.")
    ] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Times each utterance or scenario is played per deployment.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="Calls at once (corpus; keep 1 for local models).")] = 1,
    judge: Annotated[
        Path | None,
        typer.Option(help="Deployment file whose llm judges rubrics and plays LLM callers (default: offline)."),
    ] = None,
    min_pass: Annotated[
        float | None, typer.Option(min=0, max=1, help="Exit 1 if a deployment passes fewer scenarios (0-1).")
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Write the scenario results as JUnit XML.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scenario results as JSON.")] = False,
    report_html: Annotated[Path | None, typer.Option("--report", help="Write an HTML report, PNGs beside it.")] = None,
    records_db: RecordsOption = None,
) -> None:
    """Compare deployments: replay a corpus (latency, cost, errors, STT WER), or play multi-turn scenarios
    (task success beside latency and cost)."""
    if (corpus is None) == (scenarios is None):
        err.print("give either --corpus DIR (latency, cost and WER) or --scenarios PATH (task success)")
        raise typer.Exit(EXIT_CONFIG)
    if scenarios is None and (judge or min_pass is not None or junit or as_json):
        err.print("--judge, --min-pass, --junit and --json go with --scenarios")
        raise typer.Exit(EXIT_CONFIG)
    if scenarios is not None and concurrency != 1:
        err.print("--concurrency goes with --corpus: scenario calls run one at a time")
        raise typer.Exit(EXIT_CONFIG)
    if scenarios is not None:
        from voxpipe.bench.evals_report import evals_command, percent

        result = evals_command(
            configs,
            scenarios,
            judge=judge,
            repeat=repeat,
            report=report_html,
            junit=junit,
            as_json=as_json,
            records_db=records_db,
            out=out,
            err=err,
        )
        below = result.below(min_pass) if min_pass is not None else []
        for success in below:
            err.print(f"{success.variant}: pass rate {percent(success.pass_rate)} is below --min-pass {min_pass:.0%}")
        if below:
            raise typer.Exit(1)
        return
    from voxpipe.bench.corpus import CorpusError
    from voxpipe.bench.runner import bench_command

    try:
        bench_command(
            configs,
            corpus,
            repeat=repeat,
            concurrency=concurrency,
            report=report_html,
            records_db=records_db,
            out=out,
            err=err,
        )
    except CorpusError as exc:
        print(exc, file=sys.stderr)
        raise typer.Exit(EXIT_CONFIG) from None


def _has_scenarios(groups: dict[str, list]) -> bool:
    return any(record.scenario for records in groups.values() for record in records)


def _drain_recordings() -> None:
    """Wait for the recordings of this process to be stored (a short-lived command would lose them)."""
    from voxpipe.records.recording_store import uploader

    if not uploader.drain():
        err.print("warning: some recordings were still uploading when the command ended")
    if uploader.stats["failed"] or uploader.stats["dropped"]:
        err.print(f"warning: recordings not stored: {dict(uploader.stats)}")


def _print_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)


def _configure_logging() -> None:
    """pipecat logs every frame decision at DEBUG: show warnings (``serve``: info) unless VOXPIPE_LOG_LEVEL says."""
    from loguru import logger

    from voxpipe.logs import log_to_stderr

    logger.remove()
    log_to_stderr("INFO" if sys.argv[1:2] == ["serve"] else "WARNING")


def main() -> None:
    """Console entry point: configuration errors exit 2 with no traceback."""
    _configure_logging()
    try:
        app()
    except ConfigError as exc:
        _print_problems(exc)
        sys.exit(EXIT_CONFIG)
    except RecordStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_RECORDS)


if __name__ == "__main__":
    main()
