"""A failing S3 store never harms a call: moto in server mode behind a proxy that injects faults.

The proxy forwards S3 requests to moto, except the ``PUT`` requests its script names: ``503`` (SlowDown),
``500``, ``hang`` (answers nothing for longer than the client's timeout) or ``cut`` (closes the connection
without answering). The call must finish on time with a clean record pointing at its recording; the uploader
retries off the call's path, stores the WAV once the store recovers, and counts a recording it gave up on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.apigw_shim import moto_server
from tests.faulty_proxy import FaultyProxy
from voxpipe.bench.simulated_call import CallerTurn, simulate_call
from voxpipe.config.loader import parse_deployment
from voxpipe.records import recording_store
from voxpipe.records.prometheus import CallMetrics
from voxpipe.records.recording import read_stereo
from voxpipe.records.recording_store import RecordingUploader, open_recording_store, recording_name
from voxpipe.records.verify import verify

BUCKET = "call-recordings"
DEPLOYMENT = f"""
name: s3recorded
agent: {{instructions: You are a receptionist.}}
vad: {{stop_secs: 0.2}}
turn: {{strategy: silence, timeout_secs: 0.2}}
stt: {{provider: testkit_stt, options: {{transcripts: ["hello"]}}}}
llm: {{provider: testkit_llm, options: {{default_reply: "Hi there."}}}}
tts: {{provider: testkit_tts}}
recording: {{enabled: true, store: "s3://{BUCKET}/calls", retention_days: 7}}
"""


class ScriptedPuts:
    """The proxy's faults for S3: one from ``script`` per object PUT, in order, then none."""

    def __init__(self, script: list[str]):
        self.script = list(script)
        self.puts = 0

    def __call__(self, method: str, path: str) -> str:
        if method != "PUT" or "/" not in path.strip("/"):  # not an object (the bucket, or a read)
            return "pass"
        self.puts += 1
        return self.script.pop(0) if self.script else "pass"


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(moto: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=moto)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    monkeypatch.setattr(recording_store, "S3_TIMEOUT_SECS", 1.0)
    monkeypatch.setattr(recording_store, "uploader", RecordingUploader(attempts=4, backoff_secs=0.05))
    return client


@pytest.fixture(scope="module")
def hello() -> CallerTurn:
    return CallerTurn.from_text("Hello.")


async def _call(hello: CallerTurn):  # type: ignore[no-untyped-def]
    result = await simulate_call(parse_deployment(DEPLOYMENT), [hello], settle_secs=0.5)
    started = time.monotonic()
    record = result.kept_record()
    return result, record, time.monotonic() - started


@pytest.mark.parametrize("faults", [["503", "500", "cut"], ["hang", "503"]])
async def test_a_flaky_store_is_retried_off_the_call_path(
    s3: Any, moto: str, hello: CallerTurn, faults: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    puts = ScriptedPuts(faults)
    with FaultyProxy(moto, puts) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        _, record, finish_secs = await _call(hello)
        assert finish_secs < 0.05  # the call never waits for its upload
        assert record.errors == [] and [t.heard for t in record.turns] == ["hello"]
        key = f"calls/{recording_name(record.call_id, record.started_at)}.wav"
        assert [r.location for r in record.recordings] == [f"s3://{BUCKET}/{key}"]
        assert recording_store.uploader.drain(30)
    assert recording_store.uploader.stats == {"retried": len(faults), "stored": 1}
    assert puts.puts == len(faults) + 1
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    _, bot, rate = read_stereo(body)
    assert rate == 24000 and len(bot) > rate  # the whole call, stored once the store recovered


async def test_a_dead_store_is_counted_and_logged_never_fatal(
    s3: Any, moto: str, hello: CallerTurn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loguru import logger

    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(str(message)), level="ERROR")
    try:
        with FaultyProxy(moto, ScriptedPuts(["500"] * 4)) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
            first = await _call(hello)
            assert recording_store.uploader.drain(30)
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto)  # the store is back: the next call is stored
            second = await _call(hello)
            assert recording_store.uploader.drain(30)
    finally:
        logger.remove(sink)
    for _, record, finish_secs in (first, second):
        assert finish_secs < 0.05 and record.errors == [] and len(record.turns) == 1
    assert recording_store.uploader.stats == {"retried": 3, "failed": 1, "stored": 1}
    assert 'voxpipe_recordings_total{outcome="failed"} 1.0' in CallMetrics().render().decode()
    assert any("not stored after 4 attempts" in line and first[1].call_id in line for line in logged)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="calls/").get("Contents", [])]
    [stored], [lost] = ([r.location.removeprefix(f"s3://{BUCKET}/") for r in c[1].recordings] for c in (second, first))
    assert stored in keys and lost not in keys
    # voxpipe calls --verify reads an S3 recording back; a missing one is an error it reports
    [check] = verify(second[1])
    assert check.ok and check.index == 1
    with pytest.raises(OSError, match="NoSuchKey"):
        verify(first[1])


def test_each_connection_of_a_call_is_its_own_object(s3: Any, moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconnected call's connections put two objects under the prefix (the lifecycle rule's), neither
    replacing the other."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto)
    store = open_recording_store(f"s3://{BUCKET}/calls")
    names = [recording_name("CA-reconnected", datetime(2026, 12, 1, 9, 0, second, tzinfo=UTC)) for second in (0, 45)]
    for name, body in zip(names, (b"first connection", b"second connection"), strict=True):
        store.put(name, body)
    assert [store.get(store.location(name)) for name in names] == [b"first connection", b"second connection"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="calls/CA-reconnected").get("Contents", [])]
    assert keys == [f"calls/{name}.wav" for name in names]


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    gate = threading.Event()

    class SlowStore:
        def location(self, name: str) -> str:
            return name

        def put(self, name: str, wav: bytes) -> None:
            gate.wait(10)

        def get(self, location: str) -> bytes:
            return b""

    uploader = RecordingUploader(max_queued=2, attempts=1)
    started = time.monotonic()
    accepted = [uploader.submit(SlowStore(), f"call-{i}", lambda: b"wav") for i in range(5)]
    assert time.monotonic() - started < 0.05
    gate.set()
    assert uploader.drain(10)
    assert accepted.count(False) == uploader.stats["dropped"] >= 2
    assert uploader.stats["stored"] == accepted.count(True)


def test_deploy_sam_expires_recordings_with_a_lifecycle_rule(tmp_path: Path) -> None:
    from ruamel.yaml import YAML

    from tests.apigw_shim import serverless_registry
    from tests.test_sam import cfn_lint
    from voxpipe.serverless.sam import write_sam

    config = tmp_path / "deployment.yaml"
    config.write_text(
        DEPLOYMENT.replace(
            'testkit_llm, options: {default_reply: "Hi there."}', "bedrock, model: amazon.nova-lite-v1:0"
        )
    )
    write_sam(config, tmp_path / "out", environ={}, registry=serverless_registry())
    template = YAML(typ="safe", pure=True).load((tmp_path / "out" / "template.yaml").read_text())
    bucket = template["Resources"]["RecordingsBucket"]["Properties"]
    assert bucket["BucketName"] == BUCKET
    assert bucket["LifecycleConfiguration"]["Rules"] == [
        {"Id": "voxpipe-recordings-expire", "Status": "Enabled", "ExpirationInDays": 7, "Prefix": "calls/"}
    ]
    statements = template["Resources"]["WorkerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/calls/*"} in statements
    cfn_lint(tmp_path / "out" / "template.yaml")
