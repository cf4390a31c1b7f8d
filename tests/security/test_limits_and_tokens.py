"""The pure limiter (sliding windows, concurrency slots) and the signed short-lived tokens, and their config.

The routes will call these; here they are proven on their own, on an injected clock.
"""

from __future__ import annotations

import json

import pytest

from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import parse_deployment
from voxpipe.security.limits import ConcurrencySlots, DeploymentLimits, LimitExceeded, SlidingWindow
from voxpipe.security.tokens import SECRET_VARIABLE, Signer, TokenError, _decode, _encode

pytestmark = pytest.mark.usefixtures("registry")
SECRET = b"k" * 32


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------------------------- limits


def test_sliding_window_refuses_beyond_the_limit_and_recovers_as_events_age() -> None:
    clock = Clock()
    window = SlidingWindow("calls_per_minute_per_client", 3, 60, clock=clock)
    for _ in range(3):
        window.take("198.51.100.7")
        clock.now += 10
    with pytest.raises(LimitExceeded) as refused:
        window.take("198.51.100.7")
    assert refused.value.limit == "calls_per_minute_per_client"
    assert refused.value.retry_after_secs == pytest.approx(30)  # the first event leaves the window at t=60
    window.take("203.0.113.9")  # another client is not affected
    clock.now += 30.001
    window.take("198.51.100.7")


def test_a_refused_event_is_not_counted() -> None:
    clock = Clock()
    window = SlidingWindow("w", 1, 60, clock=clock)
    window.take()
    for _ in range(100):
        clock.now += 0.5
        with pytest.raises(LimitExceeded):
            window.take()
    clock.now += 10
    window.take()  # 60 s after the one accepted event, not after the last refused one


def test_sliding_window_memory_is_bounded_under_address_rotation() -> None:
    window = SlidingWindow("w", 5, 60, clock=Clock(), max_keys=100)
    for n in range(10_000):
        window.take(f"2001:db8::{n:x}")
    assert len(window) == 100


def test_concurrency_slots_are_given_back_once() -> None:
    slots = ConcurrencySlots("concurrent_calls", 2)
    first, second = slots.take(), slots.take()
    with pytest.raises(LimitExceeded, match="concurrent_calls"):
        slots.take()
    first.release()
    first.release()  # twice: still one slot back
    assert slots.in_use == 1
    with slots.take():
        assert slots.in_use == 2
    second.release()
    assert slots.in_use == 0


async def test_deployment_limits_check_the_client_rate_before_taking_a_slot() -> None:
    limits = DeploymentLimits(
        concurrent_calls=2, calls_per_minute_per_client=1, minted_secrets_per_minute=2, clock=Clock()
    )
    slot = await limits.admit_call("198.51.100.7")
    with pytest.raises(LimitExceeded, match="calls_per_minute_per_client"):
        await limits.admit_call("198.51.100.7")
    assert limits.calls.in_use == 1
    await limits.admit_call("203.0.113.9")
    with pytest.raises(LimitExceeded, match="concurrent_calls"):
        await limits.admit_call("192.0.2.1")
    await slot.release()
    await limits.admit_secret()
    await limits.admit_secret()
    with pytest.raises(LimitExceeded, match="minted_secrets_per_minute"):
        await limits.admit_secret()


BASE = """\
name: support
agent: {instructions: Hi.}
stt: {provider: testkit_stt}
llm: {provider: testkit_llm}
tts: {provider: testkit_tts}
"""


def test_limits_have_safe_defaults_and_are_validated() -> None:
    assert parse_deployment(BASE, environ={}).limits.concurrent_calls == 50
    assert parse_deployment(BASE, environ={}).limits.max_loop_load == 0.75
    with pytest.raises(ConfigError) as busier:
        parse_deployment(BASE + "limits: {max_loop_load: 1.5}\n", "f.yaml", environ={})
    assert [str(p) for p in busier.value.problems] == [
        "f.yaml:6: limits.max_loop_load: input should be less than or equal to 1"
    ]
    custom = parse_deployment(BASE + "limits: {concurrent_calls: 4, minted_secrets_per_minute: 2}\n", environ={})
    assert (custom.limits.concurrent_calls, custom.limits.minted_secrets_per_minute) == (4, 2)
    limits = DeploymentLimits.of(custom.limits)  # what a route builds from its deployment
    assert (limits.calls.limit, limits.new_calls.limit, limits.secrets.limit) == (4, 10, 2)
    with pytest.raises(ConfigError) as caught:
        parse_deployment(BASE + "limits: {concurrent_calls: 0, calls_per_hour: 3}\n", "f.yaml", environ={})
    assert [str(p) for p in caught.value.problems] == [
        "f.yaml:6: limits.calls_per_hour: unknown key 'calls_per_hour' (allowed: concurrent_calls, "
        "calls_per_minute_per_client, minted_secrets_per_minute, max_loop_load, busy_say)",
        "f.yaml:6: limits.concurrent_calls: input should be greater than 0",
    ]


def test_unsigned_mode_requires_insecure_true() -> None:
    unsigned = BASE + "transport: {twilio: {validate_signatures: false}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_deployment(unsigned, "f.yaml", environ={})
    assert [str(p) for p in caught.value.problems] == [
        "f.yaml:6: transport.twilio.validate_signatures: false (unsigned requests) is allowed only with "
        "`insecure: true` at the top of the file"
    ]
    assert parse_deployment("insecure: true\n" + unsigned, environ={}).insecure


# --------------------------------------------------------------------------------------------- tokens


def test_a_token_verifies_for_its_purpose_and_subject_until_it_expires() -> None:
    clock = Clock()
    signer = Signer(SECRET, clock=clock)
    token = signer.mint("call", "CA" + "1" * 32, ttl_secs=60)
    signer.verify(token, "call", "CA" + "1" * 32)
    clock.now += 59
    signer.verify(token, "call", "CA" + "1" * 32)
    clock.now += 1
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, "call", "CA" + "1" * 32)


def test_a_token_for_one_call_or_purpose_opens_no_other() -> None:
    signer = Signer(SECRET, clock=Clock())
    token = signer.mint("call", "CA-one", ttl_secs=60)
    with pytest.raises(TokenError, match="another subject"):
        signer.verify(token, "call", "CA-two")
    with pytest.raises(TokenError, match="not a browser token"):
        signer.verify(token, "browser", "CA-one")


def test_a_changed_claim_or_another_key_breaks_the_signature() -> None:
    clock = Clock()
    signer = Signer(SECRET, clock=clock)
    payload, signature = signer.mint("browser", "https://app.example.com", ttl_secs=60).split(".")
    claims = json.loads(_decode(payload))
    forged = _encode(json.dumps({**claims, "e": claims["e"] + 86400}).encode())
    with pytest.raises(TokenError, match="bad signature"):
        signer.verify(f"{forged}.{signature}", "browser", "https://app.example.com")
    with pytest.raises(TokenError, match="bad signature"):
        Signer(b"x" * 32, clock=clock).verify(f"{payload}.{signature}", "browser", "https://app.example.com")


@pytest.mark.parametrize("token", [None, "", "abc", "a.b.c", "é.é", "a" * 5000, 42, ".", "e30.e30"])
def test_malformed_tokens_are_refused_with_a_reason_never_an_exception_of_another_kind(token: object) -> None:
    with pytest.raises(TokenError):
        Signer(SECRET).verify(token, "call", "CA-one")


def test_the_secret_comes_from_the_environment_and_must_be_long() -> None:
    with pytest.raises(ValueError, match=SECRET_VARIABLE):
        Signer.from_environ({})
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Signer.from_environ({SECRET_VARIABLE: "short"})
    signer = Signer.from_environ({SECRET_VARIABLE: "s" * 48})
    token = signer.mint("call", "CA-one", 60)
    assert "s" * 8 not in token  # nothing secret travels in a token
