"""Cold start of the ConversationRelay Lambda handler: module import plus the first event, in a fresh process.

Each run starts a new interpreter (as a new Lambda container would), imports ``voxpipe.serverless.relay``
and handles one event, timing both from inside the process; the median of the runs is printed per event:

- ``$connect``: the Twilio signature check (the first event of every call);
- ``$default`` setup: binding the connection and starting the conversation in DynamoDB;
- ``$default`` prompt: reading the history, streaming a Bedrock reply as ``text`` tokens through
  ``@connections``, and storing both turns: the slowest first event a container can get.

DynamoDB is moto in server mode, Bedrock the repository's converse-stream fake and ``@connections`` a sink
that answers 200 at once (moto's own takes ~100 ms a post), all on 127.0.0.1, so the figure is the
handler's own cost (imports, client creation, parsing, request count), not AWS's network. From the
repository root::

    python benchmarks/lambda_cold_start.py            # 10 runs per event
    python benchmarks/lambda_cold_start.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twilio.request_validator import RequestValidator  # noqa: E402

from tests.apigw_shim import aws_environment, aws_service, moto_server, write_handler_config  # noqa: E402
from tests.fakes import FakeBedrock  # noqa: E402
from voxpipe.aws.conversations import ConversationTable, table_definition  # noqa: E402
from voxpipe.security.call_binding import CallBinding  # noqa: E402

BUDGET_MS = 300.0
TOKEN = "benchmark-token"  # noqa: S105 — a made-up credential for a local fake; nothing real
RELAY_URL = "wss://relay.voxpipe.test/prod"
TABLE = "voxpipe-cold-start"
DEPLOYMENT = """
name: cold-start
agent:
  instructions: You are a helpful assistant on the phone. Keep answers short.
  greeting: Hello, how can I help?
stt: {provider: testkit_stt}
tts: {provider: testkit_tts}
llm:
  provider: bedrock
  model: amazon.nova-lite-v1:0
  options: {region: us-east-1, endpoint_url: "${BEDROCK_URL}"}
transport:
  twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}
"""

# Runs in the fresh process: times the import and the first event from inside it.
PROBE = """
import json, sys, time
started, cpu_started = time.perf_counter(), time.process_time()
from voxpipe.serverless.relay import handler
imported = time.perf_counter()
result = handler(json.loads(sys.argv[1]))
done, cpu_done = time.perf_counter(), time.process_time()
assert result["statusCode"] == 200, result
print(json.dumps({"import_ms": (imported - started) * 1000, "event_ms": (done - imported) * 1000,
                  "cpu_ms": (cpu_done - cpu_started) * 1000}))
"""


def event(route: str, connection: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    context = {
        "routeKey": route,
        "eventType": {"$connect": "CONNECT", "$default": "MESSAGE"}[route],
        "connectionId": connection,
        "requestId": f"req-{connection}-{time.monotonic_ns()}",
        "messageId": f"msg-{connection}-{time.monotonic_ns()}",
        "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        "stage": "prod",
        "apiId": "a1b2c3d4e5",
        "connectedAt": int(time.time() * 1000),
    }
    out: dict[str, Any] = {"requestContext": context, "isBase64Encoded": False}
    if route == "$connect":
        out["headers"] = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(RELAY_URL, {})}
    else:
        out["body"] = json.dumps(body)
    return out


class _Sink(BaseHTTPRequestHandler):
    """``@connections``: takes every post, as API Gateway does for a live connection."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_DELETE(self) -> None:
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def run_once(env: dict[str, str], payload: dict[str, Any]) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 — fixed argv: this interpreter or a tool of the dev install, no caller input
        [sys.executable, "-c", PROBE, json.dumps(payload)], env=env, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    timing["process_ms"] = (time.perf_counter() - started) * 1000
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per event (default 10)")
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    with moto_server() as aws, FakeBedrock(replies=lambda turn: "We are open from nine to five.") as bedrock:
        config_path = write_handler_config(Path(tempfile.mkdtemp(prefix="voxpipe-cold-start-")), DEPLOYMENT)
        env = {
            **os.environ,
            "VOXPIPE_HANDLER_CONFIG": str(config_path),
            "VOXPIPE_TABLE": TABLE,
            "VOXPIPE_RELAY_URL": RELAY_URL,
            "VOXPIPE_CONNECTIONS_URL": f"http://127.0.0.1:{sink.server_port}/prod",
            **aws_environment(dynamodb=aws, sqs=aws),
            "BEDROCK_URL": bedrock.url,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "PYTHONDONTWRITEBYTECODE": "",
            "VOXPIPE_SIGNING_SECRET": os.environ.get("VOXPIPE_SIGNING_SECRET")
            or "cold-start-signing-secret-" + "s" * 32,
        }
        client = aws_service("dynamodb", aws)
        client.create_table(**table_definition(TABLE))
        # silence: is on by default: setup and a reply each queue a silence check (an SQS client and a request)
        queue = aws_service("sqs", aws).create_queue(QueueName="voxpipe-cold-start-silence")
        env["VOXPIPE_SILENCE_QUEUE_URL"] = queue["QueueUrl"]
        table = ConversationTable(TABLE, 3600, client=client)
        binding = CallBinding.for_deployment("conversation_relay", True, env)
        scenarios = {
            "$connect (signature check)": lambda i: event("$connect", f"c{i}"),
            "$default setup": lambda i: event(
                "$default",
                f"s{i}",
                {
                    "type": "setup",
                    "sessionId": f"VX{i}",
                    "callSid": f"CA-setup-{i}",
                    "customParameters": binding.parameters(f"CA-setup-{i}"),  # as the TwiML webhook gave it
                },
            ),
            "$default prompt (history + Bedrock stream + @connections)": lambda i: event(
                "$default", f"p{i}", {"type": "prompt", "voicePrompt": "When are you open?", "last": True}
            ),
        }
        for i in range(args.runs + 1):  # the prompt runs need their connection bound, as a setup would
            table.bind_connection(f"p{i}", f"CA-prompt-{i}")
        # Not counted: the OS page cache, and moto's lazy start of its DynamoDB backend.
        run_once(env, scenarios["$default prompt (history + Bedrock stream + @connections)"](args.runs))
        print(f"cold start of voxpipe.serverless.relay.handler, median of {args.runs} fresh processes")
        print(f"{'event':58} {'import':>8} {'event':>8} {'total':>8} {'cpu':>8} {'process':>8}  (ms)")
        worst = 0.0
        for name, make in scenarios.items():
            runs = [run_once(env, make(i)) for i in range(args.runs)]
            imports = statistics.median(r["import_ms"] for r in runs)
            events = statistics.median(r["event_ms"] for r in runs)
            total = statistics.median(r["import_ms"] + r["event_ms"] for r in runs)
            cpu = statistics.median(r["cpu_ms"] for r in runs)
            process = statistics.median(r["process_ms"] for r in runs)
            worst = max(worst, total)
            print(f"{name:58} {imports:8.1f} {events:8.1f} {total:8.1f} {cpu:8.1f} {process:8.1f}")
        print(f"slowest cold start (import + first event): {worst:.0f} ms (budget {BUDGET_MS:.0f} ms)")
        print(
            "cpu = the handler process's own CPU time for import + event (what other processes' load does not inflate)"
        )
        print("process = interpreter start + the above + exit, as seen from outside; load average", os.getloadavg())
        if bedrock.errors:
            raise SystemExit(f"the Bedrock fake rejected requests: {bedrock.errors}")
    sink.shutdown()


if __name__ == "__main__":
    main()
