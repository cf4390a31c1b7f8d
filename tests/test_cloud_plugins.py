"""The cloud plugins as plugins: listed by ``voxpipe providers`` with their option schemas, validated from the
example files, priced, mapping the deployment's VAD onto Realtime turn detection, classifying vendor errors;
and the Bedrock client shared by every turn and call, measured against pipecat's client per request.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import httpx2
import openai
import pytest
import websockets.exceptions
from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame, LLMTextFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.aws.llm import AWSBedrockLLMService
from pipecat.utils.errors import ErrorCategory
from typer.testing import CliRunner

from tests.cloud_fixtures import (  # noqa: F401 (pytest fixtures, by name)
    CLOUD_PLUGINS,
    CONFIGS,
    KEY,
    PHONE,
    ServiceRun,
    build,
    cloud_fixture,
    drive_service,
    environ,
    fakes_fixture,
)
from tests.fakes import FakeBedrock, FakeOpenAI
from voxpipe.cli import app
from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import VADConfig
from voxpipe.pipeline.metering import CallMeter, ServiceRef
from voxpipe.providers.builtin import bedrock, openai_llm, openai_realtime
from voxpipe.providers.cloud import classify
from voxpipe.providers.spec import AudioFormat

pytestmark = pytest.mark.usefixtures("cloud")

ENDPOINTS = {"deepgram": "base_url", "elevenlabs": "url", "bedrock": "endpoint_url"}


def test_providers_lists_every_cloud_plugin_with_its_option_schema() -> None:
    listed = CliRunner().invoke(app, ["providers", "--json"])

    assert listed.exit_code == 0, listed.output
    rows = {(row["kind"], row["name"]): row for row in json.loads(listed.stdout)["providers"]}
    for plugin in CLOUD_PLUGINS:
        provider = plugin.PROVIDER
        row = rows[(provider.kind, provider.name)]
        assert (row["package"], row["default_model"]) == ("voxpipe", provider.default_model)
        fields = row["options_schema"]["properties"]
        assert {"connect_timeout_secs", "response_timeout_secs"} <= set(fields)
        assert ("max_retries" in fields) == (provider.name in ("openai", "bedrock"))  # the SDK retries requests
        assert ENDPOINTS.get(provider.name, "base_url") in fields
        assert all(field.get("description") for name, field in fields.items() if name != "api_key")
        secrets = ["aws_secret_access_key"] if provider is bedrock.PROVIDER else ["api_key"]
        assert all(fields[name].get("writeOnly") or "format" in json.dumps(fields[name]) for name in secrets)
    table = CliRunner().invoke(app, ["providers"])
    assert all(plugin.PROVIDER.name in table.stdout for plugin in CLOUD_PLUGINS)


def test_example_deployments_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environ().items():
        monkeypatch.setenv(name, value)
    files = [str(CONFIGS / f"{name}.yaml") for name in ("cascade-openai", "cascade-deepgram-bedrock-elevenlabs")]
    files += [str(CONFIGS / f"{name}.yaml") for name in ("realtime-openai", "fallback")]

    checked = CliRunner().invoke(app, ["validate", *files])

    assert checked.exit_code == 0, checked.output
    assert checked.stdout.count("ok ") == 4


def test_keys_come_from_the_environment_and_bedrock_takes_aws_credentials() -> None:
    inline = "name: x\nagent: {instructions: hi}\nstt: {provider: deepgram, options: {api_key: sk-inline}}\n"
    inline += "llm: {provider: openai, options: {api_key: sk-inline}}\ntts: {provider: elevenlabs}\n"
    with pytest.raises(ConfigError) as raised:
        parse_deployment(inline, environ={})
    problems = str(raised.value)
    assert "stt.options.api_key: a secret must come from the environment" in problems
    assert "tts.options.api_key: required key is missing" in problems
    with pytest.raises(ValueError, match="aws_access_key_id and aws_secret_access_key"):
        bedrock.BedrockOptions.model_validate({"api_key": "x"})


def test_every_default_model_is_priced_with_its_source() -> None:
    for plugin in CLOUD_PLUGINS:
        provider = plugin.PROVIDER
        prices = provider.prices_for(provider.default_model)
        assert prices is not None, provider.name
        assert prices.source.startswith("https://") and prices.as_of.year >= 2025
    assert bedrock.PROVIDER.prices_for("us.amazon.nova-micro-v1:0").per_million_input_tokens == 0.035
    assert not bedrock.PROVIDER.prompt_tokens_include_cached  # Bedrock reports cache reads beside the prompt


def session_of(vad: VADConfig, audio: AudioFormat | None = None, **options: Any) -> Any:
    """The session properties the ``openai_realtime`` plugin builds for a call."""
    service = build(openai_realtime.PROVIDER, {"api_key": KEY, **options}, vad=vad, audio=audio)
    return service._settings.session_properties


def test_realtime_turn_detection_follows_the_vad_section() -> None:
    server = session_of(VADConfig(preset="noisy_call_center", stop_secs=0.6))
    turns = server.audio.input.turn_detection
    assert (turns.type, turns.threshold, turns.prefix_padding_ms, turns.silence_duration_ms) == (
        "server_vad",
        0.85,
        350,
        600,
    )
    assert server.audio.input.format.type == server.audio.output.format.type == "audio/pcm"

    semantic = session_of(VADConfig(), PHONE, turn_detection="semantic_vad", eagerness="low")
    assert (semantic.audio.input.turn_detection.type, semantic.audio.input.turn_detection.eagerness) == (
        "semantic_vad",
        "low",
    )
    assert semantic.audio.input.format.type == semantic.audio.output.format.type == "audio/pcmu"


def client_error(code: str, status: int | None = None) -> botocore.exceptions.ClientError:
    meta = {"HTTPStatusCode": status} if status else {}
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": meta}, "ConverseStream"
    )


def test_vendor_errors_are_classified_for_fallback() -> None:
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    cases = {
        ErrorCategory.RATE_LIMIT: [client_error("ThrottlingException", 429), client_error("throttlingException")],
        ErrorCategory.SERVER: [client_error("modelStreamErrorException"), client_error("SomethingNew", 502)],
        ErrorCategory.AUTHENTICATION: [client_error("UnrecognizedClientException", 403)],
        ErrorCategory.CONNECTIVITY: [
            openai.APITimeoutError(request),
            httpx2.RemoteProtocolError("peer closed connection", request=request),
            websockets.exceptions.ConnectionClosedError(None, None),
            botocore.exceptions.ReadTimeoutError(endpoint_url="https://bedrock"),
        ],
    }
    for category, errors in cases.items():
        assert [classify(error) for error in errors] == [category] * len(errors)
    assert classify(ValueError("a bug")) is None  # left to pipecat: unknown


async def turn_latencies(service: Any, turns: int) -> list[float]:
    """Seconds from each request to its first token, one request after the other."""
    latencies: list[float] = []

    async def ask(worker: PipelineWorker, run: ServiceRun) -> None:
        for turn in range(turns):
            asked, answered = time.monotonic(), len(run.of(LLMTextFrame))
            context = LLMContext([{"role": "user", "content": f"Question {turn}?"}])
            await worker.queue_frame(LLMContextFrame(context))
            while len(run.of(LLMTextFrame)) == answered:
                await asyncio.sleep(0.001)
            latencies.append(time.monotonic() - asked)
            await asyncio.sleep(0.1)  # the rest of the reply

    await drive_service(service, ask, lambda run: len(latencies) == turns, timeout=30)
    return latencies


async def test_bedrock_reuses_one_client_across_turns_and_calls(
    fakes: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = fakes(FakeBedrock, replies=lambda turn: "Sure.", region="eu-central-1")  # checks the SigV4 scope
    options = {"endpoint_url": shared.url, "aws_access_key_id": KEY, "aws_secret_access_key": "test-secret"}
    options |= {"region": "eu-central-1"}
    first_call = await turn_latencies(build(bedrock.PROVIDER, options), 5)
    second_call = await turn_latencies(build(bedrock.PROVIDER, options), 5)
    assert len(shared.requests()) == 10 and shared.connections == 1 and shared.errors == []

    per_request = fakes(FakeBedrock, replies=lambda turn: "Sure.")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", per_request.url)  # pipecat's only endpoint override
    stock = AWSBedrockLLMService(aws_access_key=KEY, aws_secret_key="test-secret", aws_region="us-east-1")  # noqa: S106 — a made-up credential for a local fake; nothing real
    pipecat_call = await turn_latencies(stock, 5)
    assert per_request.connections == 5  # a new client, and connection, for every request

    ms = {
        "shared client, call 1": [round(s * 1000, 1) for s in first_call],
        "shared client, call 2": [round(s * 1000, 1) for s in second_call],
        "pipecat, client per request": [round(s * 1000, 1) for s in pipecat_call],
    }
    with capsys.disabled():
        print(f"\nBedrock time to first token against the fake (ms): {json.dumps(ms)}")
    assert statistics.median(second_call) < statistics.median(pipecat_call[1:])


async def test_openai_llm_usage_counts_cached_tokens_at_their_price(fakes: Callable[..., Any]) -> None:
    openai = fakes(FakeOpenAI, replies=lambda turn: "Sure.")
    instructions = "You answer questions about Harbor Bikes. " * 150  # > 1024 tokens: OpenAI caches the prefix
    service = build(openai_llm.PROVIDER, {"api_key": KEY, "base_url": openai.url + "/v1"}, instructions=instructions)
    meter = CallMeter({service.name: ServiceRef("llm", openai_llm.PROVIDER, "gpt-4.1-mini")})
    messages = [{"role": "user", "content": "When do you open?"}]

    async def two_turns(worker: PipelineWorker, run: ServiceRun) -> None:
        await worker.queue_frame(LLMContextFrame(LLMContext(list(messages))))
        while not run.of(LLMFullResponseEndFrame):
            await asyncio.sleep(0.01)
        messages.extend([{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "And Sunday?"}])
        await worker.queue_frame(LLMContextFrame(LLMContext(list(messages))))

    await drive_service(
        service, two_turns, lambda run: len(run.of(LLMFullResponseEndFrame)) == 2, timeout=10, observers=meter.observers
    )

    (usage,) = meter.usage()
    assert usage.cached_text_input_tokens > 0 and usage.text_input_tokens > 0  # gross prompt_tokens, split
    chats = [r["json"] for r in openai.requests("/v1/chat/completions")]
    assert all(chat["stream_options"] == {"include_usage": True} for chat in chats)
    million = 1_000_000
    expected = (
        usage.text_input_tokens * 0.40 + usage.cached_text_input_tokens * 0.10 + usage.text_output_tokens * 1.60
    ) / million
    assert usage.cost_usd == pytest.approx(expected)
