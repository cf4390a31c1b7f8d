"""``voxpipe deploy sam CONFIG --out DIR``: an AWS SAM application for a deployment.

``DIR/template.yaml`` declares:

- the DynamoDB table of conversations and connections (key ``pk``, TTL on ``expires_at``);
- ConversationRelay: a WebSocket API (``$connect``/``$disconnect``/``$default``) on ``relay.handler``, an
  HTTP API (``POST /twiml``, ``POST /twiml/action``, ``POST /twiml/transfer-status``, and with
  ``recording.enabled`` ``POST /twiml/recording-status``, which reads and writes the table) on ``twiml.handler``, and
  with ``silence:`` on, a standard SQS queue of delayed silence checks whose event source is ``silence.handler``;
- the audio bridge: a WebSocket API on ``worker.handler`` (reserved concurrency: ``limits.concurrent_calls``), which
  also answers browser pages' ``POST /bridge/token`` on the HTTP API (``bridge_access.py``), its
  SQS FIFO queue (one message group per connection keeps each caller's audio in order) with a FIFO dead-letter
  queue, and a managed policy for the long-lived worker;
- least-privilege IAM: each function may touch only its table, queue, its own API's ``@connections``
  (``execute-api:ManageConnections``) and the deployment's Bedrock models
  (``bedrock:InvokeModelWithResponseStream``);
- each ``${VAR}`` of the deployment file as a CloudFormation dynamic reference, in the environment of only the
  functions that read it: credentials (``voxpipe.config.secrets``) from Secrets Manager
  (``{{resolve:secretsmanager:voxpipe/NAME/VAR}}``), other settings from Parameter Store
  (``{{resolve:ssm:/voxpipe/NAME/VAR}}``). No secret is a template parameter, in the template or on disk; the
  TwiML and bridge functions get a handler configuration without the LLM and tools (and so none of their keys).

``DIR/handler/`` is the functions' code: the voxpipe package, the *handler configuration*
(``voxpipe-handler.json``, see ``voxpipe.serverless``) and ``requirements.txt`` (no pipecat). ``sam build &&
sam deploy --guided`` deploys it; the worker runs anywhere (``python -m voxpipe.serverless.worker CONFIG``) with
the stack's outputs in its environment.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from voxpipe.aws.conversations import KEY, TTL_ATTRIBUTE
from voxpipe.config.models import Deployment
from voxpipe.config.secrets import secret_variables
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.records.recording_bucket import recordings_access, recordings_bucket
from voxpipe.security.tokens import SECRET_VARIABLE as SIGNING_SECRET
from voxpipe.serverless import (
    BRIDGE_URL_ENV,
    CONFIG_ENV,
    CONFIG_FILE,
    QUEUE_ENV,
    RELAY_URL_ENV,
    SILENCE_QUEUE_ENV,
    TABLE_ENV,
    referenced_variables,
)
from voxpipe.serverless.bridge_access import TOKEN_PATH
from voxpipe.serverless.deploy_config import SamError, handler_config, load_for_deploy, without_llm
from voxpipe.serverless.recordings import STATUS_PATH as RECORDING_STATUS_PATH
from voxpipe.serverless.sam_resources import (
    arn,
    bedrock_access,
    function,
    manage_connections,
    ref,
    send_to,
    silence_checks,
    sub,
    table_access,
    websocket_api,
)
from voxpipe.serverless.text_llm import STREAMERS
from voxpipe.serverless.transfer import STATUS_PATH

RUNTIME = "python3.12"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
#: The handler configuration of the functions that run neither the LLM nor tools, beside the relay's.
NARROW_CONFIG_FILE = "voxpipe-handler-no-llm.json"
LAMBDA_TASK_ROOT = "/var/task"


# ------------------------------------------------------------------------------------------------ the config


def _variables_env(config: dict[str, Any], secrets: Collection[str], name: str) -> dict[str, str]:
    """The variables ``config`` reads, each as a dynamic reference resolved by CloudFormation at deploy time."""
    env = {}
    for variable in referenced_variables(config):
        if variable.startswith(("AWS_", "LAMBDA_")):
            continue  # set by Lambda itself
        if variable in secrets:
            env[variable] = f"{{{{resolve:secretsmanager:voxpipe/{name}/{variable}}}}}"
        else:
            env[variable] = f"{{{{resolve:ssm:/voxpipe/{name}/{variable}}}}}"
    return env


# ------------------------------------------------------------------------------------------------ the template


def sam_template(
    deployment: Deployment, config: dict[str, Any], *, relay: bool, bridge: bool, secrets: Collection[str] = ()
) -> dict[str, Any]:
    """The SAM template (as data) of a deployment whose handler configuration is ``config``.

    ``secrets`` names the variables that hold credentials (kept in Secrets Manager; the rest in Parameter Store).
    """
    parameters: dict[str, Any] = {
        "StageName": {"Type": "String", "Default": "prod", "Description": "Stage of the WebSocket APIs."}
    }
    shared_env: dict[str, Any] = {TABLE_ENV: ref("Table")}
    full_env = _variables_env(config, secrets, deployment.name)
    narrow_env = _variables_env(without_llm(config), secrets, deployment.name)
    signing = {SIGNING_SECRET: f"{{{{resolve:secretsmanager:voxpipe/{deployment.name}/{SIGNING_SECRET}}}}}"}
    if deployment.transport.twilio.validate_signatures:  # the TwiML function mints call tokens, the others check
        full_env, narrow_env = full_env | signing, narrow_env | signing
    narrow_env[CONFIG_ENV] = f"{LAMBDA_TASK_ROOT}/{NARROW_CONFIG_FILE}"
    resources: dict[str, Any] = {
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": KEY, "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
                "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
                "SSESpecification": {"SSEEnabled": True},
            },
        }
    }
    outputs: dict[str, Any] = {"TableName": {"Description": "Conversations and connections.", "Value": ref("Table")}}
    bedrock_models = [spec["model"] for spec in config["llm"] if spec["provider"] == "bedrock"]
    relay_url = sub("wss://${RelayApi}.execute-api.${AWS::Region}.amazonaws.com/${StageName}")
    bridge_url = sub("wss://${BridgeApi}.execute-api.${AWS::Region}.amazonaws.com/${StageName}")
    # the bridge's warm transfers report to the TwiML function, which brings an unanswered caller back to the bridge
    bridge_env = {BRIDGE_URL_ENV: bridge_url} if bridge else {}
    if relay:
        if not config["llm"]:
            supported = ", ".join(sorted(STREAMERS))
            raise SamError(f"ConversationRelay on Lambda needs an llm provider it can stream from ({supported})")
        warm = [
            t.function_name for t in deployment.agent.tools if t.kind == "transfer" and t.options.get("mode") == "warm"
        ]
        if warm and not deployment.transport.twilio.account_sid:
            raise SamError(
                f"tool {warm[0]}: a warm transfer on Lambda rings the person through Twilio's REST API: set "
                "transport.twilio.account_sid (or use mode: cold)"
            )
        resources |= websocket_api("Relay", "RelayFunction", f"ConversationRelay of {deployment.name}")
        silence_env, silence_send = {}, []
        if deployment.silence is not None:
            resources |= silence_checks(narrow_env)
            silence_env = {SILENCE_QUEUE_ENV: ref("SilenceQueue")}
            silence_send = [send_to("SilenceQueue")]
        resources["RelayFunction"] = function(
            "voxpipe.serverless.relay.handler",
            "ConversationRelay WebSocket routes: streams the LLM's text.",
            [
                table_access(("GetItem", "PutItem", "DeleteItem")),
                manage_connections("RelayApi"),
                *bedrock_access(bedrock_models),
                *silence_send,
            ],
            {RELAY_URL_ENV: relay_url, **silence_env, **full_env},
        )
        recorded = deployment.recording.enabled  # Twilio records; its callback links the recording to the call
        resources["TwimlFunction"] = function(
            "voxpipe.serverless.twiml.handler",
            "Twilio voice webhook: answers ConversationRelay TwiML.",
            [table_access(("GetItem", "PutItem"))] if recorded else [],
            {RELAY_URL_ENV: relay_url, **bridge_env, **narrow_env},
        )
        routes = [("Webhook", "/twiml"), ("Action", "/twiml/action"), ("Status", STATUS_PATH)]
        routes += [("Recording", RECORDING_STATUS_PATH)] if recorded else []
        resources["TwimlFunction"]["Properties"]["Events"] = {
            name: {"Type": "HttpApi", "Properties": {"Path": path, "Method": "POST"}} for name, path in routes
        }
        outputs["RelayUrl"] = {"Description": "ConversationRelay WebSocket URL.", "Value": relay_url}
        outputs["TwimlWebhookUrl"] = {
            "Description": "Set as the phone number's 'A call comes in' webhook (HTTP POST).",
            "Value": sub("https://${ServerlessHttpApi}.execute-api.${AWS::Region}.amazonaws.com/twiml"),
        }
    if bridge:
        resources |= websocket_api("Bridge", "BridgeFunction", f"Audio bridge of {deployment.name}")
        resources["DeadLetterQueue"] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "FifoQueue": True,
                "MessageRetentionPeriod": 86400,  # a day to see what the worker could not handle; it is caller audio
                "SqsManagedSseEnabled": True,
            },
        }
        resources["Queue"] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "FifoQueue": True,
                "DeduplicationScope": "messageGroup",
                "FifoThroughputLimit": "perMessageGroupId",
                "MessageRetentionPeriod": 300,  # audio older than five minutes is of no use to anyone
                "VisibilityTimeout": 30,
                "SqsManagedSseEnabled": True,
                # A message the worker fails on five times stops blocking its caller's message group.
                "RedrivePolicy": {"deadLetterTargetArn": arn("DeadLetterQueue"), "maxReceiveCount": 5},
            },
        }
        resources["BridgeFunction"] = function(
            "voxpipe.serverless.worker.handler",
            "Audio bridge WebSocket routes: queues the caller's audio for the worker.",
            [
                table_access(("GetItem", "PutItem", "DeleteItem")),  # GetItem: the worker's status (bridge_status)
                {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": arn("Queue")},
            ],
            # it signs and checks browser page tokens, signed Twilio deployment or not
            {QUEUE_ENV: ref("Queue"), BRIDGE_URL_ENV: bridge_url, **narrow_env, **signing},
        )
        # Page tokens on the stack's HTTP API (the one /twiml is on): a browser must ask before it connects.
        resources["BridgeFunction"]["Properties"]["Events"] = {
            "PageToken": {"Type": "HttpApi", "Properties": {"Path": TOKEN_PATH, "Method": "POST"}}
        }
        # About one concurrent invocation per live call (a 20 ms audio message takes a few ms): a flood of
        # connections or frames cannot take the account's whole Lambda concurrency, nor fill the queue unbounded.
        resources["BridgeFunction"]["Properties"]["ReservedConcurrentExecutions"] = deployment.limits.concurrent_calls
        pipeline_models = [s.model or "" for s in deployment.services("llm") if s.provider == "bedrock"]
        resources["WorkerPolicy"] = {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "Description": "What `python -m voxpipe.serverless.worker` needs: attach to its role.",
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
                            "Resource": arn("Queue"),
                        },
                        table_access(("GetItem", "PutItem")),
                        *recordings_access(deployment),
                        manage_connections("BridgeApi", ("POST", "DELETE")),
                        *bedrock_access([m for m in pipeline_models if m]),
                    ],
                },
            },
        }
        outputs |= {
            "BridgeUrl": {
                "Description": "Audio bridge WebSocket URL (browser or Twilio <Stream>).",
                "Value": bridge_url,
            },
            "BridgeTokenUrl": {
                "Description": "Browser pages POST here for the session token the bridge's $connect requires.",
                "Value": sub(f"https://${{ServerlessHttpApi}}.execute-api.${{AWS::Region}}.amazonaws.com{TOKEN_PATH}"),
            },
            "QueueUrl": {"Description": f"The worker's {QUEUE_ENV}.", "Value": ref("Queue")},
            "DeadLetterQueueUrl": {
                "Description": "Bridge messages the worker failed on.",
                "Value": ref("DeadLetterQueue"),
            },
            "WorkerPolicyArn": {"Description": "Managed policy for the worker's role.", "Value": ref("WorkerPolicy")},
        }
    resources |= recordings_bucket(deployment)  # with its lifecycle rule (retention_days)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": f"voxpipe deployment {deployment.name} (generated by `voxpipe deploy sam`; do not edit)",
        "Parameters": parameters,
        "Globals": {
            "Function": {
                "Runtime": RUNTIME,
                "CodeUri": "handler/",
                "Architectures": ["arm64"],
                "MemorySize": 512,
                "Timeout": 60,  # a reply may outlast API Gateway's 29 s integration timeout; the Lambda goes on
                "Environment": {"Variables": shared_env},
            }
        },
        "Resources": resources,
        "Outputs": outputs,
    }


# ------------------------------------------------------------------------------------------------ the files


def _requirements(config: dict[str, Any]) -> list[str]:
    """The functions' dependencies: never pipecat; the SDKs only of the providers and tools in use."""
    needs = ["botocore>=1.34", "twilio>=9"]
    if any(spec["provider"] == "openai" for spec in config["llm"]):
        needs.append("openai>=1.40")
    if config["agent"]["tools"]:
        needs.append("fastjsonschema>=2.20")  # run_tool checks every call's arguments against the tool's schema
    if any(tool["kind"] == "http" for tool in config["agent"]["tools"]):
        needs.append("aiohttp>=3.9")
    # traces of relay turns when the function's OTEL_* ask for them (imported only then: no cold-start cost)
    needs += ["opentelemetry-sdk>=1.25", "opentelemetry-exporter-otlp-proto-http>=1.25"]
    return needs


def _copy_package(target: Path) -> None:
    """voxpipe's source, and the metadata that registers its built-in tool kinds (entry points)."""
    shutil.copytree(PACKAGE_ROOT, target / "voxpipe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    info = target / f"voxpipe-{version('voxpipe')}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: voxpipe\nVersion: {version('voxpipe')}\n")
    (info / "entry_points.txt").write_text("[voxpipe]\nbuiltin-tools = voxpipe.tools.builtin\n")


def write_sam(
    config_path: str | Path,
    out: str | Path,
    *,
    relay: bool = True,
    bridge: bool = True,
    environ: Mapping[str, str] | None = None,
    registry: Registry | None = None,
) -> Path:
    """Write ``template.yaml`` and the functions' code for the deployment file ``config_path``; returns the template.

    ``out`` is replaced if it exists. Raises ``ConfigError`` for an invalid deployment, ``SamError`` for one
    this design cannot serve.
    """
    registry = registry or default_registry()
    deployment, raw = load_for_deploy(Path(config_path), os.environ if environ is None else environ, registry)
    config = handler_config(deployment, raw, registry)
    template = sam_template(
        deployment, config, relay=relay, bridge=bridge, secrets=secret_variables(deployment, raw, registry)
    )
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    code = out / "handler"
    code.mkdir(parents=True)
    _copy_package(code)
    (code / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (code / NARROW_CONFIG_FILE).write_text(json.dumps(without_llm(config), indent=2) + "\n", encoding="utf-8")
    (code / "requirements.txt").write_text("\n".join(_requirements(config)) + "\n", encoding="utf-8")
    shutil.copyfile(config_path, out / "deployment.yaml")  # what the worker runs: `... worker deployment.yaml`
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # keep the template's reading order
    yaml.representer.ignore_aliases = lambda data: True  # no &id001 anchors for values used twice
    yaml.width = 4096
    path = out / "template.yaml"
    with path.open("w", encoding="utf-8") as stream:
        yaml.dump(template, stream)
    return path
