"""Scenario evals (``voxpipe bench --scenarios``): scenario files, every kind of expectation, the judge, the bench.

Most tests run in text mode, fast: against FakeOpenAI (the cascade-openai example's LLM, on 127.0.0.1) each
expectation is shown to pass when the model behaves and to fail when it misbehaves (a wrong tool argument,
a missing phrase, a turn over its budget, a call that never ends, a judge without a verdict). The bench
itself runs on the testkit's deterministic LLM. The one audio-mode test is in ``test_evals_audio.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.cloud_fixtures import calls_fixture, cloud_fixture, config, fakes_fixture  # noqa: F401
from tests.fakes import Behaviour, FakeOpenAI, Reply, ToolCall
from tests.fakes.script import Turn
from voxpipe.bench.evals_report import evals_command
from voxpipe.bench.judge import Judge, parse_verdict
from voxpipe.bench.scenario import load_scenarios
from voxpipe.bench.scenario_run import play_scenario
from voxpipe.cli import app
from voxpipe.config.errors import ConfigError
from voxpipe.records.model import Verdict
from voxpipe.records.stats import wilson_interval
from voxpipe.records.store import RecordStore

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key"

BOOKING = """
name: book
mode: text
tools:
  - kind: mock
    name: book_appointment
    parameters: {type: object, properties: {day: {type: string}, service: {type: string}}, required: [day]}
    options: {result: {booked: true, reference: HB-7}}
turns:
  - say: "Book me a tune-up for Saturday, please."
    expect:
      tool_called: {name: book_appointment, arguments: {day: {contains: "sat"}, service: tune-up}}
      reply: {contains: "booked", not_contains: "sunday", matches: "HB-\\\\d+", any_of: ["saturday", "sat."]}
      within_ms: 2000
  - say: "Thanks, goodbye!"
expect:
  ends_with: end_call
  no_tool: transfer
"""


def outcomes(verdicts: list[Verdict]) -> dict[tuple[str, int | None], str]:
    return {(v.expectation, v.turn): v.outcome for v in verdicts}


def receptionist(
    day: str = "Saturday", confirm: str = "You're booked for {day}, reference HB-7.", hang_up: bool = True
):
    """A FakeOpenAI script: books with ``day``, confirms with ``confirm``, ends the call on goodbye (or not)."""

    def reply(turn: Turn) -> Reply | ToolCall:
        if turn.tool_results:
            output = str(turn.tool_results[-1].output)
            return Reply(confirm.format(day=day) if "HB-7" in output else "Goodbye!")
        if "goodbye" in (turn.last_user_text or "").lower():
            return ToolCall("end_call", {"reason": "done"}) if hang_up else Reply("Goodbye!")
        return ToolCall("book_appointment", {"day": day, "service": "tune-up"})

    return reply


async def play_on_fake(write_yaml: Callable[..., Path], fake: FakeOpenAI, scenario: str = BOOKING) -> Any:
    (loaded,) = load_scenarios(write_yaml(scenario, "scenario.yaml"))
    return await play_scenario(loaded, config("cascade-openai", openai=fake), None)


# ------------------------------------------------------------------------------------- each expectation


async def test_every_expectation_passes_when_the_agent_behaves(
    cloud: Any, fakes: Callable[..., Any], write_yaml: Callable[..., Path]
) -> None:
    fake = fakes(FakeOpenAI, replies=receptionist())
    call = await play_on_fake(write_yaml, fake)
    assert outcomes(call.record.verdicts) == {
        ("tool_called", 1): "pass",
        ("reply", 1): "pass",
        ("within_ms", 1): "pass",
        ("ends_with", None): "pass",
        ("no_tool", None): "pass",
    }, call.record.verdicts
    assert call.record.passed and call.record.scenario == "book"
    assert [t.heard for t in call.record.turns] == ["Book me a tune-up for Saturday, please.", "Thanks, goodbye!"]
    assert call.record.cost_usd > 0  # priced like a call: gpt-4.1-mini tokens
    tools = fake.requests("/v1/chat/completions")[0]["json"]["tools"]
    assert {t["function"]["name"] for t in tools} == {"end_call", "book_appointment"}  # the scenario's mock added


async def test_wrong_tool_argument_fails(
    cloud: Any, fakes: Callable[..., Any], write_yaml: Callable[..., Path]
) -> None:
    fake = fakes(FakeOpenAI, replies=receptionist(day="Sunday"))
    call = await play_on_fake(write_yaml, fake)
    (verdict,) = [v for v in call.record.verdicts if v.expectation == "tool_called"]
    assert verdict.outcome == "fail"
    assert verdict.detail == 'book_appointment called with day="Sunday": no "sat"'
    assert not call.record.passed


async def test_missing_phrase_fails(cloud: Any, fakes: Callable[..., Any], write_yaml: Callable[..., Path]) -> None:
    fake = fakes(FakeOpenAI, replies=receptionist(confirm="All done for {day}."))
    call = await play_on_fake(write_yaml, fake)
    (verdict,) = [v for v in call.record.verdicts if v.expectation == "reply"]
    assert verdict.outcome == "fail"
    assert verdict.detail == 'no "booked"; does not match /HB-\\d+/ in "All done for Saturday."'
    assert outcomes(call.record.verdicts)[("tool_called", 1)] == "pass"


async def test_turn_over_its_budget_fails(
    cloud: Any, fakes: Callable[..., Any], write_yaml: Callable[..., Path]
) -> None:
    fake = fakes(FakeOpenAI, Behaviour(api_key=KEY, first_byte_delay_s=0.4), replies=receptionist())
    call = await play_on_fake(write_yaml, fake, BOOKING.replace("within_ms: 2000", "within_ms: 300"))
    (verdict,) = [v for v in call.record.verdicts if v.expectation == "within_ms"]
    assert verdict.outcome == "fail" and verdict.detail.endswith("(budget 300 ms)")
    assert call.record.turns[0].llm_first_token_ms > 800  # two requests (tool call, answer), 0.4 s each at least


async def test_a_call_that_never_ends_fails(
    cloud: Any, fakes: Callable[..., Any], write_yaml: Callable[..., Path]
) -> None:
    fake = fakes(FakeOpenAI, replies=receptionist(hang_up=False))
    call = await play_on_fake(write_yaml, fake)
    (verdict,) = [v for v in call.record.verdicts if v.expectation == "ends_with"]
    assert (verdict.outcome, verdict.detail) == ("fail", "ended with caller_hangup, expected end_call")


async def test_turns_after_the_agent_hung_up_are_never_played(
    cloud: Any, fakes: Callable[..., Any], write_yaml: Callable[..., Path]
) -> None:
    fake = fakes(FakeOpenAI, replies=[ToolCall("end_call", {}), "Bye."])
    scenario = BOOKING.replace(
        '  - say: "Thanks, goodbye!"', '  - say: "Thanks, goodbye!"\n    expect: {reply: {contains: bye}}'
    )
    call = await play_on_fake(write_yaml, fake, scenario)
    verdicts = {(v.expectation, v.turn): v for v in call.record.verdicts}
    assert verdicts[("reply", 2)].outcome == "fail"
    assert verdicts[("reply", 2)].detail == "never played: the call had already ended"
    assert len(fake.requests("/v1/chat/completions")) == 2  # the second turn never reached the model


# ------------------------------------------------------------------------------------------------ judge


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [("PASS: it confirmed the time.", "pass"), ("fail - it invented a price", "fail"), ("Sounds fine to me.", "error")],
)
async def test_judge_verdicts_and_a_judge_without_one_is_an_error(
    cloud: Any, fakes: Callable[..., Any], write_yaml: Callable[..., Path], answer: str, outcome: str
) -> None:
    agent = fakes(FakeOpenAI, replies=receptionist())
    judge_llm = fakes(FakeOpenAI, replies=[answer])
    scenario = BOOKING + '  judge: "The agent confirmed the booking."\n'
    (loaded,) = load_scenarios(write_yaml(scenario, "scenario.yaml"))
    judge = Judge(config("cascade-openai", openai=judge_llm))

    call = await play_scenario(loaded, config("cascade-openai", openai=agent), judge)

    (verdict,) = [v for v in call.record.verdicts if v.expectation == "judge"]
    assert verdict.outcome == outcome
    assert verdict.cost_usd > 0  # the judge's tokens, priced apart from the call's
    assert call.record.passed is (outcome == "pass")
    (request,) = judge_llm.requests("/v1/chat/completions")
    prompt = request["json"]["messages"][-1]["content"]
    assert "The agent confirmed the booking." in prompt and "[agent called book_appointment(" in prompt
    assert "Agent: You're booked for Saturday, reference HB-7." in prompt


def test_parse_verdict() -> None:
    assert parse_verdict("  **PASS**: good") == ("pass", "good")
    assert parse_verdict("Fail. no goodbye") == ("fail", "no goodbye")
    assert parse_verdict("passable")[0] == "error"
    assert parse_verdict("") == ("error", "no answer")


async def test_a_failing_judge_is_an_error(
    cloud: Any, fakes: Callable[..., Any], write_yaml: Callable[..., Path]
) -> None:
    judge_llm = fakes(FakeOpenAI, Behaviour(api_key="another-key"))  # every request: 401
    verdict = await Judge(config("cascade-openai", openai=judge_llm)).score("Polite?", "Agent: Hello")
    assert verdict.outcome == "error"


# -------------------------------------------------------------------------------------- scenario files


def test_scenario_errors_name_file_line_key_and_allowed_values(write_yaml: Callable[..., Path], registry: Any) -> None:
    path = write_yaml(
        """
        - name: ok
          mode: text
          turns: [{say: hi}]
        - name: bad
          mode: video
          turns:
            - say: hi
              expect:
                reply: {matches: "("}
                tool_called: {nme: x}
          tools:
            - kind: rocket
              parameters: {}
          expect: {ends_with: hangup}
        - name: nothing
          turns:
            - barge_in_after_ms: 100
        """,
        "scenarios.yaml",
    )
    with pytest.raises(ConfigError) as caught:
        load_scenarios(path)
    problems = [str(p) for p in caught.value.problems]
    where = str(path)
    assert f"{where}:5: [1].mode: 'video' is not allowed (allowed: audio, text)" in problems
    assert any(
        p.startswith(f"{where}:9: [1].turns[0].expect.reply.matches: value error, not a regular expression")
        for p in problems
    )
    assert any(
        p.startswith(f"{where}:10: [1].turns[0].expect.tool_called.nme: unknown key 'nme' (allowed: name, arguments)")
        for p in problems
    )
    assert (
        f"{where}:14: [1].expect.ends_with: 'hangup' is not allowed (allowed: end_call, transfer, caller_hangup)"
        in problems
    )
    assert any(p.startswith(f"{where}:17: [2].turns[0]: value error, a turn needs 'say'") for p in problems)


def test_scenario_registry_errors(write_yaml: Callable[..., Path], registry: Any) -> None:
    path = write_yaml(
        """
        name: reg
        mode: text
        tools:
          - kind: rocket
        caller:
          persona: A busy parent.
          goal: Book a repair.
          llm: {provider: gpt-nine}
        """,
        "reg.yaml",
    )
    with pytest.raises(ConfigError) as caught:
        load_scenarios(path)
    problems = "\n".join(str(p) for p in caught.value.problems)
    assert f"{path}:4: tools[0].kind: unknown tool kind 'rocket' (known: " in problems
    assert f"{path}:8: caller.llm.provider: unknown provider 'gpt-nine' (known: " in problems


def test_bad_scenarios_exit_2_without_a_traceback(write_yaml: Callable[..., Path]) -> None:
    scenario = write_yaml("name: x\nmode: text\nturns: [{sey: hi}]\n", "bad.yaml")
    deployment = REPO_ROOT / "voxpipe" / "configs" / "offline.yaml"
    done = subprocess.run(  # noqa: S603 — fixed argv: this interpreter, files the test wrote
        [sys.executable, "-m", "voxpipe.cli", "bench", str(deployment), "--scenarios", str(scenario)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        f"{scenario}:3: turns[0].sey: unknown key 'sey' (allowed: say, audio, barge_in_after_ms, expect)" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_the_example_set_is_valid(registry: Any) -> None:
    scenarios = load_scenarios(REPO_ROOT / "benchmarks" / "scenarios" / "bike-shop")
    assert [s.name for s in scenarios] == ["opening-hours", "book-tune-up", "off-topic", "barge-in", "goodbye"]


def test_wilson_interval() -> None:
    estimate = wilson_interval(9, 10)
    assert (round(estimate.low, 3), round(estimate.high, 3)) == (0.596, 0.982)
    assert wilson_interval(0, 4).low == 0.0 and wilson_interval(0, 4).high > 0.4  # never a zero-width interval
    assert wilson_interval(0, 0).value is None


# --------------------------------------------------------------------------------------------- the bench

TESTKIT = """
name: {name}
agent:
  instructions: A scripted receptionist.
  greeting: Hello, Harbor Bikes.
  tools: [{{kind: end_call}}]
vad: {{provider: testkit_vad}}
stt: {{provider: testkit_stt}}
llm:
  provider: testkit_llm
  options:
    replies:
      - when: book
        tool_call: {{name: book_appointment, arguments: {{day: {day}}}}}
        say: "Booked for {{result.day}}."
      - when: bye
        tool_call: {{name: end_call}}
        say: Goodbye!
      - when: sunday
        say: "{sunday}"
tts: {{provider: testkit_tts}}
"""

# The shop's booking system, mocked: it books whatever day it is asked for (Saturday, in its answer).
MOCK = (
    "{kind: mock, name: book_appointment, parameters: {properties: {day: {type: string}}},"
    " options: {result: {day: Saturday}}}"
)

SCENARIOS = """
- name: hours
  mode: text
  turns: [{say: "Open on Sunday?", expect: {reply: {contains: closed}}}]
- name: booking
  mode: text
  tools: [MOCK]
  turns:
    - say: "Book Saturday"
      expect: {tool_called: {name: book_appointment, arguments: {day: Saturday}}}
    - say: "Bye"
  expect: {ends_with: end_call}
""".replace("MOCK", MOCK)


def bench_files(write_yaml: Callable[..., Path]) -> tuple[Path, Path, Path]:
    good = write_yaml(
        TESTKIT.format(name="good", day="Saturday", sunday="Sorry, we are closed on Sundays."), "good.yaml"
    )
    cheap = write_yaml(TESTKIT.format(name="cheap", day="Sunday", sunday="Come by on Sunday!"), "cheap.yaml")
    return good, cheap, write_yaml(SCENARIOS, "scenarios/shop.yaml")


def test_bench_compares_task_success_and_writes_json_junit_and_records(
    write_yaml: Callable[..., Path], tmp_path: Path, registry: Any
) -> None:
    good, cheap, scenarios = bench_files(write_yaml)
    console = Console(record=True, width=200)
    result = evals_command(
        [good, cheap],
        scenarios.parent,
        repeat=2,
        junit=tmp_path / "junit.xml",
        report=tmp_path / "report.html",
        records_db=tmp_path / "calls.db",
        out=console,
        err=Console(file=open(tmp_path / "err.txt", "w")),  # noqa: SIM115
    )

    rates = {s.variant: (s.passed, s.calls) for s in result.success}
    assert rates == {"good": (4, 4), "cheap": (0, 4)}
    [(cheap_failures)] = [s.failures for s in result.success if s.variant == "cheap"]
    assert {(f.expectation, f.calls) for f in cheap_failures} == {("reply", 2), ("tool_called", 2)}
    text = console.export_text()
    assert "task success" in text and "100% [51%–100%]" in text and "0% [0%–49%]" in text
    assert 'hours turn 1: fail: no "closed" in "Come by on Sunday!"' in text
    # calls interleaved: scenario 1 on each deployment, then scenario 2, ...
    assert [(r.scenario, r.deployment) for r in result.runs[:4]] == [
        ("hours", "good"),
        ("hours", "cheap"),
        ("booking", "good"),
        ("booking", "cheap"),
    ]

    suites = ET.parse(tmp_path / "junit.xml").getroot()  # noqa: S314 — the file the bench under test just wrote
    assert [(s.get("name"), s.get("tests"), s.get("failures")) for s in suites] == [
        ("good", "4", "0"),
        ("cheap", "4", "4"),
    ]
    failure = suites[1].find("testcase/failure")
    assert failure is not None and failure.get("message") == 'reply (turn 1): no "closed" in "Come by on Sunday!"'

    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    first_failing = next(r for r in result.runs if not r.call.record.passed)
    anchor = f"run-{first_failing.call.record.call_id[:12]}-turn-1"
    assert f'href="#{anchor}"' in report and f'id="{anchor}"' in report

    stored = RecordStore(tmp_path / "calls.db").list(experiment=result.experiment)
    assert len(stored) == 8 and {r.scenario for r in stored} == {"hours", "booking"}
    assert all(r.verdicts and r.variant in ("good", "cheap") for r in stored)


def test_cli_min_pass_json_and_report(write_yaml: Callable[..., Path], tmp_path: Path, registry: Any) -> None:
    good, cheap, scenarios = bench_files(write_yaml)
    db = tmp_path / "calls.db"
    runner = CliRunner()
    args = ["bench", str(good), str(cheap), "--scenarios", str(scenarios), "--records", str(db)]

    below = runner.invoke(app, [*args, "--min-pass", "0.9", "--json"])
    assert below.exit_code == 1, below.output
    data = json.loads(below.stdout)
    assert data["deployments"]["good"]["pass_rate"]["value"] == 1.0
    assert data["deployments"]["cheap"]["pass_rate"]["value"] == 0.0
    assert "cheap: pass rate 0% [0%–66%] is below --min-pass 90%" in below.stderr

    assert runner.invoke(app, ["bench", str(good), "--scenarios", str(scenarios), "--min-pass", "0.9"]).exit_code == 0
    report = runner.invoke(app, ["report", "--experiment", data["experiment"], "--records", str(db)])
    assert report.exit_code == 0 and "task success" in report.stdout
    listed = [
        json.loads(line) for line in runner.invoke(app, ["calls", "--json", "--records", str(db)]).stdout.splitlines()
    ]
    assert {(r["scenario"], r["variant"]) for r in listed} >= {("booking", "good"), ("hours", "cheap")}
    assert all(r["verdicts"] for r in listed)
    neither = runner.invoke(app, ["bench", str(good)])
    assert neither.exit_code == 2


# --------------------------------------------------------------------------------------- simulated caller


async def test_an_llm_plays_the_caller(write_yaml: Callable[..., Path], registry: Any) -> None:
    good, _, _ = bench_files(write_yaml)
    scenario = write_yaml(
        """
        name: persona
        mode: text
        tools: [MOCK]
        caller:
          persona: A regular customer.
          goal: Book a tune-up on Saturday.
          max_turns: 4
          llm:
            provider: testkit_llm
            options:
              replies:
                - {when: "booked", say: "Great, bye! HANG UP"}
                - {when: "*", say: "Please book me in for Saturday."}
        expect:
          ends_with: end_call
        """.replace("MOCK", MOCK),
        "persona.yaml",
    )
    from voxpipe.config.loader import load_deployment

    (loaded,) = load_scenarios(scenario)
    call = await play_scenario(loaded, load_deployment(good), None)

    transcript = call.conversation.transcript()
    assert [t.said for t in call.conversation.turns] == ["Please book me in for Saturday.", "Great, bye!"]
    assert "[agent called book_appointment(" in transcript and "Agent: Booked for Saturday." in transcript
    assert outcomes(call.record.verdicts) == {("ends_with", None): "pass"}
