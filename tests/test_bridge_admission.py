"""The audio bridge lets a caller in only when a worker will run the call (``voxpipe.serverless.bridge_status``),
and a worker told to stop drains its calls first (``BridgeWorker.drain``).

Before, ``$connect`` queued every caller's audio whether or not a worker was there: with the worker down or past
its load, a Twilio caller heard silence until they hung up; and a worker's restart cut its live calls off. These
tests run the real path (the API Gateway shim, ``worker.handler`` in Lambda-like containers, SQS and DynamoDB on
moto, ``BridgeWorker``) and check each door: ``$connect`` refuses (503, so Twilio goes on with the TwiML after
``<Connect>``) when no worker wrote a fresh status, when its status says it is full or overloaded, and once it
drains or stops; the worker itself closes a connection its status let in a moment too early. A drain lets the
live call finish, or ends it through ``on_failure`` at the deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.apigw_shim import wait_until
from tests.test_serverless_worker import (  # noqa: F401 — aws, environ and bridge are fixtures
    BRIDGE_URL,
    CASCADE,
    FAST,
    TABLE,
    TOKEN,
    Bridge,
    Client,
    aws,
    bridge,
    chunks,
    environ,
    speech_then_silence,
    started,
    twilio_client,
)
from voxpipe.aws import aws_client
from voxpipe.aws.conversations import KEY, WORKER_PREFIX, ConversationTable, WorkerStatus
from voxpipe.security.loop_load import LoopLoad
from voxpipe.serverless.bridge_status import FRESH_SECS, STOPPING

pytestmark = pytest.mark.timeout(120)

LIMITED = CASCADE + "limits: {concurrent_calls: 1, max_loop_load: 0.5}\n"
YES = WorkerStatus(accepting=True, refusal="", load=0.0, calls=0)


def table(clock: Any = time.time) -> ConversationTable:
    return ConversationTable(TABLE, 600, clock=clock)


def status(env: dict[str, str]) -> WorkerStatus | None:
    return table().worker(env["VOXPIPE_QUEUE_URL"])


async def refused(connecting: Any) -> tuple[int, str]:
    """The status and body ``$connect`` answered a client that was not let in."""
    with pytest.raises(websockets.InvalidStatus) as refusal:
        await connecting
    return refusal.value.response.status_code, refusal.value.response.body.decode()


def forget_status(env: dict[str, str]) -> None:
    table().client.delete_item(TableName=TABLE, Key={KEY: {"S": WORKER_PREFIX + env["VOXPIPE_QUEUE_URL"]}})


def queued(env: dict[str, str]) -> int:
    attributes = aws_client("sqs").get_queue_attributes(
        QueueUrl=env["VOXPIPE_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


async def test_without_a_live_worker_no_caller_is_let_in(
    bridge: Bridge,  # noqa: F811
    environ: dict[str, str],  # noqa: F811
) -> None:
    start = asyncio.Event()
    async with bridge(LIMITED, FAST, start=start) as (shim, worker):
        queue = environ["VOXPIPE_QUEUE_URL"]
        forget_status(environ)
        # No worker has said anything: the Twilio stream and the page are both refused, nothing is queued.
        code, reason = await refused(twilio_client(shim, "CA-nobody-home"))
        assert (code, reason) == (503, "no bridge worker is serving calls (none has written its status lately)")
        assert (await refused(Client.page(shim)))[0] == 503
        # A worker that said yes and then died: its status goes stale after FRESH_SECS and counts as none.
        table(clock=lambda: time.time() - FRESH_SECS - 1).publish_worker(queue, YES, FRESH_SECS)
        assert (await refused(twilio_client(shim, "CA-worker-died")))[0] == 503
        assert queued(environ) == 0 and not shim.clients
        # The worker starts: its first status lets the next caller in, and the call runs.
        start.set()
        await asyncio.wait_for(worker.status.published.wait(), 10)
        client = await Client.page(shim)
        await client.send(client.page_start())
        await client.collect(lambda got: any(m["event"] == "media" for m in got))
        await client.ws.close()
    # Stopped, it says so at once rather than going stale.
    assert status(environ) == WorkerStatus(accepting=False, refusal=STOPPING, load=status(environ).load, calls=0)


async def test_a_worker_at_its_call_limit_refuses_at_both_doors(
    bridge: Bridge,  # noqa: F811
    environ: dict[str, str],  # noqa: F811
) -> None:
    """``limits.concurrent_calls: 1``. Two callers let in on a status written before the worker took either:
    the worker runs one and closes the other (it is not left in silence); while the one call lasts, ``$connect``
    refuses; once it ends, callers are let in again."""
    start = asyncio.Event()
    async with bridge(LIMITED, FAST, start=start) as (shim, worker):
        table().publish_worker(environ["VOXPIPE_QUEUE_URL"], YES, FRESH_SECS)
        first = await twilio_client(shim, "CA-limit-first")
        second = await twilio_client(shim, "CA-limit-second")
        start.set()
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(c.ws.wait_closed()) for c in (first, second)],
            timeout=20,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert len(done) == 1  # exactly one was closed
        kept = first if second.ws.close_code is not None else second
        await started(worker)
        assert worker.host.limits.calls.in_use == 1 and len(worker.calls) == 1
        await kept.collect(lambda got: any(m["event"] == "media" for m in got))
        assert kept.ws.close_code is None
        await wait_until(lambda: (s := status(environ)) and s.refusal == "concurrent_calls exceeded", timeout=5)
        code, reason = await refused(twilio_client(shim, "CA-limit-third"))
        assert (code, reason) == (503, "the bridge worker takes no new call: concurrent_calls exceeded")
        # The call ends: its slot is given back and the next caller gets through.
        await kept.send(kept.event("stop"))
        await wait_until(lambda: worker.host.limits.calls.in_use == 0, timeout=10)
        await wait_until(lambda: (s := status(environ)) and s.accepting, timeout=5)
        client = await Client.page(shim)
        await client.send(client.page_start())
        await client.collect(lambda got: any(m["event"] == "media" for m in got))
        await client.ws.close()


async def hog(loop_share: float, until: asyncio.Event) -> None:
    """Keep this event loop's thread busy ``loop_share`` of the time, as calls past its capacity would."""
    while not until.is_set():
        end = time.perf_counter() + 0.1 * loop_share
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0.1 * (1 - loop_share))


async def test_an_overloaded_worker_turns_callers_away_until_its_loop_is_free(
    bridge: Bridge,  # noqa: F811
    environ: dict[str, str],  # noqa: F811
) -> None:
    """``limits.max_loop_load: 0.5`` and a loop kept 90% busy: ``$connect`` refuses while the status says so, and a
    caller let in on a stale yes is closed by the worker; once the load falls, callers are let in again."""
    start = asyncio.Event()
    async with bridge(LIMITED, FAST, start=start) as (shim, worker):
        worker.status.load = LoopLoad(sample_secs=0.1, samples=3)
        worker.status.heartbeat_secs = 60  # nothing but a change rewrites the status in this test
        start.set()
        await asyncio.wait_for(worker.status.published.wait(), 10)
        calm = asyncio.Event()
        busy = asyncio.ensure_future(hog(0.9, calm))
        try:
            await wait_until(lambda: (s := status(environ)) and s.refusal == "max_loop_load exceeded", timeout=10)
            code, reason = await refused(Client.page(shim))
            assert (code, reason) == (503, "the bridge worker takes no new call: max_loop_load exceeded")
            # A yes written a moment before the load rose: $connect lets the caller in, the worker closes it.
            table().publish_worker(environ["VOXPIPE_QUEUE_URL"], YES, FRESH_SECS)
            # (the worker may close it before the stream's first event is sent, so none is)
            signature = RequestValidator(TOKEN).compute_signature(BRIDGE_URL, {})
            late = await Client.connect(shim.client_url, {"X-Twilio-Signature": signature})
            await asyncio.wait_for(late.ws.wait_closed(), 20)
            assert not worker.calls and worker.host.limits.calls.in_use == 0
            forget_status(environ)  # that early yes expires; only the worker's next change writes a status now
        finally:
            calm.set()
            await busy
        await wait_until(lambda: (s := status(environ)) and s.accepting, timeout=10)
        client = await Client.page(shim)
        await client.send(client.page_start())
        await client.collect(lambda got: any(m["event"] == "media" for m in got))
        await client.ws.close()


# ------------------------------------------------------------------------------------------------ drain


def speech(client: Client) -> list[dict[str, Any]]:
    """A caller's turn in 100 ms media events of the page's PCM16."""
    return [client.media(c) for c in chunks(speech_then_silence(16000), 3200)]


ANSWER = {"event": "transcript", "role": "assistant", "text": "We are open from nine to five every day."}


async def test_a_draining_worker_finishes_its_live_call_and_lets_no_new_one_in(
    bridge: Bridge,  # noqa: F811
    environ: dict[str, str],  # noqa: F811
) -> None:
    """SIGTERM's drain: ``$connect`` is told at once, the live call runs a whole turn after the drain began, and
    the worker stops once that call has ended, its record complete."""
    async with bridge(CASCADE, FAST) as (shim, worker):
        client = await Client.page(shim)
        await client.send(client.page_start())
        await started(worker)
        await worker.drain()
        assert status(environ) == WorkerStatus(accepting=False, refusal=STOPPING, load=status(environ).load, calls=1)
        code, reason = await refused(Client.page(shim))
        assert (code, reason) == (503, f"the bridge worker takes no new call: {STOPPING}")
        await client.stream(speech(client))
        await client.collect(lambda got: ANSWER in got)
        assert not worker.calls_drain.done.is_set()
        await client.ws.close()
        await asyncio.wait_for(worker.calls_drain.done.wait(), 20)
        [record] = await wait_until(worker.host.bookkeeping.records.list)
    assert record.failure is None and [t.reply for t in record.turns][-1] == ANSWER["text"]


async def test_a_call_still_live_at_the_drain_deadline_ends_through_on_failure(bridge: Bridge) -> None:  # noqa: F811
    deadline = CASCADE + "drain: {deadline_secs: 1}\non_failure: {say: We are closing for maintenance.}\n"
    async with bridge(deadline, FAST) as (shim, worker):
        client = await Client.page(shim)
        await client.send(client.page_start())
        await started(worker)
        await worker.drain()
        await asyncio.wait_for(client.ws.wait_closed(), 20)  # ended by the worker, not by the caller
        await asyncio.wait_for(worker.calls_drain.done.wait(), 20)
        [record] = await wait_until(worker.host.bookkeeping.records.list)
    assert record.failure is not None and "drain deadline" in record.failure.error.message
    assert record.failure.say == "We are closing for maintenance."
