"""Argument injection into each tool kind (http, python, end_call, transfer): refused before the tool runs.

Tools hold the server's credentials and act on the call, and their arguments come from a model a caller can
talk into anything (or from a browser page). These tests send what an attacker would through the real paths:
pipecat's function calling (a scripted LLM in a real pipeline) and ``run_tool`` itself, against a local HTTP
server that records what reached it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from test_tools import call_through_llm, deployment_with_tools

from voxpipe.config.errors import ConfigError
from voxpipe.config.models import Deployment
from voxpipe.providers.registry import Registry
from voxpipe.tools.access import ToolNotCallable, run_client_tool
from voxpipe.tools.arguments import InvalidArguments, check_arguments, strict_schema
from voxpipe.tools.runner import run_tool

pytestmark = pytest.mark.usefixtures("registry")

CALLED: list[dict[str, Any]] = []


def book_table(city: str, **rest: Any) -> dict[str, Any]:
    """A python tool with a catch-all: it must never see a keyword the deployment did not declare."""
    CALLED.append({"city": city, **rest})
    return {"booked": city}


RELEASE = threading.Event()


def hang_until_released() -> dict[str, Any]:
    """A sync tool that hangs past any timeout (until the test lets it go)."""
    RELEASE.wait(30)
    return {}


@pytest.fixture(autouse=True)
def _forget_calls() -> None:
    CALLED.clear()


# --------------------------------------------------------------------------------------------- python


PYTHON_TOOLS = f"""\
    - kind: python
      name: book
      parameters: {{type: object, properties: {{city: {{type: string}}}}, required: [city]}}
      options: {{function: "{__name__}:book_table"}}
    - kind: python
      name: book_open
      parameters: {{type: object, properties: {{city: {{type: string}}}}, additionalProperties: true}}
      options: {{function: "{__name__}:book_table"}}
"""


async def test_python_tool_refuses_an_undeclared_keyword_through_the_pipeline(registry: Registry) -> None:
    deployment = deployment_with_tools(PYTHON_TOOLS)

    result, _ = await call_through_llm(deployment, "book", {"city": "Lyon", "admin": True}, registry)

    assert "was not run" in result.result["error"] and "admin" in result.result["error"]
    assert CALLED == []


async def test_python_tool_refuses_a_wrongly_typed_argument(registry: Registry) -> None:
    deployment = deployment_with_tools(PYTHON_TOOLS)

    result, _ = await call_through_llm(deployment, "book", {"city": {"$ne": None}}, registry)

    assert "must be string" in result.result["error"]
    assert CALLED == []


async def test_python_catch_all_never_receives_caller_chosen_names_even_when_the_schema_allows_them(
    registry: Registry,
) -> None:
    deployment = deployment_with_tools(PYTHON_TOOLS)

    result, _ = await call_through_llm(deployment, "book_open", {"city": "Lyon", "__class__": "x"}, registry)

    assert result.result == {"error": f"the tool book_open failed: {__name__}:book_table takes no argument __class__"}
    assert CALLED == []


async def test_hung_sync_tools_never_starve_the_loops_default_thread_pool(registry: Registry) -> None:
    tools = "    - kind: python\n      name: hang\n      timeout_secs: 0.05\n      parameters: {type: object}\n"
    tools += f'      options: {{function: "{__name__}:hang_until_released"}}\n'
    tool = deployment_with_tools(tools).agent.tools[0]
    kind = registry.tool_kinds["python"].tool_kind
    handler = kind.build("hang", kind.options.model_validate(tool.options))
    try:
        results = await asyncio.gather(*(run_tool("hang", handler, {}, 0.05, tool.parameters) for _ in range(20)))
        assert all("did not answer" in result["error"] for result in results)
        # Twenty threads hang; the default pool (what pipecat and asyncio.to_thread use) still answers at once.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 2) == "free"
    finally:
        RELEASE.set()


async def test_python_tool_gets_exactly_the_declared_arguments(registry: Registry) -> None:
    deployment = deployment_with_tools(PYTHON_TOOLS)

    result, _ = await call_through_llm(deployment, "book", {"city": "Lyon"}, registry)

    assert result.result == {"booked": "Lyon"}
    assert CALLED == [{"city": "Lyon"}]


# --------------------------------------------------------------------------------------------- http


class Api:
    """A local server that records the requests it got and can answer too much, or never."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            {"query": list(request.query.items()), "json": body, "auth": request.headers.get("Authorization")}
        )
        return web.json_response({"ok": True})

    async def huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse up front
        response.content_type = "application/json"
        await response.prepare(request)
        for _ in range(64):
            await response.write(b" " * 16384)
        return response

    async def huge_declared(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 300_000)

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/internal")

    async def internal(self, request: web.Request) -> web.Response:
        self.requests.append({"internal": True, "auth": request.headers.get("Authorization")})
        return web.json_response({"instance_credentials": "..."})

    async def hang(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = Api()
    app = web.Application()
    app.add_routes(
        [
            web.get("/echo", server.echo),
            web.post("/echo", server.echo),
            web.get("/huge", server.huge),
            web.get("/huge-declared", server.huge_declared),
            web.get("/hang", server.hang),
            web.get("/redirect", server.redirect),
            web.get("/internal", server.internal),
        ]
    )
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    server.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


HTTP_TOOLS = """\
    - kind: http
      name: lookup
      parameters: {type: object, properties: {city: {type: string}}, required: [city]}
      options: {url: "${API_URL}/echo", method: GET, headers: {Authorization: "Bearer ${API_TOKEN}"}}
    - kind: http
      name: order
      parameters:
        type: object
        properties: {item: {type: string}, address: {type: object, properties: {street: {type: string}}}}
      options: {url: "${API_URL}/echo", headers: {Authorization: "Bearer ${API_TOKEN}"}}
    - kind: http
      name: huge
      parameters: {type: object, properties: {}}
      options: {url: "${API_URL}/huge", method: GET, max_response_bytes: 65536}
    - kind: http
      name: huge_declared
      parameters: {type: object, properties: {}}
      options: {url: "${API_URL}/huge-declared", method: GET}
    - kind: http
      name: redirected
      parameters: {type: object, properties: {}}
      options: {url: "${API_URL}/redirect", method: GET, headers: {Authorization: "Bearer ${API_TOKEN}"}}
    - kind: http
      name: hang
      timeout_secs: 20
      parameters: {type: object, properties: {}}
      options: {url: "${API_URL}/hang", method: GET, request_timeout_secs: 0.3}
"""


@pytest.fixture
def http_deployment(api: Api) -> Deployment:
    return deployment_with_tools(HTTP_TOOLS, environ={"API_URL": api.url, "API_TOKEN": "server-secret"})


async def test_http_query_injection_stays_one_encoded_value(
    api: Api, http_deployment: Deployment, registry: Registry
) -> None:
    result, _ = await call_through_llm(http_deployment, "lookup", {"city": "Paris&admin=1#x"}, registry)

    assert result.result == {"ok": True}
    assert api.requests == [{"query": [("city", "Paris&admin=1#x")], "json": None, "auth": "Bearer server-secret"}]


async def test_http_undeclared_argument_never_reaches_the_endpoint(
    api: Api, http_deployment: Deployment, registry: Registry
) -> None:
    for arguments in ({"city": "Paris", "Authorization": "Bearer mine"}, {"city": "Paris", "url": "http://evil"}):
        result, _ = await call_through_llm(http_deployment, "lookup", arguments, registry)
        assert "was not run" in result.result["error"]
    nested = {"item": "tea", "address": {"street": "Main", "internal_note": "free"}}
    result, _ = await call_through_llm(http_deployment, "order", nested, registry)
    assert "was not run" in result.result["error"]
    assert api.requests == []


async def test_http_reply_over_the_cap_is_refused_as_it_streams(api: Api, http_deployment: Deployment) -> None:
    result = await _run(http_deployment, "huge", {})

    assert result == {"error": "the tool huge failed: reply of huge is over the 65536-byte limit"}


async def test_http_reply_declared_over_the_default_cap_is_refused_up_front(
    api: Api, http_deployment: Deployment
) -> None:
    result = await _run(http_deployment, "huge_declared", {})

    assert result == {
        "error": "the tool huge_declared failed: reply of huge_declared is 300000 bytes, over the 262144-byte limit"
    }


async def test_http_redirect_is_not_followed(api: Api, http_deployment: Deployment) -> None:
    result = await _run(http_deployment, "redirected", {})

    assert result["error"].startswith("the tool redirected failed: HTTP 302 from redirected")
    assert api.requests == []  # the internal address was never asked, with or without the credentials


async def test_http_request_timeout_bounds_a_hanging_endpoint(api: Api, http_deployment: Deployment) -> None:
    started = time.monotonic()
    result = await _run(http_deployment, "hang", {})

    assert "error" in result
    assert time.monotonic() - started < 2.0  # the request's own 0.3 s, not the tool's 20 s


async def _run(deployment: Deployment, name: str, arguments: dict[str, Any]) -> Any:
    from voxpipe.providers.registry import default_registry

    tool = next(t for t in deployment.agent.tools if t.function_name == name)
    kind = default_registry().tool_kinds[tool.kind].tool_kind
    handler = kind.build(name, kind.options.model_validate(tool.options))
    return await run_tool(name, handler, arguments, tool.timeout_secs, tool.parameters or kind.parameters)


# --------------------------------------------------------------------------------------------- call control


CALL_CONTROL = """\
    - kind: end_call
    - kind: transfer
      options: {to: "+15550100"}
"""


async def test_transfer_destination_cannot_be_chosen_by_the_caller(registry: Registry) -> None:
    deployment = deployment_with_tools(CALL_CONTROL)

    result, effects = await call_through_llm(deployment, "transfer", {"reason": "x", "to": "+19005550199"}, registry)

    assert "was not run" in result.result["error"] and "to" in result.result["error"]
    assert effects == []


async def test_end_call_refuses_another_calls_id_and_odd_types(registry: Registry) -> None:
    deployment = deployment_with_tools(CALL_CONTROL)

    for arguments in ({"reason": "bye", "call_sid": "CA" + "0" * 32}, {"reason": ["bye"]}):
        result, effects = await call_through_llm(deployment, "end_call", arguments, registry)
        assert "was not run" in result.result["error"]
        assert effects == []


# --------------------------------------------------------------------------------------------- the rules


async def test_run_tool_refuses_arguments_that_are_not_an_object() -> None:
    calls: list[Any] = []

    async def handler(arguments: dict[str, Any]) -> Any:
        calls.append(arguments)

    for parameters in (None, {"type": "object", "properties": {}}):
        result = await run_tool("t", handler, ["a", "b"], 1.0, parameters)  # type: ignore[arg-type]
        assert result == {"error": "the tool t was not run: the arguments must be a JSON object"}
    result = await run_tool("t", handler, {}, 1.0, {"type": "object", "properties": {"a": {"type": "strng"}}})
    assert result["error"].startswith("the tool t was not run: invalid JSON Schema")
    assert calls == []


def test_strictness_applies_at_every_level_unless_the_schema_says_otherwise() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
        "additionalProperties": True,
    }
    assert strict_schema(schema)["additionalProperties"] is True
    assert strict_schema(schema)["properties"]["a"]["additionalProperties"] is False
    assert check_arguments(schema, {"a": {"b": "x"}, "free": 1}) == {"a": {"b": "x"}, "free": 1}
    with pytest.raises(InvalidArguments, match="must not contain"):
        check_arguments(schema, {"a": {"b": "x", "c": 1}})
    with pytest.raises(InvalidArguments, match="must not contain"):
        check_arguments(None, {"anything": 1})  # no schema: no arguments


def test_arguments_are_checked_never_changed_and_no_remote_schema_is_fetched() -> None:
    schema = {"type": "object", "properties": {"units": {"type": "string", "default": "metric"}}}
    arguments: dict[str, Any] = {}
    assert check_arguments(schema, arguments) == {} and arguments == {}
    with pytest.raises(ValueError, match=r"remote \$ref .* is not allowed"):
        check_arguments({"$ref": "https://schemas.example.test/tool.json"}, {})


def test_an_invalid_schema_is_a_config_error_naming_file_line_and_key() -> None:
    tools = '    - kind: python\n      parameters: {type: object, properties: {a: {type: "strng"}}}\n'
    tools += '      options: {function: "m:f"}\n'
    with pytest.raises(ConfigError) as caught:
        deployment_with_tools(tools)
    assert str(caught.value).startswith("tools.yaml:6: agent.tools[0].parameters: invalid JSON Schema:")


async def test_browser_may_call_only_client_callable_tools(registry: Registry) -> None:
    tools = CALL_CONTROL + "    - kind: end_call\n      name: hang_up\n      client_callable: true\n"
    tools += PYTHON_TOOLS.replace("name: book\n", "name: book\n      client_callable: true\n")
    agent = deployment_with_tools(tools).agent

    assert await run_client_tool(agent, registry, "hang_up", {"reason": "done"}) == (
        {"status": "ok", "effect": "end_call"},
        "end_call",
    )
    result, effect = await run_client_tool(agent, registry, "book", {"city": "Lyon", "admin": True})
    assert "was not run" in result["error"] and effect is None and CALLED == []
    assert await run_client_tool(agent, registry, "book", {"city": "Lyon"}) == ({"booked": "Lyon"}, None)
    for name, status in (("transfer", 403), ("end_call", 403), ("book_open", 403), ("drop_database", 404)):
        with pytest.raises(ToolNotCallable) as refused:
            await run_client_tool(agent, registry, name, {})
        assert refused.value.status == status
    assert CALLED == [{"city": "Lyon"}]


def test_the_runner_imports_neither_pydantic_nor_pluggy() -> None:
    """The Lambda relay imports it: its cold start must not pay for them."""
    code = "import sys, voxpipe.tools.runner; print(sorted({'pydantic', 'pluggy', 'pipecat'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # noqa: S603 — fixed argv: this interpreter or a tool of the dev install, no caller input
    assert out.stdout.strip() == "[]"
