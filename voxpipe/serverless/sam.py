"""``voxpipe deploy sam CONFIG --out DIR``: an AWS SAM application for a deployment.

``DIR/template.yaml`` declares:

- the DynamoDB table of conversations and connections (key ``pk``, TTL on ``expires_at``);
- ConversationRelay: a WebSocket API (``$connect``/``$disconnect``/``$default``) on ``relay.handler``, and an
  HTTP API (``POST /twiml``, ``POST /twiml/action``) on ``twiml.handler``;
- the audio bridge: a WebSocket API on ``worker.handler`` (reserved concurrency: ``limits.concurrent_calls``), its
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

from pydantic import SecretStr
from ruamel.yaml import YAML

from voxpipe.aws.conversations import KEY, TTL_ATTRIBUTE
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import Deployment
from voxpipe.config.secrets import secret_variables
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.records.recording_bucket import recordings_access, recordings_bucket
from voxpipe.security.tokens import SECRET_VARIABLE as SIGNING_SECRET
from voxpipe.serverless import (
    BRIDGE_URL_ENV,
    CONFIG_ENV,
    CONFIG_FILE,
    CONFIG_FORMAT,
    QUEUE_ENV,
    RELAY_URL_ENV,
    TABLE_ENV,
    referenced_variables,
)
from voxpipe.serverless.text_llm import STREAMERS

RUNTIME = "python3.12"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
#: Inference-profile prefixes of Bedrock model ids (``us.anthropic...``): the profile routes across regions.
_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "ca.", "jp.", "au.")
#: The handler configuration of the functions that run neither the LLM nor tools, beside the relay's.
NARROW_CONFIG_FILE = "voxpipe-handler-no-llm.json"
LAMBDA_TASK_ROOT = "/var/task"


class SamError(ValueError):
    """The deployment cannot be deployed this way (e.g. ConversationRelay without a supported LLM)."""


# ------------------------------------------------------------------------------------------------ the config


def load_for_deploy(path: Path, environ: Mapping[str, str], registry: Registry) -> tuple[Deployment, Any]:
    """The validated deployment and the raw (un-interpolated) YAML data of ``path``.

    Variables the deployment references but this shell does not set get a placeholder for validation: the
    secrets of a production deployment need not be on the machine that builds it.
    """
    text = path.read_text(encoding="utf-8")
    raw = YAML(typ="safe", pure=True).load(text)
    placeholders = {name: f"deploy-placeholder-{name}" for name in referenced_variables(raw)}
    deployment = parse_deployment(text, str(path), {**placeholders, **environ}, registry)
    return deployment, raw


def _templates(resolved: Any, raw: Any) -> Any:
    """``resolved`` with every value the YAML wrote with ``${VAR}`` put back as its template."""
    if isinstance(raw, str) and "${" in raw:  # a template (or an escaped one): resolved again at run time
        return raw
    if isinstance(resolved, dict):
        raw_map = raw if isinstance(raw, dict) else {}
        return {key: _templates(value, raw_map.get(key)) for key, value in resolved.items()}
    if isinstance(resolved, list):
        raw_list = raw if isinstance(raw, list) else [raw] * len(resolved) if isinstance(raw, dict) else []
        return [_templates(value, raw_list[i] if i < len(raw_list) else None) for i, value in enumerate(resolved)]
    return resolved


def _plain(value: Any) -> Any:
    """Python-mode model data made JSON-ready (secrets as their values; templates replace them later)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def handler_config(deployment: Deployment, raw: Any, registry: Registry) -> dict[str, Any]:
    """The handler configuration (JSON-ready) of a validated deployment; ``raw`` is its un-interpolated YAML."""
    llm = []
    for service in deployment.services("llm"):
        if service.provider not in STREAMERS:
            continue
        provider = registry.get("llm", service.provider)
        assert provider is not None  # the loader validated the name  # noqa: S101 — narrows the type: the loader refused unknown providers
        options = provider.provider.options.model_validate(service.options).model_dump()
        llm.append(
            {
                "provider": service.provider,
                "model": service.model or provider.provider.default_model,
                "options": options,
            }
        )
    tools = []
    for tool in deployment.agent.tools:
        kind = registry.tool_kinds[tool.kind].tool_kind
        tools.append(
            {
                "name": tool.function_name,
                "kind": tool.kind,
                "description": tool.description or kind.description,
                "parameters": dict(tool.parameters or kind.parameters or {"type": "object", "properties": {}}),
                "timeout_secs": tool.timeout_secs,
                "options": kind.options.model_validate(tool.options).model_dump(),
                "effect": kind.effect,
                "builder": _builder_path(tool.kind, kind.build),
            }
        )
    transport = deployment.transport
    origins = list(transport.browser.allowed_origins) + ([transport.public_url] if transport.public_url else [])
    resolved = {
        "format": CONFIG_FORMAT,
        "name": deployment.name,
        "agent": {"instructions": deployment.agent.instructions, "greeting": deployment.agent.greeting, "tools": tools},
        "llm": llm,
        "twilio": {
            "auth_token": transport.twilio.auth_token,
            "validate_signatures": transport.twilio.validate_signatures,
            "insecure": deployment.insecure,  # the handlers refuse to run unsigned without it
        },
        "conversation_relay": transport.conversation_relay.model_dump(),
        "allowed_origins": origins,
        "ttl_secs": deployment.sessions.ttl_secs,
        "on_failure": {"say": deployment.on_failure.say, "transfer_to": deployment.on_failure.transfer_to},
    }
    raw = raw if isinstance(raw, dict) else {}
    raw_agent, raw_transport = raw.get("agent") or {}, raw.get("transport") or {}
    shadow = {  # the raw YAML in the shape of ``resolved``, where the shapes match
        "agent": raw_agent,
        "llm": [s for s in _as_list(raw.get("llm")) if isinstance(s, dict) and s.get("provider") in STREAMERS],
        "twilio": raw_transport.get("twilio") or {},
        "allowed_origins": list((raw_transport.get("browser") or {}).get("allowed_origins") or [])
        + ([raw_transport["public_url"]] if "public_url" in raw_transport else []),
    }
    return _templates(_plain(resolved), shadow)


def without_llm(config: dict[str, Any]) -> dict[str, Any]:
    """The handler configuration of the TwiML and bridge functions: no LLM and no tools, so none of their keys."""
    return {**config, "llm": [], "agent": {**config["agent"], "tools": []}}


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


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


# ------------------------------------------------------------------------------------------------ the template


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _arn(name: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [name, "Arn"]}


def _websocket_api(prefix: str, function: str, description: str) -> dict[str, Any]:
    """A WebSocket API whose three routes invoke ``function``, deployed to the ``StageName`` stage."""
    api, integration = f"{prefix}Api", f"{prefix}Integration"
    routes = {"$connect": "Connect", "$disconnect": "Disconnect", "$default": "Default"}
    resources: dict[str, Any] = {
        api: {
            "Type": "AWS::ApiGatewayV2::Api",
            "Properties": {
                "Name": _sub(f"${{AWS::StackName}}-{prefix.lower()}"),
                "Description": description,
                "ProtocolType": "WEBSOCKET",
                "RouteSelectionExpression": "$request.body.action",
            },
        },
        integration: {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": _ref(api),
                "IntegrationType": "AWS_PROXY",
                "IntegrationUri": _sub(
                    f"arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/"
                    f"${{{function}.Arn}}/invocations"
                ),
            },
        },
    }
    for key, name in routes.items():
        resources[f"{prefix}{name}Route"] = {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {
                "ApiId": _ref(api),
                "RouteKey": key,
                "AuthorizationType": "NONE",  # $connect authorises in the handler (Twilio signature / Origin)
                "Target": _sub(f"integrations/${{{integration}}}"),
            },
        }
    resources[f"{prefix}Deployment"] = {
        "Type": "AWS::ApiGatewayV2::Deployment",
        "DependsOn": [f"{prefix}{name}Route" for name in routes.values()],
        "Properties": {"ApiId": _ref(api)},
    }
    resources[f"{prefix}Stage"] = {
        "Type": "AWS::ApiGatewayV2::Stage",
        "Properties": {
            "ApiId": _ref(api),
            "DeploymentId": _ref(f"{prefix}Deployment"),
            "StageName": _ref("StageName"),
            "DefaultRouteSettings": {"ThrottlingBurstLimit": 500, "ThrottlingRateLimit": 1000},
        },
    }
    resources[f"{prefix}Permission"] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": _ref(function),
            "Principal": "apigateway.amazonaws.com",
            "SourceArn": _sub(f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{api}}}/*"),
        },
    }
    return resources


def _manage_connections(api: str, methods: tuple[str, ...] = ("POST",)) -> dict[str, Any]:
    """May post to (and with DELETE, close) the connections of ``api``'s stage, and nothing else."""
    return {
        "Effect": "Allow",
        "Action": "execute-api:ManageConnections",
        "Resource": [
            _sub(
                f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{api}}}/${{StageName}}"
                f"/{method}/@connections/*"
            )
            for method in methods
        ],
    }


def _table_access(actions: tuple[str, ...]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": [f"dynamodb:{a}" for a in actions], "Resource": _arn("Table")}


def _bedrock_access(models: list[str]) -> list[dict[str, Any]]:
    """``bedrock:InvokeModelWithResponseStream`` on exactly the deployment's models (profiles: and their models)."""
    resources: list[Any] = []
    for model in sorted(set(models)):
        if model.startswith(_PROFILE_PREFIXES):
            resources.append(
                _sub(f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}:${{AWS::AccountId}}:inference-profile/{model}")
            )
            resources.append(_sub(f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{model.split('.', 1)[1]}"))
        else:
            resources.append(_sub(f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}::foundation-model/{model}"))
    if not resources:
        return []
    return [{"Effect": "Allow", "Action": "bedrock:InvokeModelWithResponseStream", "Resource": resources}]


def _function(
    handler: str, description: str, statements: list[dict[str, Any]], env: Mapping[str, Any]
) -> dict[str, Any]:
    properties: dict[str, Any] = {"Handler": handler, "Description": description}
    if env:
        properties["Environment"] = {"Variables": dict(env)}
    if statements:
        properties["Policies"] = [{"Version": "2012-10-17", "Statement": statements}]
    return {"Type": "AWS::Serverless::Function", "Properties": properties}


def sam_template(
    deployment: Deployment, config: dict[str, Any], *, relay: bool, bridge: bool, secrets: Collection[str] = ()
) -> dict[str, Any]:
    """The SAM template (as data) of a deployment whose handler configuration is ``config``.

    ``secrets`` names the variables that hold credentials (kept in Secrets Manager; the rest in Parameter Store).
    """
    parameters: dict[str, Any] = {
        "StageName": {"Type": "String", "Default": "prod", "Description": "Stage of the WebSocket APIs."}
    }
    shared_env: dict[str, Any] = {TABLE_ENV: _ref("Table")}
    full_env = _variables_env(config, secrets, deployment.name)
    narrow_env = _variables_env(without_llm(config), secrets, deployment.name)
    if deployment.transport.twilio.validate_signatures:  # the TwiML function mints call tokens, the others check
        signing = {SIGNING_SECRET: f"{{{{resolve:secretsmanager:voxpipe/{deployment.name}/{SIGNING_SECRET}}}}}"}
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
    outputs: dict[str, Any] = {"TableName": {"Description": "Conversations and connections.", "Value": _ref("Table")}}
    bedrock_models = [spec["model"] for spec in config["llm"] if spec["provider"] == "bedrock"]
    relay_url = _sub("wss://${RelayApi}.execute-api.${AWS::Region}.amazonaws.com/${StageName}")
    if relay:
        if not config["llm"]:
            supported = ", ".join(sorted(STREAMERS))
            raise SamError(f"ConversationRelay on Lambda needs an llm provider it can stream from ({supported})")
        resources |= _websocket_api("Relay", "RelayFunction", f"ConversationRelay of {deployment.name}")
        resources["RelayFunction"] = _function(
            "voxpipe.serverless.relay.handler",
            "ConversationRelay WebSocket routes: streams the LLM's text.",
            [
                _table_access(("GetItem", "PutItem", "DeleteItem")),
                _manage_connections("RelayApi"),
                *_bedrock_access(bedrock_models),
            ],
            {RELAY_URL_ENV: relay_url, **full_env},
        )
        resources["TwimlFunction"] = _function(
            "voxpipe.serverless.twiml.handler",
            "Twilio voice webhook: answers ConversationRelay TwiML.",
            [],
            {RELAY_URL_ENV: relay_url, **narrow_env},
        )
        resources["TwimlFunction"]["Properties"]["Events"] = {
            name: {"Type": "HttpApi", "Properties": {"Path": path, "Method": "POST"}}
            for name, path in (("Webhook", "/twiml"), ("Action", "/twiml/action"))
        }
        outputs["RelayUrl"] = {"Description": "ConversationRelay WebSocket URL.", "Value": relay_url}
        outputs["TwimlWebhookUrl"] = {
            "Description": "Set as the phone number's 'A call comes in' webhook (HTTP POST).",
            "Value": _sub("https://${ServerlessHttpApi}.execute-api.${AWS::Region}.amazonaws.com/twiml"),
        }
    if bridge:
        bridge_url = _sub("wss://${BridgeApi}.execute-api.${AWS::Region}.amazonaws.com/${StageName}")
        resources |= _websocket_api("Bridge", "BridgeFunction", f"Audio bridge of {deployment.name}")
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
                "RedrivePolicy": {"deadLetterTargetArn": _arn("DeadLetterQueue"), "maxReceiveCount": 5},
            },
        }
        resources["BridgeFunction"] = _function(
            "voxpipe.serverless.worker.handler",
            "Audio bridge WebSocket routes: queues the caller's audio for the worker.",
            [
                _table_access(("PutItem", "DeleteItem")),
                {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": _arn("Queue")},
            ],
            {QUEUE_ENV: _ref("Queue"), BRIDGE_URL_ENV: bridge_url, **narrow_env},
        )
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
                            "Resource": _arn("Queue"),
                        },
                        _table_access(("GetItem", "PutItem")),
                        *recordings_access(deployment),
                        _manage_connections("BridgeApi", ("POST", "DELETE")),
                        *_bedrock_access([m for m in pipeline_models if m]),
                    ],
                },
            },
        }
        outputs |= {
            "BridgeUrl": {
                "Description": "Audio bridge WebSocket URL (browser or Twilio <Stream>).",
                "Value": bridge_url,
            },
            "QueueUrl": {"Description": f"The worker's {QUEUE_ENV}.", "Value": _ref("Queue")},
            "DeadLetterQueueUrl": {
                "Description": "Bridge messages the worker failed on.",
                "Value": _ref("DeadLetterQueue"),
            },
            "WorkerPolicyArn": {"Description": "Managed policy for the worker's role.", "Value": _ref("WorkerPolicy")},
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


def _builder_path(kind: str, build: Any) -> str:
    """Where the Lambda imports a tool kind's handler builder from (``module:function``), without the registry."""
    path = f"{build.__module__}:{build.__qualname__}"
    if "<" in path:
        raise SamError(f"tool kind {kind} cannot run on Lambda: its build function {path} is not importable")
    return path


def _requirements(config: dict[str, Any]) -> list[str]:
    """The functions' dependencies: never pipecat; the SDKs only of the providers and tools in use."""
    needs = ["botocore>=1.34", "twilio>=9"]
    if any(spec["provider"] == "openai" for spec in config["llm"]):
        needs.append("openai>=1.40")
    if config["agent"]["tools"]:
        needs.append("fastjsonschema>=2.20")  # run_tool checks every call's arguments against the tool's schema
    if any(tool["kind"] == "http" for tool in config["agent"]["tools"]):
        needs.append("aiohttp>=3.9")
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
