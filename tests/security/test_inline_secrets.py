"""Secrets written into a deployment file are refused, wherever they hide, with file:line:key errors.

Covers what the first check missed: experiment variant overrides, ``${VAR:-default}`` defaults, and fields
that carry credentials without being typed as secrets (http tool headers, a session store URL's password,
values shaped like well-known keys).
"""

from __future__ import annotations

import pytest

from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import Deployment

pytestmark = pytest.mark.usefixtures("registry")

INLINE = "a secret must come from the environment: write it as ${ENV_VAR}, not inline"
BASE = """\
name: support
agent:
  instructions: You are a helpful agent.
stt: {provider: testkit_stt}
llm:
  provider: openai
  model: gpt-4o-mini
  options: {api_key: "${OPENAI_API_KEY}"}
tts: {provider: testkit_tts}
"""
ENV = {"OPENAI_API_KEY": "sk-from-env", "TOKEN": "t", "REDIS_PASSWORD": "p", "OTHER_KEY": "sk-other"}


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_deployment(text, "f.yaml", environ=ENV if environ is None else environ)
    return [str(problem) for problem in caught.value.problems]


def accepted(text: str) -> Deployment:
    return parse_deployment(text, "f.yaml", environ=ENV)


EXPERIMENT = """\
experiment:
  name: keys
  variants:
    a: {weight: 1}
    b:
      weight: 1
      overrides:
        llm: {options: {api_key: %s}}
"""


def test_a_variant_override_cannot_write_a_key_inline() -> None:
    assert problems(BASE + EXPERIMENT % "sk-live-inline-override-123") == [
        f"f.yaml:17: experiment.variants.b.overrides.llm.options.api_key: {INLINE}"
    ]


def test_a_variant_override_replacing_the_whole_chain_is_checked_too() -> None:
    text = BASE + EXPERIMENT.replace(
        "llm: {options: {api_key: %s}}", "llm: [{provider: openai, options: {api_key: plain-key}}]"
    )
    assert problems(text) == [f"f.yaml:17: experiment.variants.b.overrides.llm[0].options.api_key: {INLINE}"]


def test_a_variant_override_reading_the_environment_is_accepted() -> None:
    deployment = accepted(BASE + EXPERIMENT % '"${OTHER_KEY}"')
    assert deployment.experiment is not None


@pytest.mark.parametrize("default", ["sk-live-default-123", "anything"])
def test_a_default_after_colon_dash_is_an_inline_secret_even_when_the_variable_is_set(default: str) -> None:
    text = BASE.replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-" + default + "}")
    assert problems(text) == [f"f.yaml:8: llm.options.api_key: {INLINE}"]


def test_an_empty_default_and_defaults_of_ordinary_settings_are_fine() -> None:
    text = BASE.replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-}")
    text = text.replace("model: gpt-4o-mini", "model: ${LLM_MODEL:-gpt-4o-mini}")
    assert accepted(text).llm is not None


HTTP_TOOL = """\
  tools:
    - kind: http
      name: lookup
      parameters: {type: object, properties: {}}
      options:
        url: https://api.example.test/lookup
        headers: {%s}
"""


@pytest.mark.parametrize(
    ("header", "key"),
    [("Authorization: Bearer abc123", "Authorization"), ("x-api-key: abc123", "x-api-key")],
)
def test_http_tool_credential_headers_must_come_from_the_environment(header: str, key: str) -> None:
    text = BASE.replace("  instructions: You are a helpful agent.\n", "  instructions: Hi.\n" + HTTP_TOOL % header)
    assert problems(text) == [f"f.yaml:10: agent.tools[0].options.headers.{key}: {INLINE}"]


def test_http_tool_headers_from_the_environment_and_plain_headers_are_fine() -> None:
    headers = 'Authorization: "Bearer ${TOKEN}", X-Api-Version: "2"'
    text = BASE.replace("  instructions: You are a helpful agent.\n", "  instructions: Hi.\n" + HTTP_TOOL % headers)
    assert accepted(text).agent.tools[0].options["headers"]["Authorization"] == "Bearer t"


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("redis://:hunter2@cache.internal:6379/0", True),
        ("redis://app:${REDIS_PASSWORD:-hunter2}@cache.internal:6379/0", True),
        ("redis://:${REDIS_PASSWORD}@cache.internal:6379/0", False),
        ("redis://cache.internal:6379/0", False),
    ],
)
def test_a_session_store_url_password_must_come_from_the_environment(url: str, refused: bool) -> None:
    text = BASE + f'sessions: {{store: redis, url: "{url}"}}\n'
    if refused:
        assert problems(text) == [f"f.yaml:10: sessions.url: {INLINE}"]
    else:
        assert accepted(text).sessions.url is not None


def test_a_value_shaped_like_a_vendor_key_is_refused_wherever_it_is() -> None:
    text = BASE + "transport:\n  twilio:\n    stream_parameters: {note: sk-proj-abcdefghijklmnopqrstuv}\n"
    assert problems(text) == [f"f.yaml:12: transport.twilio.stream_parameters.note: {INLINE}"]


def test_token_counts_are_not_mistaken_for_tokens() -> None:
    text = BASE.replace(
        'options: {api_key: "${OPENAI_API_KEY}"}', 'options: {api_key: "${OPENAI_API_KEY}", max_completion_tokens: 200}'
    )
    assert accepted(text).llm is not None
