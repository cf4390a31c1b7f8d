"""``voxpipe deploy sam``: the generated template passes cfn-lint (offline), grants least privilege, and the
functions' code bundle runs its handlers without pipecat, pydantic, or any secret written to disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.apigw_shim import serverless_registry
from voxpipe.serverless.sam import SamError, write_sam

pytestmark = pytest.mark.timeout(120)

DEPLOYMENT = """
name: sam-test
agent:
  instructions: You are a test agent.
  greeting: Hello!
  tools:
    - kind: http
      name: lookup
      parameters: {type: object, properties: {q: {type: string}}}
      options: {url: "https://api.example.com/lookup", headers: {Authorization: "Bearer ${LOOKUP_TOKEN}"}}
    - kind: end_call
stt: {provider: testkit_stt}
tts: {provider: testkit_tts}
llm:
  - provider: bedrock
    model: us.anthropic.claude-3-5-haiku-20241022-v1:0
  - provider: bedrock
    model: amazon.nova-lite-v1:0
transport:
  twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sam")
    (folder / "deployment.yaml").write_text(DEPLOYMENT, encoding="utf-8")
    environ = {"TWILIO_AUTH_TOKEN": "real-secret-token"}  # LOOKUP_TOKEN unset: a placeholder validates
    write_sam(folder / "deployment.yaml", folder / "out", environ=environ, registry=serverless_registry())
    return folder / "out"


@pytest.fixture(scope="module")
def template(built: Path) -> dict[str, Any]:
    return YAML(typ="safe", pure=True).load((built / "template.yaml").read_text())


def cfn_lint(template: Path) -> None:
    """cfn-lint (with the SAM translator) validates ``template`` against CloudFormation's schemas, offline."""
    executable = shutil.which("cfn-lint")
    if executable is None:
        pytest.skip("cfn-lint is not installed (pip install cfn-lint)")
    done = subprocess.run(  # noqa: S603 — fixed argv: a tool of the dev install, no caller input
        [executable, str(template)], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_cfn_lint_passes_offline(built: Path) -> None:
    cfn_lint(built / "template.yaml")


def test_resources_and_routes(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    table = resources["Table"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    for api in ("Relay", "Bridge"):
        assert resources[f"{api}Api"]["Properties"]["ProtocolType"] == "WEBSOCKET"
        keys = {r["Properties"]["RouteKey"] for n, r in resources.items() if n.startswith(api) and n.endswith("Route")}
        assert keys == {"$connect", "$disconnect", "$default"}
    assert resources["Queue"]["Properties"]["FifoQueue"] is True
    handlers = {r["Properties"]["Handler"] for r in resources.values() if r["Type"] == "AWS::Serverless::Function"}
    assert handlers == {
        "voxpipe.serverless.relay.handler",
        "voxpipe.serverless.twiml.handler",
        "voxpipe.serverless.worker.handler",
        "voxpipe.serverless.silence.handler",  # silence: is on by default
    }
    # Silence checks: a standard queue (FIFO queues take no per-message delay) feeding the silence function.
    assert "FifoQueue" not in resources["SilenceQueue"]["Properties"]
    (source,) = resources["SilenceFunction"]["Properties"]["Events"].values()
    assert source["Type"] == "SQS" and source["Properties"]["Queue"] == {"Fn::GetAtt": ["SilenceQueue", "Arn"]}
    assert source["Properties"]["BatchSize"] == 1
    assert resources["RelayFunction"]["Properties"]["Environment"]["Variables"]["VOXPIPE_SILENCE_QUEUE_URL"] == {
        "Ref": "SilenceQueue"
    }
    paths = {e["Properties"]["Path"] for e in resources["TwimlFunction"]["Properties"]["Events"].values()}
    assert paths == {"/twiml", "/twiml/action", "/twiml/transfer-status"}  # the warm transfer's status callback
    # The bridge hands browser pages their session token on the same (implicit) HTTP API.
    [page_token] = resources["BridgeFunction"]["Properties"]["Events"].values()
    assert page_token == {"Type": "HttpApi", "Properties": {"Path": "/bridge/token", "Method": "POST"}}
    assert "${ServerlessHttpApi}" in template["Outputs"]["BridgeTokenUrl"]["Value"]["Fn::Sub"]
    assert set(template["Parameters"]) == {"StageName"}  # no secret is a template parameter
    relay_env = resources["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert relay_env["LOOKUP_TOKEN"] == "{{resolve:secretsmanager:voxpipe/sam-test/LOOKUP_TOKEN}}"  # noqa: S105 — a dynamic reference, not a secret


def _statements(template: dict[str, Any], resource: str) -> list[dict[str, Any]]:
    properties = template["Resources"][resource]["Properties"]
    if "Policies" in properties:
        return [s for policy in properties["Policies"] for s in policy["Statement"]]
    return properties["PolicyDocument"]["Statement"]


def test_iam_is_least_privilege(template: dict[str, Any]) -> None:
    relay = _statements(template, "RelayFunction")
    actions = {a for s in relay for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "execute-api:ManageConnections",
        "bedrock:InvokeModelWithResponseStream",
        "sqs:SendMessage",  # its silence checks, to the silence queue only
    }
    checks = _statements(template, "SilenceFunction")
    assert {s["Action"] if isinstance(s["Action"], str) else tuple(s["Action"]) for s in checks} == {
        ("dynamodb:GetItem", "dynamodb:PutItem"),
        "execute-api:ManageConnections",
        "sqs:SendMessage",
    }
    assert all(s["Resource"] == {"Fn::GetAtt": ["SilenceQueue", "Arn"]} for s in relay + checks if "sqs" in s["Action"])
    manage = next(s for s in relay if s["Action"] == "execute-api:ManageConnections")
    assert manage["Resource"] == [
        {
            "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${RelayApi}/${StageName}"
            "/POST/@connections/*"
        }
    ]
    bedrock = next(s for s in relay if s["Action"] == "bedrock:InvokeModelWithResponseStream")
    assert [r["Fn::Sub"].rsplit("/", 1)[1] for r in bedrock["Resource"]] == [
        "amazon.nova-lite-v1:0",
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
    ]
    assert "Policies" not in template["Resources"]["TwimlFunction"]["Properties"]  # it touches nothing
    for resource in ("RelayFunction", "BridgeFunction", "WorkerPolicy", "SilenceFunction"):
        for statement in _statements(template, resource):
            assert statement["Resource"] != "*" and "*" not in json.dumps(statement["Action"]), statement
    worker = _statements(template, "WorkerPolicy")
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= set(worker[0]["Action"])
    # The worker writes its status and $connect reads it (voxpipe.serverless.bridge_status).
    [worker_table] = [s for s in worker if "dynamodb:PutItem" in s["Action"]]
    [bridge_table] = [s for s in _statements(template, "BridgeFunction") if "dynamodb:GetItem" in s["Action"]]
    assert worker_table["Resource"] == bridge_table["Resource"] == {"Fn::GetAtt": ["Table", "Arn"]}


def test_bundle_has_no_secret_and_no_pipecat(built: Path) -> None:
    config = (built / "handler" / "voxpipe-handler.json").read_text()
    assert "real-secret-token" not in config and "deploy-placeholder" not in config
    assert "${TWILIO_AUTH_TOKEN}" in config and "Bearer ${LOOKUP_TOKEN}" in config
    requirements = (built / "handler" / "requirements.txt").read_text()
    assert "pipecat" not in requirements and "aiohttp" in requirements  # the http tool needs it
    assert (built / "handler" / "voxpipe" / "serverless" / "relay.py").exists()


def test_handlers_import_neither_pipecat_nor_pydantic(built: Path) -> None:
    """The bundle's handlers load from the bundle itself, and stay light: pipecat and pydantic never load."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import voxpipe.serverless.relay, voxpipe.serverless.twiml, voxpipe.serverless.worker;"
        "import voxpipe; assert voxpipe.__file__.startswith(sys.argv[1]), voxpipe.__file__;"
        "heavy = sorted(m for m in ('pipecat', 'pydantic', 'boto3', 'openai') if m in sys.modules);"
        "assert not heavy, heavy"
    )
    done = subprocess.run(  # noqa: S603 — fixed argv: this interpreter or a tool of the dev install, no caller input
        [sys.executable, "-c", probe, str(built / "handler")], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_relay_needs_a_streamable_llm(tmp_path: Path) -> None:
    source = tmp_path / "deployment.yaml"
    source.write_text(DEPLOYMENT.replace("provider: bedrock", "provider: testkit_llm").replace("model: ", "# "))
    with pytest.raises(SamError, match="needs an llm provider"):
        write_sam(source, tmp_path / "out", environ={}, registry=serverless_registry())
    write_sam(source, tmp_path / "out", relay=False, environ={}, registry=serverless_registry())


def test_warm_transfer_without_rest_credentials_is_refused(tmp_path: Path) -> None:
    """A warm transfer on Lambda rings the person through Twilio's REST API: without an account SID the
    deployment is refused with a clear error, never silently transferred cold."""
    warm = DEPLOYMENT.replace(
        "    - kind: end_call\n",
        '    - kind: end_call\n    - {kind: transfer, options: {to: "+15557770000", mode: warm}}\n',
    )
    (tmp_path / "deployment.yaml").write_text(warm, encoding="utf-8")
    environ = {"TWILIO_AUTH_TOKEN": "t"}
    with pytest.raises(SamError, match=r"tool transfer: a warm transfer on Lambda .* transport.twilio.account_sid"):
        write_sam(tmp_path / "deployment.yaml", tmp_path / "out", environ=environ, registry=serverless_registry())
    with_account = warm.replace("twilio: {", "twilio: {account_sid: AC0123456789abcdef0123456789abcdef, ")
    (tmp_path / "deployment.yaml").write_text(with_account, encoding="utf-8")
    write_sam(tmp_path / "deployment.yaml", tmp_path / "out", environ=environ, registry=serverless_registry())
