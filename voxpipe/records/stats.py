"""Comparing variants: latency percentiles with bootstrap confidence intervals, cost per minute, error rates.

Voice-to-voice latency is skewed and heavy-tailed, so intervals come from the percentile bootstrap (resampling
calls' turns with replacement), not from a normal approximation. Two variants differ significantly when the
bootstrap interval of the difference of their medians excludes zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from voxpipe.records.model import CallRecord

PERCENTILES = (50, 90, 99)
RESAMPLES = 2000
CONFIDENCE = 0.95


class Estimate(BaseModel):
    """A statistic with its bootstrap confidence interval (same unit as the statistic)."""

    value: float | None
    low: float | None = None
    high: float | None = None


class VariantSummary(BaseModel):
    """One variant's calls, summarised. Latencies in milliseconds, costs in US dollars."""

    variant: str
    calls: int
    turns: int = Field(description="Turns with a measured voice-to-voice latency.")
    voice_to_voice_ms: dict[str, Estimate] = Field(description="p50 / p90 / p99 with 95% intervals.")
    stage_p50_ms: dict[str, float | None] = Field(description="Median of each stage after the end of speech.")
    cost_per_minute_usd: float
    error_rate: float = Field(description="Share of calls with at least one error.")
    fallback_rate: float = Field(description="Share of calls that switched provider at least once.")
    median_diff_vs_baseline_ms: Estimate | None = Field(
        None, description="This variant's median minus the baseline's, with its 95% interval."
    )
    significant: bool | None = Field(None, description="The interval of the difference excludes zero.")


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap(values: Sequence[float], percentile: float, rng: np.random.Generator | None = None) -> Estimate:
    """The ``percentile`` of ``values`` with its percentile-bootstrap interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Estimate(value=None)
    rng = rng or _rng()
    samples = rng.choice(data, size=(RESAMPLES, data.size), replace=True)
    return _with_interval(float(np.percentile(data, percentile)), np.percentile(samples, percentile, axis=1))


def median_difference(a: Sequence[float], b: Sequence[float], rng: np.random.Generator | None = None) -> Estimate:
    """Median of ``a`` minus median of ``b``, with its bootstrap interval."""
    if not len(a) or not len(b):
        return Estimate(value=None)
    rng = rng or _rng()
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    medians_a = np.median(rng.choice(xa, (RESAMPLES, xa.size)), axis=1)
    medians_b = np.median(rng.choice(xb, (RESAMPLES, xb.size)), axis=1)
    return _with_interval(float(np.median(xa) - np.median(xb)), medians_a - medians_b)


def _with_interval(value: float, resampled: np.ndarray) -> Estimate:
    tail = (1 - CONFIDENCE) / 2 * 100
    return Estimate(
        value=value, low=float(np.percentile(resampled, tail)), high=float(np.percentile(resampled, 100 - tail))
    )


def voice_to_voice(records: Sequence[CallRecord]) -> list[float]:
    return [t.voice_to_voice_ms for r in records for t in r.turns if t.voice_to_voice_ms is not None]


def _stage_median(records: Sequence[CallRecord], stage: str) -> float | None:
    values = [getattr(t, stage) for r in records for t in r.turns if getattr(t, stage) is not None]
    return float(np.median(values)) if values else None


def summarise(variant: str, records: Sequence[CallRecord]) -> VariantSummary:
    latencies = voice_to_voice(records)
    minutes = sum(r.duration_secs for r in records) / 60
    calls = len(records)
    return VariantSummary(
        variant=variant,
        calls=calls,
        turns=len(latencies),
        voice_to_voice_ms={f"p{p}": bootstrap(latencies, p) for p in PERCENTILES},
        stage_p50_ms={
            stage.removesuffix("_ms"): _stage_median(records, stage)
            for stage in ("stt_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms")
        },
        cost_per_minute_usd=sum(r.cost_usd for r in records) / minutes if minutes else 0.0,
        error_rate=sum(bool(r.errors) for r in records) / calls if calls else 0.0,
        fallback_rate=sum(bool(r.fallbacks) for r in records) / calls if calls else 0.0,
    )


def compare(groups: dict[str, Sequence[CallRecord]]) -> list[VariantSummary]:
    """Summarise each group; every group after the first is tested against the first (the baseline)."""
    summaries = [summarise(name, records) for name, records in groups.items()]
    if not summaries:
        return []
    baseline = voice_to_voice(next(iter(groups.values())))
    for summary, records in zip(summaries[1:], list(groups.values())[1:], strict=True):
        diff = median_difference(voice_to_voice(records), baseline)
        summary.median_diff_vs_baseline_ms = diff
        if diff.low is not None and diff.high is not None:
            summary.significant = diff.low > 0 or diff.high < 0
    return summaries


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> Estimate:
    """A success rate with its Wilson score interval (95% for ``z`` 1.96): sound for small samples and for
    rates of 0 or 1, where the normal approximation collapses to a zero-width interval."""
    if trials == 0:
        return Estimate(value=None)
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return Estimate(value=rate, low=max(0.0, centre - half), high=min(1.0, centre + half))


class FailedExpectation(BaseModel):
    """How often one kind of expectation failed (or could not be judged) in a variant's scenario calls."""

    expectation: str
    calls: int = Field(description="Scenario calls in which it failed or was an error.")
    example: str = Field(description="One of them: scenario, turn and what happened.")


class TaskSuccess(BaseModel):
    """A variant's scenario calls: how many passed every expectation, with a 95% Wilson interval."""

    variant: str
    calls: int
    passed: int
    pass_rate: Estimate = Field(description="Share of calls that passed every expectation (0-1).")
    cost_per_call_usd: float = Field(description="Mean cost of a call, the judge excluded (US dollars).")
    judge_cost_usd: float = Field(description="What the LLM judge cost for all these calls (US dollars).")
    failures: list[FailedExpectation] = Field(description="Most frequent first.")


def task_success(variant: str, records: Sequence[CallRecord]) -> TaskSuccess:
    """Pass rate and failed expectations of the scenario calls among ``records`` (others are ignored)."""
    scenario_calls = [r for r in records if r.scenario is not None]
    passed = sum(bool(r.passed) for r in scenario_calls)
    failures: dict[str, FailedExpectation] = {}
    for record in scenario_calls:
        for kind in dict.fromkeys(v.expectation for v in record.verdicts if v.outcome != "pass"):
            verdict = next(v for v in record.verdicts if v.expectation == kind and v.outcome != "pass")
            where = f"{record.scenario}" + (f" turn {verdict.turn}" if verdict.turn else "")
            entry = failures.setdefault(
                kind,
                FailedExpectation(expectation=kind, calls=0, example=f"{where}: {verdict.outcome}: {verdict.detail}"),
            )
            entry.calls += 1
    calls = len(scenario_calls)
    return TaskSuccess(
        variant=variant,
        calls=calls,
        passed=passed,
        pass_rate=wilson_interval(passed, calls),
        cost_per_call_usd=sum(r.cost_usd for r in scenario_calls) / calls if calls else 0.0,
        judge_cost_usd=sum(v.cost_usd for r in scenario_calls for v in r.verdicts),
        failures=sorted(failures.values(), key=lambda f: -f.calls),
    )
