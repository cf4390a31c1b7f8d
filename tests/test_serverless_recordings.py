"""Twilio's recordings of Lambda relay calls: the TwiML function asks Twilio to record (``recording.enabled``),
and Twilio's signed recording callback puts the URL on the call's DynamoDB conversation (moto in server mode;
the relay's ``setup`` runs in Lambda-like containers behind the API Gateway shim, the callback in the TwiML
function's own container). Forged callbacks are refused and change nothing; an unknown CallSid writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from ruamel.yaml import YAML
from twilio.request_validator import RequestValidator

from tests.apigw_shim import (
    ApiGatewayShim,
    LambdaFunction,
    aws_environment,
    aws_service,
    moto_server,
    serverless_registry,
    wait_until,
    write_handler_config,
)
from tests.test_relay_recordings import WRONG_TOKEN, callback_form, recording_url
from tests.test_serverless_relay import (  # noqa: F401 — shim: the relay's containers, on this module's lambda_env
    DEPLOYMENT,
    RELAY_URL,
    TABLE,
    TOKEN,
    RelayCaller,
    shim,
    signature,
    table,
)
from voxpipe.aws.conversations import table_definition
from voxpipe.serverless import HandlerConfig
from voxpipe.serverless.twiml import handler as twiml_handler

pytestmark = pytest.mark.timeout(120)

HTTP_URL = "https://hooks.voxpipe.test"
#: Recorded, with redaction on: the recording's URL (long runs of digits) is kept whole all the same.
RECORDED = DEPLOYMENT + "recording: {enabled: true}\nredact: {entities: [card_number, phone_number]}\n"
START = (
    f'<Start><Recording channels="dual" recordingStatusCallback="{HTTP_URL}/twiml/recording-status" '
    'recordingStatusCallbackEvent="completed" /></Start><Connect'
)


def twiml_event(path: str, form: dict[str, str], signed_with: str | None = TOKEN) -> dict[str, Any]:
    """The HTTP API event of a Twilio webhook to the TwiML function (signed over its public URL)."""
    headers = {}
    if signed_with is not None:
        headers["X-Twilio-Signature"] = RequestValidator(signed_with).compute_signature(HTTP_URL + path, form)
    return {
        "rawPath": path,
        "body": urlencode(form),
        "isBase64Encoded": False,
        "headers": headers,
        "requestContext": {"domainName": "hooks.voxpipe.test", "http": {"method": "POST"}},
    }


def test_the_twiml_function_asks_twilio_to_record_only_when_the_deployment_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voxpipe.serverless.transfer import come_back

    environ = {"TWILIO_AUTH_TOKEN": TOKEN, "BEDROCK_URL": "", "VOXPIPE_RELAY_URL": RELAY_URL}
    form = {"CallSid": "CA" + "1" * 32, "From": "+15550100"}
    answers = {}
    for name, yaml in (("plain", DEPLOYMENT), ("recorded", RECORDED)):
        (tmp_path / name).mkdir()
        config = HandlerConfig.from_json(json.loads(write_handler_config(tmp_path / name, yaml).read_text()), environ)
        monkeypatch.setattr("voxpipe.serverless.twiml.handler_config", lambda config=config: config)
        answers[name] = twiml_handler(twiml_event("/twiml", form))["body"]
        back = come_back(config, f"{HTTP_URL}/twiml/action", form["CallSid"], "no-answer", 20.0, "Nobody answered.")
        assert "<Start>" not in back  # a caller back from a warm transfer: the recording is still running
    assert START in answers["recorded"] and "<Start>" not in answers["plain"]
    relay = [answers[name].split("<Connect", 1)[1].split("<Parameter", 1)[0] for name in ("recorded", "plain")]
    assert relay[0] == relay[1]  # the same relay (each with its own fresh call token)


# ------------------------------------------------------------------------------------------------ on moto


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    with moto_server() as endpoint:
        aws_service("dynamodb", endpoint).create_table(**table_definition(TABLE))
        yield endpoint


@pytest.fixture(scope="module")
def lambda_env(aws: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        "VOXPIPE_HANDLER_CONFIG": str(write_handler_config(tmp_path_factory.mktemp("recorded"), RECORDED)),
        "VOXPIPE_TABLE": TABLE,
        "VOXPIPE_RELAY_URL": RELAY_URL,
        "VOXPIPE_HTTP_URL": HTTP_URL,
        **aws_environment(dynamodb=aws),
        "BEDROCK_URL": "http://127.0.0.1:9",  # no prompt here: the model is never asked
        "TWILIO_AUTH_TOKEN": TOKEN,
    }


async def test_a_signed_callback_links_the_recording_to_its_calls_conversation(
    shim: ApiGatewayShim,  # noqa: F811 — the imported fixture
    aws: str,
    lambda_env: dict[str, str],
) -> None:
    # Its recording's SID (and URL) holds a run of digits a card-number detector takes for one: kept whole.
    call_sid, unknown = "CA4111111111111111" + "a" * 16, "CA" + "3" * 32
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup(call_sid)
    await wait_until(lambda: table(aws).get(call_sid))
    await caller.hang_up()
    await wait_until(lambda: shim.invoked("$disconnect"))
    before = table(aws).get(call_sid)

    webhook = LambdaFunction("voxpipe.serverless.twiml.handler", lambda_env)
    path = "/twiml/recording-status"
    try:

        async def post(form: dict[str, str], signed_with: str | None = TOKEN) -> int:
            reply, _ = await webhook.invoke(twiml_event(path, form, signed_with))
            assert not reply["heavy"], reply["heavy"]  # the TwiML function stays free of pipecat and pydantic
            return int(reply["result"]["statusCode"])

        assert await post(callback_form(call_sid), signed_with=None) == 403
        assert await post(callback_form(call_sid), signed_with=WRONG_TOKEN) == 403
        assert await post(callback_form(call_sid, "absent")) == 204  # too short: Twilio has no file
        assert table(aws).get(call_sid).version == before.version  # none of these wrote anything
        assert await post(callback_form(unknown)) == 204
        assert table(aws).get(unknown) is None  # no conversation made up for a call the relay never had
        assert await post(callback_form(call_sid)) == 204
    finally:
        await webhook.stop()
    after = table(aws).get(call_sid)
    assert after.metadata["recording"] == recording_url(call_sid)
    assert after.messages == before.messages and after.metadata["caller"] == before.metadata["caller"]


def test_deploy_sam_routes_the_callback_to_the_twiml_function_with_table_access(tmp_path: Path) -> None:
    from tests.test_sam import cfn_lint
    from voxpipe.serverless.sam import write_sam

    source = tmp_path / "deployment.yaml"
    source.write_text(RECORDED, encoding="utf-8")
    write_sam(source, tmp_path / "out", environ={}, registry=serverless_registry())
    template = YAML(typ="safe", pure=True).load((tmp_path / "out" / "template.yaml").read_text())
    twiml = template["Resources"]["TwimlFunction"]["Properties"]
    paths = {event["Properties"]["Path"] for event in twiml["Events"].values()}
    assert "/twiml/recording-status" in paths
    statements = [s for policy in twiml["Policies"] for s in policy["Statement"]]
    assert statements == [
        {
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
            "Resource": {"Fn::GetAtt": ["Table", "Arn"]},
        }
    ]
    cfn_lint(tmp_path / "out" / "template.yaml")
