"""The CloudFormation building blocks of ``voxpipe deploy sam``'s template: intrinsic functions, a WebSocket API
wired to its function, and least-privilege IAM statements (``@connections``, the table, Bedrock models).

Plain dictionaries in the shape CloudFormation reads; ``sam.sam_template`` assembles them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Inference-profile prefixes of Bedrock model ids (``us.anthropic...``): the profile routes across regions.
PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "ca.", "jp.", "au.")


def sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def arn(name: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [name, "Arn"]}


def websocket_api(prefix: str, function: str, description: str) -> dict[str, Any]:
    """A WebSocket API whose three routes invoke ``function``, deployed to the ``StageName`` stage."""
    api, integration = f"{prefix}Api", f"{prefix}Integration"
    routes = {"$connect": "Connect", "$disconnect": "Disconnect", "$default": "Default"}
    resources: dict[str, Any] = {
        api: {
            "Type": "AWS::ApiGatewayV2::Api",
            "Properties": {
                "Name": sub(f"${{AWS::StackName}}-{prefix.lower()}"),
                "Description": description,
                "ProtocolType": "WEBSOCKET",
                "RouteSelectionExpression": "$request.body.action",
            },
        },
        integration: {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": ref(api),
                "IntegrationType": "AWS_PROXY",
                "IntegrationUri": sub(
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
                "ApiId": ref(api),
                "RouteKey": key,
                "AuthorizationType": "NONE",  # $connect authorises in the handler (Twilio signature / Origin)
                "Target": sub(f"integrations/${{{integration}}}"),
            },
        }
    resources[f"{prefix}Deployment"] = {
        "Type": "AWS::ApiGatewayV2::Deployment",
        "DependsOn": [f"{prefix}{name}Route" for name in routes.values()],
        "Properties": {"ApiId": ref(api)},
    }
    resources[f"{prefix}Stage"] = {
        "Type": "AWS::ApiGatewayV2::Stage",
        "Properties": {
            "ApiId": ref(api),
            "DeploymentId": ref(f"{prefix}Deployment"),
            "StageName": ref("StageName"),
            "DefaultRouteSettings": {"ThrottlingBurstLimit": 500, "ThrottlingRateLimit": 1000},
        },
    }
    resources[f"{prefix}Permission"] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": ref(function),
            "Principal": "apigateway.amazonaws.com",
            "SourceArn": sub(f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{api}}}/*"),
        },
    }
    return resources


def manage_connections(api: str, methods: tuple[str, ...] = ("POST",)) -> dict[str, Any]:
    """May post to (and with DELETE, close) the connections of ``api``'s stage, and nothing else."""
    return {
        "Effect": "Allow",
        "Action": "execute-api:ManageConnections",
        "Resource": [
            sub(
                f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{api}}}/${{StageName}}"
                f"/{method}/@connections/*"
            )
            for method in methods
        ],
    }


def table_access(actions: tuple[str, ...]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": [f"dynamodb:{a}" for a in actions], "Resource": arn("Table")}


def bedrock_access(models: list[str]) -> list[dict[str, Any]]:
    """``bedrock:InvokeModelWithResponseStream`` on exactly the deployment's models (profiles: and their models)."""
    resources: list[Any] = []
    for model in sorted(set(models)):
        if model.startswith(PROFILE_PREFIXES):
            resources.append(
                sub(f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}:${{AWS::AccountId}}:inference-profile/{model}")
            )
            resources.append(sub(f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{model.split('.', 1)[1]}"))
        else:
            resources.append(sub(f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}::foundation-model/{model}"))
    if not resources:
        return []
    return [{"Effect": "Allow", "Action": "bedrock:InvokeModelWithResponseStream", "Resource": resources}]


def function(
    handler: str, description: str, statements: list[dict[str, Any]], env: Mapping[str, Any]
) -> dict[str, Any]:
    properties: dict[str, Any] = {"Handler": handler, "Description": description}
    if env:
        properties["Environment"] = {"Variables": dict(env)}
    if statements:
        properties["Policies"] = [{"Version": "2012-10-17", "Statement": statements}]
    return {"Type": "AWS::Serverless::Function", "Properties": properties}


def silence_checks(env: Mapping[str, Any]) -> dict[str, Any]:
    """The relay's delayed silence checks: a standard queue (FIFO queues take no per-message delay) and the
    function it invokes, one check at a time (each sleeps until its check is due: ``voxpipe.serverless.silence``)."""
    queue = {
        "Type": "AWS::SQS::Queue",
        "Properties": {
            "MessageRetentionPeriod": 3600,  # a check is delayed at most 900 s; one not run within the hour is moot
            "VisibilityTimeout": 120,  # at least twice the function's timeout
            "SqsManagedSseEnabled": True,
        },
    }
    checks = function(
        "voxpipe.serverless.silence.handler",
        "Silence checks of the relay's calls: re-prompts, then the silence hang-up.",
        [table_access(("GetItem", "PutItem")), manage_connections("RelayApi"), send_to("SilenceQueue")],
        env,
    )
    checks["Properties"]["Events"] = {
        "Checks": {
            "Type": "SQS",
            "Properties": {
                "Queue": {"Fn::GetAtt": ["SilenceQueue", "Arn"]},
                "BatchSize": 1,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        }
    }
    return {"SilenceQueue": queue, "SilenceFunction": checks}


def send_to(queue: str) -> dict[str, Any]:
    """May send to ``queue`` (a check due more than 900 s ahead is sent on again)."""
    return {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": arn(queue)}
