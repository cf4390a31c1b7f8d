"""``voxpipe deploy sam``: secrets by dynamic reference, each function only the ones it reads; the bridge
queue has a dead-letter queue and the bridge function reserved concurrency. cfn-lint checks the result offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from test_sam import cfn_lint

from tests.apigw_shim import serverless_registry
from voxpipe.serverless import CONFIG_FILE, HandlerConfig
from voxpipe.serverless.sam import NARROW_CONFIG_FILE, write_sam

pytestmark = pytest.mark.timeout(120)

DEPLOYMENT = """
name: sam-secrets
agent:
  instructions: You are a test agent.
  tools:
    - kind: http
      name: lookup
      parameters: {type: object, properties: {q: {type: string}}}
      options: {url: "${LOOKUP_URL}/lookup", headers: {Authorization: "Bearer ${LOOKUP_TOKEN}"}}
stt: {provider: testkit_stt}
tts: {provider: testkit_tts}
llm:
  - {provider: openai, model: gpt-4o-mini, options: {api_key: "${OPENAI_API_KEY}", base_url: "${OPENAI_BASE_URL}"}}
  - {provider: bedrock, model: amazon.nova-lite-v1:0}
transport:
  twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}
limits: {concurrent_calls: 12}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sam-secrets")
    (folder / "deployment.yaml").write_text(DEPLOYMENT, encoding="utf-8")
    write_sam(folder / "deployment.yaml", folder / "out", environ={}, registry=serverless_registry())
    return folder / "out"


@pytest.fixture(scope="module")
def resources(built: Path) -> dict[str, Any]:
    return YAML(typ="safe", pure=True).load((built / "template.yaml").read_text())["Resources"]


def _env(resources: dict[str, Any], function: str) -> dict[str, Any]:
    return resources[function]["Properties"]["Environment"]["Variables"]


def _secret(name: str) -> str:
    return "{{resolve:secretsmanager:voxpipe/sam-secrets/" + name + "}}"


def _setting(name: str) -> str:
    return "{{resolve:ssm:/voxpipe/sam-secrets/" + name + "}}"


def test_credentials_come_from_secrets_manager_and_settings_from_parameter_store(resources: dict[str, Any]) -> None:
    relay = _env(resources, "RelayFunction")
    assert {k: v for k, v in relay.items() if k.isupper() and not k.startswith("VOXPIPE_")} == {
        "OPENAI_API_KEY": _secret("OPENAI_API_KEY"),
        "LOOKUP_TOKEN": _secret("LOOKUP_TOKEN"),
        "TWILIO_AUTH_TOKEN": _secret("TWILIO_AUTH_TOKEN"),
        "OPENAI_BASE_URL": _setting("OPENAI_BASE_URL"),
        "LOOKUP_URL": _setting("LOOKUP_URL"),
    }


def test_each_function_gets_only_the_secrets_it_reads(built: Path, resources: dict[str, Any]) -> None:
    for function in ("TwimlFunction", "BridgeFunction"):
        env = _env(resources, function)
        assert env["TWILIO_AUTH_TOKEN"] == _secret("TWILIO_AUTH_TOKEN")  # both check Twilio's signature
        assert env["VOXPIPE_SIGNING_SECRET"] == _secret("VOXPIPE_SIGNING_SECRET")  # call tokens: minted, checked
        assert not {"OPENAI_API_KEY", "LOOKUP_TOKEN", "OPENAI_BASE_URL", "LOOKUP_URL"} & set(env)
        assert env["VOXPIPE_HANDLER_CONFIG"] == f"/var/task/{NARROW_CONFIG_FILE}"
    narrow = json.loads((built / "handler" / NARROW_CONFIG_FILE).read_text())
    assert narrow["llm"] == [] and narrow["agent"]["tools"] == []
    assert "${TWILIO_AUTH_TOKEN}" in json.dumps(narrow) and "OPENAI_API_KEY" not in json.dumps(narrow)


def test_the_relay_gets_the_signing_secret_that_binds_its_sessions_to_their_webhook(resources: dict[str, Any]) -> None:
    assert _env(resources, "RelayFunction")["VOXPIPE_SIGNING_SECRET"] == _secret("VOXPIPE_SIGNING_SECRET")


def test_each_function_starts_with_only_the_variables_it_is_given(built: Path, resources: dict[str, Any]) -> None:
    """What CloudFormation resolves is all a function's handler configuration needs: none fails at start."""
    for function in ("RelayFunction", "TwimlFunction", "BridgeFunction"):
        env = _env(resources, function)
        environ = {
            name: value if isinstance(value, str) and "{{" not in value else f"resolved-{name}"
            for name, value in env.items()
        }
        file = environ.get("VOXPIPE_HANDLER_CONFIG", f"/var/task/{CONFIG_FILE}").removeprefix("/var/task/")
        config = HandlerConfig.from_json(json.loads((built / "handler" / file).read_text()), environ)
        assert config.twilio_auth_token == "resolved-TWILIO_AUTH_TOKEN"  # noqa: S105 — a stand-in value, not a secret
        assert bool(config.llm) == bool(config.tools) == (function == "RelayFunction")


def test_no_secret_is_a_parameter_or_a_shared_variable(built: Path) -> None:
    template = YAML(typ="safe", pure=True).load((built / "template.yaml").read_text())
    assert set(template["Parameters"]) == {"StageName"}
    assert set(template["Globals"]["Function"]["Environment"]["Variables"]) == {"VOXPIPE_TABLE"}


def test_bridge_queue_has_a_fifo_dead_letter_queue_and_the_bridge_reserved_concurrency(
    resources: dict[str, Any],
) -> None:
    queue = resources["Queue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    assert resources["DeadLetterQueue"]["Properties"]["FifoQueue"] is True  # a FIFO queue's DLQ must be FIFO
    assert resources["BridgeFunction"]["Properties"]["ReservedConcurrentExecutions"] == 12


def test_the_template_passes_cfn_lint_offline(built: Path) -> None:
    cfn_lint(built / "template.yaml")


def test_the_bridge_signs_page_tokens_even_when_twilio_runs_unsigned(tmp_path: Path) -> None:
    """Unsigned Twilio needs no call tokens, but a browser page still needs its session token on the bridge."""
    unsigned = "insecure: true\n" + DEPLOYMENT.replace(
        'twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}', "twilio: {validate_signatures: false}"
    )
    (tmp_path / "deployment.yaml").write_text(unsigned, encoding="utf-8")
    write_sam(tmp_path / "deployment.yaml", tmp_path / "out", environ={}, registry=serverless_registry())
    resources = YAML(typ="safe", pure=True).load((tmp_path / "out" / "template.yaml").read_text())["Resources"]
    assert _env(resources, "BridgeFunction")["VOXPIPE_SIGNING_SECRET"] == _secret("VOXPIPE_SIGNING_SECRET")
    assert "VOXPIPE_SIGNING_SECRET" not in _env(resources, "TwimlFunction")  # it mints no call tokens then
