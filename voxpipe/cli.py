"""The ``voxpipe`` command line.

Light commands (``validate``, ``schema``, ``providers``) never import pipecat, so they answer in a fraction of
a second. Every configuration error is printed as ``file:line: key.path: message`` and exits with code 2,
without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voxpipe.config.errors import ConfigError

app = typer.Typer(
    help="Phone and browser voice agents from YAML: run, measure and compare providers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

EXIT_CONFIG = 2
OFFLINE = Path(__file__).parent / "configs" / "offline.yaml"


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
) -> None:
    """Play a caller against a deployment and report, per turn, what was heard, said, and how fast."""
    from voxpipe.bench.report import call_json, print_call
    from voxpipe.bench.simulated_call import CallerTurn, simulate_call
    from voxpipe.config.loader import load_deployment

    deployment = load_deployment(config)
    turns = [CallerTurn.from_text(text) for text in say or []]
    turns += [CallerTurn.from_wav(path) for path in input_wav or []]
    if not turns:
        err.print("give at least one caller turn with --say TEXT or --input WAV")
        raise typer.Exit(EXIT_CONFIG)
    import asyncio

    result = asyncio.run(simulate_call(deployment, turns))
    if out_wav:
        result.write_wav(out_wav)
    if as_json:
        print(json.dumps(call_json(result), indent=2))
    else:
        print_call(result, out)
        if out_wav:
            out.print(f"wrote {out_wav}")


def _print_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)


def main() -> None:
    """Console entry point: configuration errors exit 2 with no traceback."""
    try:
        app()
    except ConfigError as exc:
        _print_problems(exc)
        sys.exit(EXIT_CONFIG)


if __name__ == "__main__":
    main()
