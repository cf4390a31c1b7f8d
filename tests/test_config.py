"""Deployment files: every good file loads; every kind of bad file is reported as ``file:line: path: message``.

Providers named in the YAML below come from the ``voxpipe-testkit`` plugin (see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from ruamel.yaml import YAML

from voxpipe.config import loader
from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import apply_overrides, load_deployment, parse_deployment
from voxpipe.config.models import VAD_PRESETS, Deployment, VADConfig, VADSettings
from voxpipe.providers.registry import Registry, discover
from voxpipe.providers.spec import CloudOptions, Provider, hookimpl

try:  # jsonschema's reference resolver; without jsonschema the schema-validation tests skip
    from referencing.exceptions import Unresolvable
except ImportError:  # pragma: no cover
    Unresolvable = Exception  # type: ignore[assignment,misc]

REPO_ROOT = Path(__file__).resolve().parent.parent
GOOD_CONFIGS = sorted([*REPO_ROOT.glob("configs/*.yaml"), *REPO_ROOT.glob("voxpipe/configs/*.yaml")])
_ENV_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")

# A valid cascade deployment; each bad case below changes one thing and names the line it expects.
BASE = """\
name: support
agent:
  instructions: You are a helpful agent.
vad:
  provider: testkit_vad
stt:
  provider: testkit_stt
llm:
  provider: testkit_llm
tts:
  provider: testkit_tts
"""

pytestmark = pytest.mark.usefixtures("registry")


def problems_of(text: str, environ: dict[str, str] | None = None, registry: Registry | None = None) -> list[str]:
    """Every problem reported for ``text`` (as the file ``f.yaml``), formatted as the CLI prints them."""
    with pytest.raises(ConfigError) as caught:
        parse_deployment(text, "f.yaml", environ={} if environ is None else environ, registry=registry)
    return [str(problem) for problem in caught.value.problems]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once in the base document"
    return text.replace(old, new)


# --------------------------------------------------------------------------------------------- good files


def dummy_environ(path: Path) -> dict[str, str]:
    """A value for every ``${VAR}`` the file mentions (not for ``$${ESCAPED}``)."""
    return {name: f"dummy-{name.lower()}" for name in _ENV_REFERENCE.findall(path.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("path", GOOD_CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_config_is_valid(path: Path) -> None:
    deployment = load_deployment(path, environ=dummy_environ(path))

    assert isinstance(deployment, Deployment)
    for role in deployment.roles():
        assert deployment.services(role), f"{path.name}: {role} has no provider"


def test_base_document_is_valid() -> None:
    deployment = parse_deployment(BASE, "f.yaml", environ={})

    assert (deployment.name, deployment.mode) == ("support", "cascade")
    assert [s.provider for s in deployment.services("stt")] == ["testkit_stt"]
    assert deployment.agent.instructions == "You are a helpful agent."


# --------------------------------------------------------------------------------------------- bad files


def test_invalid_yaml_names_the_line_of_the_error() -> None:
    text = "name: support\nagent:\n  instructions: one: two\n"

    assert problems_of(text) == ["f.yaml:3: invalid YAML: mapping values are not allowed here"]


def test_unclosed_flow_sequence_is_reported_where_the_parser_gave_up() -> None:
    assert problems_of("name: support\ntags: [a, b\n") == [
        "f.yaml:3: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]


@pytest.mark.parametrize("text", ["- stt\n- llm\n", "just a sentence\n", ""], ids=["list", "scalar", "empty"])
def test_document_must_be_a_mapping(text: str) -> None:
    assert problems_of(text) == ["f.yaml:1: a deployment file must be a mapping of sections"]


def test_unknown_top_level_key_lists_the_allowed_keys() -> None:
    (problem,) = problems_of(BASE + "colour: blue\n")

    allowed = ", ".join(Deployment.model_fields)
    assert problem == f"f.yaml:12: colour: unknown key 'colour' (allowed: {allowed})"
    assert "name, mode, agent" in problem


def test_unknown_nested_key_names_its_path_and_the_keys_of_its_section() -> None:
    text = replace_once(BASE, "  instructions: You are a helpful agent.\n", "  instructions: Hi.\n  greting: Hello!\n")

    assert problems_of(text) == [
        "f.yaml:4: agent.greting: unknown key 'greting' (allowed: instructions, greeting, tools)"
    ]


def test_wrong_type() -> None:
    text = BASE + "interruptions:\n  enabled: maybe\n"

    assert problems_of(text) == [
        "f.yaml:13: interruptions.enabled: input should be a valid boolean, unable to interpret input"
    ]


def test_out_of_range_number() -> None:
    text = replace_once(BASE, "  provider: testkit_vad\n", "  provider: testkit_vad\n  confidence: 1.5\n")

    assert problems_of(text) == ["f.yaml:6: vad.confidence: input should be less than or equal to 1"]


def test_bad_literal_lists_the_allowed_values() -> None:
    text = replace_once(BASE, "name: support\n", "name: support\nmode: hybrid\n")

    assert problems_of(text) == ["f.yaml:2: mode: 'hybrid' is not allowed (allowed: cascade, realtime)"]


def test_bad_vad_preset_lists_the_presets() -> None:
    text = replace_once(BASE, "  provider: testkit_vad\n", "  provider: testkit_vad\n  preset: stadium\n")

    assert problems_of(text) == [
        "f.yaml:6: vad.preset: 'stadium' is not allowed (allowed: quiet_office, noisy_call_center, phone_line)"
    ]


def test_bad_turn_strategy_tag_lists_the_strategies() -> None:
    text = BASE + "turn:\n  strategy: telepathy\n"

    assert problems_of(text) == ["f.yaml:12: turn: 'telepathy' is not allowed (allowed: silence, smart_turn)"]


def test_turn_delays_out_of_order_are_an_error() -> None:
    text = BASE + "turn:\n  timeout_secs: 0.6\n  max_delay_secs: 0.3\n"
    (problem,) = problems_of(text)
    assert problem.startswith("f.yaml:12: turn") and "max_delay_secs (0.3) must be >= min_delay_secs (0.6)" in problem


def test_key_of_another_turn_strategy_is_unknown_for_the_tagged_one() -> None:
    text = BASE + "turn:\n  strategy: smart_turn\n  timeout_secs: 0.4\n"

    assert problems_of(text) == [
        "f.yaml:14: turn.timeout_secs: unknown key 'timeout_secs' "
        "(allowed: speculate, min_delay_secs, max_delay_secs, strategy, max_silence_secs)"
    ]


def test_unknown_provider_lists_the_installed_ones(registry: Registry) -> None:
    text = replace_once(BASE, "  provider: testkit_stt\n", "  provider: deepgran\n")

    known = ", ".join(registry.names("stt"))
    assert "testkit_stt" in known
    assert problems_of(text) == [f"f.yaml:7: stt.provider: unknown provider 'deepgran' (known: {known})"]


def test_unknown_provider_option_lists_the_providers_options() -> None:
    text = replace_once(BASE, "  provider: testkit_stt\n", "  provider: testkit_stt\n  options:\n    colour: red\n")

    assert problems_of(text) == [
        "f.yaml:9: stt.options.colour: unknown key 'colour' (allowed: transcripts, latency_secs)"
    ]


def test_bad_provider_option_type() -> None:
    text = replace_once(
        BASE, "  provider: testkit_stt\n", "  provider: testkit_stt\n  options:\n    latency_secs: soon\n"
    )

    assert problems_of(text) == [
        "f.yaml:9: stt.options.latency_secs: input should be a valid number, unable to parse string as a number"
    ]


def test_error_deep_inside_provider_options_names_the_list_index() -> None:
    text = replace_once(
        BASE,
        "  provider: testkit_llm\n",
        "  provider: testkit_llm\n  options:\n    replies:\n      - when: hello\n        say: Hi!\n      - when: bye\n",
    )

    assert problems_of(text) == [
        "f.yaml:14: llm.options.replies[1]: value error, a reply rule needs 'say', 'tool_call' or both"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE.replace("tts:\n  provider: testkit_tts\n", ""), "f.yaml:1: tts: required in cascade mode (a provider)"),
        (
            "name: support\nmode: realtime\nagent:\n  instructions: Hi.\n",
            "f.yaml:1: realtime: required in realtime mode (a provider)",
        ),
    ],
    ids=["cascade-without-tts", "realtime-without-realtime"],
)
def test_role_required_by_the_mode_is_missing(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_required_key_missing() -> None:
    text = replace_once(BASE, "name: support\n", "")

    assert problems_of(text) == ["f.yaml:1: name: required key is missing"]


def test_every_problem_of_a_file_is_reported_in_line_order() -> None:
    text = replace_once(BASE, "name: support\n", "name: support\nmode: hybrid\n") + "colour: blue\n"

    problems = problems_of(text)
    assert [p.split(":")[1] for p in problems] == ["2", "13"]


# --------------------------------------------------------------------------------------------- environment


def test_missing_environment_variable_is_named() -> None:
    text = replace_once(BASE, "You are a helpful agent.", "${AGENT_PROMPT}")

    assert problems_of(text, environ={}) == [
        "f.yaml:3: agent.instructions: environment variable AGENT_PROMPT is not set"
    ]


def test_environment_variable_is_substituted(env: Callable[..., dict[str, str]]) -> None:
    environ = env(AGENT_PROMPT="Answer in French.")
    text = replace_once(BASE, "You are a helpful agent.", "Be brief. ${AGENT_PROMPT}")

    assert parse_deployment(text, "f.yaml", environ=environ).agent.instructions == "Be brief. Answer in French."


def test_process_environment_is_the_default(env: Callable[..., dict[str, str]]) -> None:
    env(AGENT_PROMPT="From the process environment.")
    text = replace_once(BASE, "You are a helpful agent.", "${AGENT_PROMPT}")

    assert parse_deployment(text, "f.yaml").agent.instructions == "From the process environment."


def test_default_value_is_used_only_when_the_variable_is_unset() -> None:
    text = replace_once(BASE, "You are a helpful agent.", "${AGENT_PROMPT:-Be kind.}")

    assert parse_deployment(text, "f.yaml", environ={}).agent.instructions == "Be kind."
    assert parse_deployment(text, "f.yaml", environ={"AGENT_PROMPT": "Be fast."}).agent.instructions == "Be fast."


def test_double_dollar_escapes_a_reference() -> None:
    text = replace_once(BASE, "You are a helpful agent.", "Say $${NAME} literally.")

    assert parse_deployment(text, "f.yaml", environ={}).agent.instructions == "Say ${NAME} literally."


class _CloudOptions(CloudOptions):
    region: str = "eu"


class _CloudPlugin:
    """A provider with an ``api_key`` (``SecretStr``), as every network provider has."""

    @hookimpl
    def voxpipe_providers(self) -> list[Provider]:
        return [Provider(name="cloud_stt", kind="stt", options=_CloudOptions, build=lambda request: None)]


@pytest.fixture
def cloud_registry() -> Registry:
    registry = discover()
    registry.add_plugin(_CloudPlugin(), "voxpipe-tests", "0")
    assert registry.get("stt", "cloud_stt") is not None, registry.problems
    return registry


def test_inline_api_key_is_rejected(cloud_registry: Registry) -> None:
    text = replace_once(
        BASE, "  provider: testkit_stt\n", "  provider: cloud_stt\n  options:\n    api_key: sk-live-123\n"
    )

    assert problems_of(text, registry=cloud_registry) == [
        "f.yaml:9: stt.options.api_key: a secret must come from the environment: write it as ${ENV_VAR}, not inline"
    ]


def test_api_key_from_the_environment_is_accepted(cloud_registry: Registry) -> None:
    text = replace_once(
        BASE, "  provider: testkit_stt\n", "  provider: cloud_stt\n  options:\n    api_key: ${STT_KEY}\n"
    )

    deployment = parse_deployment(text, "f.yaml", environ={"STT_KEY": "sk-live-123"}, registry=cloud_registry)

    assert deployment.services("stt")[0].options["api_key"] == "sk-live-123"
    options = _CloudOptions.model_validate(deployment.services("stt")[0].options)
    assert isinstance(options.api_key, SecretStr)
    assert "sk-live-123" not in repr(options)


def test_inline_transport_secret_is_rejected() -> None:
    text = BASE + "transport:\n  twilio:\n    auth_token: 0123456789abcdef\n"

    problems: list[str] = []
    try:
        parse_deployment(text, "f.yaml", environ={})
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
    assert problems == [
        "f.yaml:14: transport.twilio.auth_token: a secret must come from the environment: "
        "write it as ${ENV_VAR}, not inline"
    ]


# --------------------------------------------------------------------------------------------- tools


TOOLS = """\
  tools:
    - kind: end_call
    - kind: transfer
      options: {to: "+15550100"}
"""


def test_duplicate_tool_names_are_rejected() -> None:
    text = replace_once(
        BASE, "  instructions: You are a helpful agent.\n", "  instructions: Hi.\n" + TOOLS + "    - kind: end_call\n"
    )

    assert problems_of(text) == ["f.yaml:4: agent.tools: value error, tool names must be unique; repeated: end_call"]


def test_tools_of_one_kind_with_distinct_names_are_accepted() -> None:
    extra = "    - kind: end_call\n      name: hang_up_politely\n"
    text = replace_once(BASE, "  instructions: You are a helpful agent.\n", "  instructions: Hi.\n" + TOOLS + extra)

    deployment = parse_deployment(text, "f.yaml", environ={})

    assert [t.function_name for t in deployment.agent.tools] == ["end_call", "transfer", "hang_up_politely"]


def test_unknown_tool_kind_lists_the_known_kinds(registry: Registry) -> None:
    text = replace_once(
        BASE, "  instructions: You are a helpful agent.\n", "  instructions: Hi.\n  tools:\n    - kind: smoke_signal\n"
    )

    known = ", ".join(sorted(registry.tool_kinds))
    assert problems_of(text) == [f"f.yaml:5: agent.tools[0].kind: unknown tool kind 'smoke_signal' (known: {known})"]


def test_tool_options_are_validated_by_the_tool_kind() -> None:
    text = replace_once(
        BASE, "  instructions: You are a helpful agent.\n", "  instructions: Hi.\n  tools:\n    - kind: transfer\n"
    )

    assert problems_of(text) == ["f.yaml:5: agent.tools[0].options.to: required key is missing"]


def test_tool_without_an_argument_schema_is_rejected() -> None:
    tool = "  tools:\n    - kind: python\n      options: {function: 'json:dumps'}\n"
    text = replace_once(BASE, "  instructions: You are a helpful agent.\n", "  instructions: Hi.\n" + tool)

    assert problems_of(text) == ["f.yaml:5: agent.tools[0]: a JSON Schema of the arguments is required (parameters:)"]


# --------------------------------------------------------------------------------------------- vad presets


def test_vad_preset_with_explicit_override() -> None:
    text = replace_once(
        BASE, "  provider: testkit_vad\n", "  provider: testkit_vad\n  preset: phone_line\n  stop_secs: 0.5\n"
    )

    resolved = parse_deployment(text, "f.yaml", environ={}).vad.resolved()

    preset = VAD_PRESETS["phone_line"]
    assert resolved == VADSettings(
        confidence=preset.confidence, start_secs=preset.start_secs, stop_secs=0.5, min_volume=preset.min_volume
    )
    assert resolved.stop_secs != preset.stop_secs


def test_vad_without_preset_uses_pipecat_defaults_and_explicit_values() -> None:
    assert VADConfig().resolved() == VAD_PRESETS[None]
    assert VADConfig(min_volume=0.1).resolved() == VAD_PRESETS[None].model_copy(update={"min_volume": 0.1})


@pytest.mark.parametrize("preset", [p for p in VAD_PRESETS if p is not None])
def test_every_preset_resolves_to_itself(preset: Any) -> None:
    assert VADConfig(preset=preset).resolved() == VAD_PRESETS[preset]


# --------------------------------------------------------------------------------------------- reserved sections


def test_reserved_section_is_rejected_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A section name kept for a later release is refused as such, not as an unknown key."""
    monkeypatch.setattr(loader, "RESERVED_SECTIONS", ("telemetry",))
    text = BASE + "telemetry:\n  endpoint: https://example.com\n"

    assert problems_of(text) == ["f.yaml:12: telemetry: reserved for a later voxpipe release and not supported yet"]


@pytest.mark.parametrize("section", loader.RESERVED_SECTIONS or ["(none)"])
def test_sections_reserved_by_this_release(section: str) -> None:
    if section == "(none)":
        pytest.skip("this release reserves no section")
    assert problems_of(BASE + f"{section}:\n  x: 1\n") == [
        f"f.yaml:12: {section}: reserved for a later voxpipe release and not supported yet"
    ]


# --------------------------------------------------------------------------------------------- fallback chains


FALLBACK = replace_once(
    BASE,
    "llm:\n  provider: testkit_llm\n",
    "llm:\n  - provider: testkit_llm\n  - provider: testkit_llm\n    options:\n      latency_secs: -1\n",
)


def test_error_in_the_second_provider_of_a_chain_names_its_index() -> None:
    assert problems_of(FALLBACK) == [
        "f.yaml:12: llm[1].options.latency_secs: input should be greater than or equal to 0"
    ]


def test_unknown_provider_in_a_chain_names_its_index(registry: Registry) -> None:
    text = FALLBACK.replace("  - provider: testkit_llm\n    options:", "  - provider: gpt-9\n    options:")

    known = ", ".join(registry.names("llm"))
    assert problems_of(text) == [f"f.yaml:10: llm[1].provider: unknown provider 'gpt-9' (known: {known})"]


def test_chain_is_kept_in_priority_order() -> None:
    text = FALLBACK.replace("latency_secs: -1", "latency_secs: 2")

    chain = parse_deployment(text, "f.yaml", environ={}).services("llm")

    assert [(s.provider, s.options) for s in chain] == [("testkit_llm", {}), ("testkit_llm", {"latency_secs": 2})]


# --------------------------------------------------------------------------------------------- overrides


def test_override_switches_mode_to_realtime() -> None:
    base = parse_deployment(BASE, "f.yaml", environ={})

    switched = apply_overrides(
        base,
        {"mode": "realtime", "realtime": {"provider": "testkit_realtime", "options": {"transcripts": ["hi"]}}},
    )

    assert switched.mode == "realtime"
    assert switched.roles() == ("realtime",)
    assert switched.services("realtime")[0].options == {"transcripts": ["hi"]}
    assert base.mode == "cascade"  # the original is untouched


def test_override_deep_merges_mappings() -> None:
    text = replace_once(BASE, "  provider: testkit_vad\n", "  provider: testkit_vad\n  preset: phone_line\n")
    base = parse_deployment(text, "f.yaml", environ={})

    merged = apply_overrides(base, {"vad": {"stop_secs": 0.9}, "agent": {"greeting": "Hello!"}})

    assert merged.vad.provider == "testkit_vad" and merged.vad.preset == "phone_line"
    assert merged.vad.resolved().stop_secs == 0.9
    assert merged.agent.greeting == "Hello!"
    assert merged.agent.instructions == base.agent.instructions


def test_bad_override_is_rejected() -> None:
    base = parse_deployment(BASE, "f.yaml", environ={})

    with pytest.raises(ConfigError) as caught:
        apply_overrides(base, {"llm": {"provider": "testkit_llm", "options": {"latency_secs": -1}}})
    assert [str(p) for p in caught.value.problems] == [
        "<override>: llm[0].options.latency_secs: input should be greater than or equal to 0"
    ]

    with pytest.raises(ConfigError) as caught:
        apply_overrides(base, {"mode": "realtime"})
    assert [str(p) for p in caught.value.problems] == ["<override>: realtime: required in realtime mode (a provider)"]


def test_override_merges_an_option_into_a_single_provider_role() -> None:
    base = parse_deployment(BASE, "f.yaml", environ={})

    merged = apply_overrides(base, {"llm": {"options": {"latency_secs": 0.5}}})

    assert [(s.provider, s.options) for s in merged.services("llm")] == [("testkit_llm", {"latency_secs": 0.5})]


# --------------------------------------------------------------------------------------------- CLI


def test_cli_validate_bad_file_exits_2_with_located_errors_and_no_traceback(
    write_yaml: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    bad = write_yaml(replace_once(BASE, "name: support\n", "name: support\nmode: hybrid\n"), "bad.yaml")

    result = run_cli("validate", str(bad))

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{bad}:2: mode: 'hybrid' is not allowed (allowed: cascade, realtime)"
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_validate_invalid_yaml_exits_2_without_traceback(
    write_yaml: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    bad = write_yaml("name: support\nagent:\n  instructions: one: two\n", "broken.yaml")

    result = run_cli("validate", str(bad))

    assert result.returncode == 2
    assert result.stderr.strip() == f"{bad}:3: invalid YAML: mapping values are not allowed here"
    assert "Traceback" not in result.stderr


def test_cli_validate_good_file_exits_0(write_yaml: Callable[..., Path], run_cli: Callable[..., Any]) -> None:
    good = write_yaml(BASE, "good.yaml")

    result = run_cli("validate", str(good))

    assert result.returncode == 0, result.stderr
    assert f"ok {good}" in " ".join(result.stdout.split())
    assert result.stderr == ""


def test_cli_validate_reports_each_file(write_yaml: Callable[..., Path], run_cli: Callable[..., Any]) -> None:
    good = write_yaml(BASE, "good.yaml")
    bad = write_yaml(BASE + "colour: blue\n", "bad.yaml")

    result = run_cli("validate", str(good), str(bad))

    assert result.returncode == 2
    assert "ok" in result.stdout and "good.yaml" in result.stdout
    assert result.stderr.startswith(f"{bad}:12: colour: unknown key 'colour'")


# --------------------------------------------------------------------------------------------- JSON Schema


@pytest.fixture(scope="module")
def cli_schema() -> dict[str, Any]:
    """``voxpipe schema``, run as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "voxpipe.cli", "schema"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _role_alternatives(schema: dict[str, Any], role: str) -> list[dict[str, Any]]:
    one, many = schema["properties"][role]["anyOf"]
    return [one, many["items"]]


def test_schema_lists_installed_providers_and_their_options(cli_schema: dict[str, Any], registry: Registry) -> None:
    for service in _role_alternatives(cli_schema, "stt"):
        assert service["properties"]["provider"]["enum"] == registry.names("stt")
        clauses = {c["if"]["properties"]["provider"]["const"]: c["then"] for c in service["allOf"]}
        options = clauses["testkit_stt"]["properties"]["options"]
        assert options["additionalProperties"] is False
        assert set(options["properties"]) == {"transcripts", "latency_secs"}
        assert options["properties"]["latency_secs"]["minimum"] == 0
    vad = cli_schema["$defs"]["VADConfig"]
    assert "testkit_vad" in vad["properties"]["provider"]["enum"]
    tool_kinds = cli_schema["$defs"]["ToolConfig"]["properties"]["kind"]["enum"]
    assert {"http", "python", "end_call", "transfer"} <= set(tool_kinds)


def _yaml_data(text: str) -> Any:
    return YAML(typ="safe").load(text)


def test_schema_rejects_what_the_loader_rejects(cli_schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(cli_schema)
    bad = _yaml_data(
        replace_once(BASE, "  provider: testkit_stt\n", "  provider: testkit_stt\n  options: {colour: red}\n")
    )

    assert not validator.is_valid(bad)
    assert not validator.is_valid(_yaml_data(BASE + "colour: blue\n"))


def test_good_config_validates_against_the_schema(cli_schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    good = _yaml_data(
        replace_once(
            BASE,
            "  provider: testkit_llm\n",
            "  provider: testkit_llm\n  options:\n    replies: [{when: hi, say: Hello}]\n",
        )
    )

    jsonschema.Draft202012Validator(cli_schema).validate(good)
