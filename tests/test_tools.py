"""Agent tools: ``http`` against a local server, ``python`` functions, failures and timeouts as error results,
and ``end_call`` / ``transfer`` reporting their effect, through ``run_tool`` and through pipecat's function
calling on a real ``LLMService`` (the testkit's scripted LLM)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import tool_functions
from aiohttp import web
from pipecat.frames.frames import FunctionCallInProgressFrame, FunctionCallResultFrame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import SleepFrame, run_test
from voxpipe_testkit.plugin import ScriptedLLMOptions
from voxpipe_testkit.script import ReplyRule, ToolCallSpec
from voxpipe_testkit.services import ScriptedLLMService

from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import Deployment, ToolConfig
from voxpipe.pipeline.tools import register_tools, tools_schema
from voxpipe.providers.registry import Registry, discover
from voxpipe.providers.spec import ProviderOptions, ToolHandler, ToolKind, hookimpl
from voxpipe.tools.runner import run_tool

FUNCTIONS = tool_functions.__name__

pytestmark = pytest.mark.usefixtures("registry")


def deployment_with_tools(
    tools_yaml: str, environ: dict[str, str] | None = None, registry: Registry | None = None
) -> Deployment:
    """A cascade deployment of testkit providers whose ``agent.tools`` is ``tools_yaml`` (indented 4)."""
    text = (
        "name: tools\nagent:\n  instructions: Use the tools.\n  tools:\n"
        + tools_yaml
        + "stt: {provider: testkit_stt}\nllm: {provider: testkit_llm}\ntts: {provider: testkit_tts}\n"
    )
    return parse_deployment(text, "tools.yaml", environ=environ or {}, registry=registry)


def tool_named(deployment: Deployment, name: str) -> ToolConfig:
    return next(t for t in deployment.agent.tools if t.function_name == name)


def handler_for(deployment: Deployment, name: str, registry: Registry) -> ToolHandler:
    """The tool's handler, built by its tool kind exactly as the pipeline builds it."""
    tool = tool_named(deployment, name)
    kind = registry.tool_kinds[tool.kind].tool_kind
    return kind.build(tool.function_name, kind.options.model_validate(tool.options))


async def run_named(deployment: Deployment, name: str, arguments: dict[str, Any], registry: Registry) -> Any:
    tool = tool_named(deployment, name)
    return await run_tool(name, handler_for(deployment, name, registry), arguments, tool.timeout_secs)


# --------------------------------------------------------------------------------------------- a local HTTP API


@dataclass
class FakeApi:
    """An aiohttp app on 127.0.0.1 that records what the http tool sent."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    recorded: list[dict[str, Any]] = []

    async def record(request: web.Request) -> dict[str, Any]:
        body = await request.json() if request.can_read_body else None
        entry = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "json": body,
            "authorization": request.headers.get("Authorization"),
            "api_version": request.headers.get("X-Api-Version"),
        }
        recorded.append(entry)
        return entry

    async def weather(request: web.Request) -> web.Response:
        seen = await record(request)
        return web.json_response({"city": seen["query"]["city"], "temperature_c": 21, "units": seen["query"]["units"]})

    async def orders(request: web.Request) -> web.Response:
        seen = await record(request)
        return web.json_response({"created": seen["json"], "id": "ord-1"}, status=201)

    async def text(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="plain words")

    async def broken(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=500, text="database on fire")

    app = web.Application()
    app.add_routes(
        [web.get("/weather", weather), web.post("/orders", orders), web.get("/text", text), web.post("/broken", broken)]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()
    try:
        yield FakeApi(f"http://{host}:{port}", recorded)
    finally:
        await runner.cleanup()


HTTP_TOOLS = """\
    - kind: http
      name: get_weather
      parameters: {type: object, properties: {city: {type: string}, units: {type: string}}, required: [city]}
      options:
        url: ${API_URL}/weather
        method: GET
        headers: {Authorization: "Bearer ${API_TOKEN}", X-Api-Version: "2"}
    - kind: http
      name: create_order
      parameters: {type: object, properties: {item: {type: string}, quantity: {type: integer}}}
      options:
        url: ${API_URL}/orders
        headers: {Authorization: "Bearer ${API_TOKEN}"}
    - kind: http
      name: read_text
      parameters: {type: object, properties: {}}
      options: {url: "${API_URL}/text", method: GET}
    - kind: http
      name: always_fails
      parameters: {type: object, properties: {}}
      options: {url: "${API_URL}/broken"}
"""


@pytest.fixture
def http_deployment(api: FakeApi) -> Deployment:
    return deployment_with_tools(HTTP_TOOLS, environ={"API_URL": api.url, "API_TOKEN": "tok-from-env"})


async def test_http_get_sends_arguments_as_query_and_env_headers(
    api: FakeApi, http_deployment: Deployment, registry: Registry
) -> None:
    result = await run_named(http_deployment, "get_weather", {"city": "Paris", "units": "metric"}, registry)

    assert result == {"city": "Paris", "temperature_c": 21, "units": "metric"}
    assert api.requests == [
        {
            "method": "GET",
            "path": "/weather",
            "query": {"city": "Paris", "units": "metric"},
            "json": None,
            "authorization": "Bearer tok-from-env",
            "api_version": "2",
        }
    ]


async def test_http_post_sends_arguments_as_json(api: FakeApi, http_deployment: Deployment, registry: Registry) -> None:
    result = await run_named(http_deployment, "create_order", {"item": "bell", "quantity": 2}, registry)

    assert result == {"created": {"item": "bell", "quantity": 2}, "id": "ord-1"}
    (request,) = api.requests
    assert (request["method"], request["query"], request["json"]) == ("POST", {}, {"item": "bell", "quantity": 2})
    assert request["authorization"] == "Bearer tok-from-env"


async def test_http_text_reply_is_wrapped(api: FakeApi, http_deployment: Deployment, registry: Registry) -> None:
    assert await run_named(http_deployment, "read_text", {}, registry) == {"text": "plain words"}


async def test_http_500_becomes_an_error_result(api: FakeApi, http_deployment: Deployment, registry: Registry) -> None:
    result = await run_named(http_deployment, "always_fails", {}, registry)

    assert result == {"error": "the tool always_fails failed: HTTP 500 from always_fails: database on fire"}
    assert len(api.requests) == 1


async def test_http_unreachable_server_becomes_an_error_result(registry: Registry) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deployment = deployment_with_tools(HTTP_TOOLS, environ={"API_URL": f"http://127.0.0.1:{port}", "API_TOKEN": "x"})

    result = await run_named(deployment, "get_weather", {"city": "Oslo"}, registry)

    assert set(result) == {"error"}
    assert result["error"].startswith("the tool get_weather failed: ")


# --------------------------------------------------------------------------------------------- python tools


PYTHON_TOOLS = f"""\
    - kind: python
      name: add
      parameters: {{type: object, properties: {{a: {{type: number}}, b: {{type: number}}}}, required: [a, b]}}
      options: {{function: "{FUNCTIONS}:add"}}
    - kind: python
      name: order_status
      parameters: {{type: object, properties: {{order_id: {{type: string}}}}}}
      options: {{function: "{FUNCTIONS}:order_status"}}
    - kind: python
      name: explode
      parameters: {{type: object, properties: {{reason: {{type: string}}}}}}
      options: {{function: "{FUNCTIONS}:explode"}}
    - kind: python
      name: explode_async
      parameters: {{type: object, properties: {{reason: {{type: string}}}}}}
      options: {{function: "{FUNCTIONS}:explode_async"}}
    - kind: python
      name: dawdle
      timeout_secs: 0.2
      parameters: {{type: object, properties: {{secs: {{type: number}}}}}}
      options: {{function: "{FUNCTIONS}:dawdle"}}
"""


@pytest.fixture
def python_deployment() -> Deployment:
    return deployment_with_tools(PYTHON_TOOLS)


async def test_python_sync_function_runs_in_a_worker_thread(python_deployment: Deployment, registry: Registry) -> None:
    result = await run_named(python_deployment, "add", {"a": 2, "b": 3.5}, registry)

    assert result["sum"] == 5.5
    assert result["thread"] != threading.get_ident()


async def test_python_async_function_is_awaited_on_the_loop(python_deployment: Deployment, registry: Registry) -> None:
    result = await run_named(python_deployment, "order_status", {"order_id": "A7"}, registry)

    assert result == {"order_id": "A7", "status": "shipped", "thread": threading.get_ident()}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("explode", "the tool explode failed: exploded: kaboom"),
        ("explode_async", "the tool explode_async failed: async exploded: kaboom"),
    ],
)
async def test_failing_tool_returns_an_error(
    python_deployment: Deployment, registry: Registry, name: str, message: str
) -> None:
    assert await run_named(python_deployment, name, {"reason": "kaboom"}, registry) == {"error": message}


async def test_bad_arguments_return_an_error(python_deployment: Deployment, registry: Registry) -> None:
    result = await run_named(python_deployment, "add", {"a": 1, "c": 2}, registry)

    assert set(result) == {"error"} and "takes no argument c" in result["error"]


async def test_slow_tool_times_out_with_an_error(python_deployment: Deployment, registry: Registry) -> None:
    started = time.monotonic()

    result = await run_named(python_deployment, "dawdle", {"secs": 5}, registry)

    assert result == {"error": "the tool dawdle did not answer within 0.2 seconds"}
    assert time.monotonic() - started < 1.0


def test_unimportable_function_fails_when_the_call_is_built(registry: Registry) -> None:
    deployment = deployment_with_tools(
        "    - kind: python\n      name: nope\n      parameters: {type: object}\n"
        f"      options: {{function: '{FUNCTIONS}:does_not_exist'}}\n"
    )

    with pytest.raises(AttributeError, match="does_not_exist"):
        handler_for(deployment, "nope", registry)


# --------------------------------------------------------------------------------------------- through pipecat


Effects = list[tuple[str, dict[str, Any]]]


async def call_through_llm(
    deployment: Deployment,
    name: str,
    arguments: dict[str, Any],
    registry: Registry,
    *,
    wait_secs: float = 0.3,
) -> tuple[FunctionCallResultFrame, Effects]:
    """Have the scripted LLM call ``name`` from a real pipeline; return the result frame and reported effects."""
    effects: Effects = []

    async def on_effect(effect: str, details: dict[str, Any]) -> None:
        effects.append((effect, details))

    llm = ScriptedLLMService(
        options=ScriptedLLMOptions(
            replies=[ReplyRule(when="*", tool_call=ToolCallSpec(name=name, arguments=arguments))]
        ),
        system_instruction=deployment.agent.instructions,
    )
    register_tools(llm, deployment.agent, registry, on_effect)
    tools = tools_schema(deployment.agent, registry)
    assert tools is not None and name in [f.name for f in tools.standard_tools]
    context = LLMContext(messages=[{"role": "user", "content": "please do it"}], tools=tools)

    down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context), SleepFrame(sleep=wait_secs)])

    (in_progress,) = [f for f in down if isinstance(f, FunctionCallInProgressFrame)]
    assert (in_progress.function_name, dict(in_progress.arguments)) == (name, arguments)
    (result,) = [f for f in down if isinstance(f, FunctionCallResultFrame)]
    assert result.tool_call_id == in_progress.tool_call_id
    return result, effects


async def test_registered_handler_returns_the_tool_result(python_deployment: Deployment, registry: Registry) -> None:
    result, effects = await call_through_llm(python_deployment, "add", {"a": 40, "b": 2}, registry)

    assert result.result["sum"] == 42
    assert result.error is None
    assert effects == []


async def test_registered_handler_turns_a_raise_into_an_error_result(
    python_deployment: Deployment, registry: Registry
) -> None:
    result, _ = await call_through_llm(python_deployment, "explode", {"reason": "in a pipeline"}, registry)

    assert result.result == {"error": "the tool explode failed: exploded: in a pipeline"}
    assert result.error is None  # the handler itself did not raise: the model gets a normal tool result


async def test_registered_handler_turns_a_timeout_into_an_error_result(
    python_deployment: Deployment, registry: Registry
) -> None:
    result, _ = await call_through_llm(python_deployment, "dawdle", {"secs": 5}, registry, wait_secs=0.6)

    assert result.result == {"error": "the tool dawdle did not answer within 0.2 seconds"}


async def test_registered_http_handler_reaches_the_server(
    api: FakeApi, http_deployment: Deployment, registry: Registry
) -> None:
    result, _ = await call_through_llm(http_deployment, "get_weather", {"city": "Lyon", "units": "metric"}, registry)

    assert result.result == {"city": "Lyon", "temperature_c": 21, "units": "metric"}
    assert api.requests[0]["authorization"] == "Bearer tok-from-env"


# --------------------------------------------------------------------------------------------- call control


CALL_CONTROL = """\
    - kind: end_call
    - kind: transfer
      name: to_billing
      options: {to: "+15550100"}
"""


async def test_end_call_reports_its_effect(registry: Registry) -> None:
    deployment = deployment_with_tools(CALL_CONTROL)

    result, effects = await call_through_llm(deployment, "end_call", {"reason": "caller said goodbye"}, registry)

    assert result.result == {"status": "ok", "effect": "end_call"}
    assert effects == [
        ("end_call", {"reason": "caller said goodbye", "result": {"status": "ok", "effect": "end_call"}})
    ]


async def test_transfer_reports_its_effect_and_destination(registry: Registry) -> None:
    deployment = deployment_with_tools(CALL_CONTROL)

    result, effects = await call_through_llm(deployment, "to_billing", {"reason": "billing question"}, registry)

    expected = {"status": "ok", "effect": "transfer", "to": "+15550100"}
    assert result.result == expected
    assert effects == [("transfer", {"reason": "billing question", "result": expected})]


async def test_call_control_tools_describe_themselves_to_the_model(registry: Registry) -> None:
    tools = tools_schema(deployment_with_tools(CALL_CONTROL).agent, registry)

    assert tools is not None
    schemas = {f.name: f for f in tools.standard_tools}
    assert set(schemas) == {"end_call", "to_billing"}
    assert "reason" in schemas["to_billing"].properties
    assert schemas["end_call"].description


class _FailingHangUp(ProviderOptions):
    pass


def _build_failing(name: str, options: _FailingHangUp) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    async def call(arguments: dict[str, Any]) -> Any:
        raise ConnectionError("carrier unreachable")

    return call


class _FailingEffectPlugin:
    @hookimpl
    def voxpipe_tool_kinds(self) -> list[ToolKind]:
        return [
            ToolKind(
                name="flaky_hang_up",
                options=_FailingHangUp,
                build=_build_failing,
                parameters={"type": "object", "properties": {}},
                effect="end_call",
            )
        ]


async def test_effect_is_not_reported_when_the_tool_failed() -> None:
    registry = discover()
    registry.add_plugin(_FailingEffectPlugin(), "voxpipe-tests", "0")
    deployment = deployment_with_tools("    - kind: flaky_hang_up\n", registry=registry)

    result, effects = await call_through_llm(deployment, "flaky_hang_up", {}, registry)

    assert result.result == {"error": "the tool flaky_hang_up failed: carrier unreachable"}
    assert effects == []
