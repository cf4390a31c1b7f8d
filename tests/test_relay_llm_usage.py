"""The Lambda relay's LLM streams report the tokens each request used, as the vendor sent them.

``voxpipe.serverless.text_llm`` talks to the vendors' SDKs without pipecat; each request of a reply keeps its
``TokenUsage`` (``Span.usage``), which the relay's traces carry (``gen_ai.usage.*``). Run against the fakes,
which speak the vendors' wire protocols: OpenAI's last SSE chunk with ``usage`` (``stream_options``), prompt
caching included, and Bedrock's ``metadata`` event of its event stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.apigw_shim import aws_environment
from tests.fakes.base import Behaviour
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.openai_http import FakeOpenAI
from voxpipe.serverless import HandlerConfig, LLMSpec
from voxpipe.serverless.text_llm import Reply, TokenUsage, bedrock_stream, openai_stream

MODEL = "amazon.nova-lite-v1:0"
LONG_INSTRUCTIONS = "You take bookings for a garage. " * 160  # past 1024 tokens: OpenAI caches its prefix


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aws_environment().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def bedrock(aws_credentials: None) -> Iterator[FakeBedrock]:
    with FakeBedrock(replies=lambda turn: f"Bedrock answer {turn.index}.", region="us-east-1") as fake:
        yield fake


def _openai(url: str) -> LLMSpec:
    return LLMSpec("openai", "gpt-4o-mini", {"api_key": "test-key", "base_url": f"{url}/v1"})


def _bedrock(url: str) -> LLMSpec:
    return LLMSpec("bedrock", MODEL, {"region": "us-east-1", "endpoint_url": url})


def test_openai_reports_prompt_completion_and_cached_tokens() -> None:
    with FakeOpenAI(replies=lambda turn: f"Answer {turn.index}.") as fake:
        stream = openai_stream(_openai(fake.url))
        asked = [{"role": "user", "content": "When are you open?"}]
        first = list(stream(LONG_INSTRUCTIONS, asked, ()))
        second = list(stream(LONG_INSTRUCTIONS, [*asked, {"role": "assistant", "content": "Nine to five."}], ()))
    for pieces, sent in zip((first, second), fake.usages, strict=True):
        *text, usage = pieces
        assert "".join(text).startswith("Answer")  # the text, then the usage, last
        cached = sent["prompt_tokens_details"]["cached_tokens"]
        assert usage == TokenUsage(sent["prompt_tokens"], sent["completion_tokens"], cached)
    assert first[-1].cached_input == 0 and second[-1].cached_input > 0  # the second request reused the prefix


def test_bedrock_reports_the_tokens_of_its_metadata_event(bedrock: FakeBedrock) -> None:
    *text, usage = bedrock_stream(_bedrock(bedrock.url))("You take bookings.", [{"role": "user", "content": "Hi"}], ())
    assert "".join(text) == "Bedrock answer 0."
    (sent,) = bedrock.usages
    prompt = sent["inputTokens"] + sent["cacheReadInputTokens"] + sent["cacheWriteInputTokens"]
    assert usage == TokenUsage(prompt, sent["outputTokens"], sent["cacheReadInputTokens"])
    assert usage.input > 0 and usage.output > 0


def test_a_reply_keeps_each_requests_usage_and_none_for_the_provider_that_failed(bedrock: FakeBedrock) -> None:
    with FakeOpenAI(Behaviour(fail_status=500, fail_count=1000)) as failing:
        config = HandlerConfig(
            name="relay",
            instructions="You take bookings.",
            greeting=None,
            llm=(_openai(failing.url), _bedrock(bedrock.url)),  # the primary fails before its first token
            tools=(),
            twilio_auth_token=None,
            validate_signatures=False,
            conversation_relay={},
            allowed_origins=(),
            ttl_secs=60,
        )
        reply = Reply(config, [{"role": "user", "content": "Hi"}])
        assert "".join(reply) == "Bedrock answer 0."
    primary, backup = reply.requests
    assert primary.error is not None and primary.usage is None
    (sent,) = bedrock.usages
    assert backup.error is None and backup.usage is not None and backup.usage.output == sent["outputTokens"]
