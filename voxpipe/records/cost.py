"""Cost from reported usage and price tables.

pipecat reports LLM usage as ``prompt_tokens`` / ``completion_tokens`` with cache and audio counts beside
them. Whether ``prompt_tokens`` already includes cached tokens depends on the vendor (see
``Provider.prompt_tokens_include_cached``), so usage is first split into disjoint billing buckets and each
bucket is priced once.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipecat.observers.service_metrics_observer import ServiceUsageRecord

from voxpipe.providers.spec import Prices, Provider
from voxpipe.records.model import Usage

MILLION = 1_000_000


def add_usage(usage: Usage, record: ServiceUsageRecord, prompt_tokens_include_cached: bool) -> None:
    """Add one pipecat usage record to ``usage``, split into billing buckets."""
    usage.audio_seconds += record.audio_seconds or 0.0
    usage.characters += record.characters or 0
    if record.prompt_tokens is None:
        return
    cached_audio = record.cache_read_input_audio_tokens or 0
    cached_text = (record.cache_read_input_tokens or 0) - cached_audio
    audio_in = record.input_audio_tokens or 0
    text_in = record.prompt_tokens - audio_in
    if prompt_tokens_include_cached:
        text_in -= cached_text
        audio_in -= cached_audio
    audio_out = record.output_audio_tokens or 0
    usage.text_input_tokens += max(text_in, 0)
    usage.cached_text_input_tokens += cached_text
    usage.audio_input_tokens += max(audio_in, 0)
    usage.cached_audio_input_tokens += cached_audio
    usage.text_output_tokens += (record.completion_tokens or 0) - audio_out
    usage.audio_output_tokens += audio_out


def prices_for(provider: Provider, model: str | None, overrides: Mapping[str, Prices]) -> Prices | None:
    """A deployment's ``pricing`` override (``provider/model`` or ``provider``), else the plugin's prices."""
    return overrides.get(f"{provider.name}/{model}") or overrides.get(provider.name) or provider.prices_for(model)


def price(usage: Usage, prices: Prices | None) -> float:
    """US dollars for ``usage`` at ``prices``; a bucket with no price costs nothing (e.g. a local model).

    Cached tokens without a cached price are billed at the full input price.
    """
    if prices is None:
        return 0.0

    def rate(value: float | None, fallback: float | None = None) -> float:
        return value if value is not None else (fallback or 0.0)

    audio_in_rate = rate(prices.per_million_audio_input_tokens)
    return (
        usage.audio_seconds / 60 * rate(prices.per_audio_minute)
        + usage.characters / 1000 * rate(prices.per_thousand_characters)
        + usage.text_input_tokens / MILLION * rate(prices.per_million_input_tokens)
        + usage.cached_text_input_tokens
        / MILLION
        * rate(prices.per_million_cached_input_tokens, prices.per_million_input_tokens)
        + usage.audio_input_tokens / MILLION * audio_in_rate
        + usage.cached_audio_input_tokens / MILLION * rate(prices.per_million_cached_audio_input_tokens, audio_in_rate)
        + usage.text_output_tokens / MILLION * rate(prices.per_million_output_tokens)
        + usage.audio_output_tokens / MILLION * rate(prices.per_million_audio_output_tokens)
    )
