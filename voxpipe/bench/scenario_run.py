"""Playing one scenario on one deployment, and judging it: the result is a ``CallRecord`` with verdicts.

- ``mode: audio``: the caller's turns are spoken (offline TTS, or the scenario's WAV) and played in real time
  through the whole call (``simulate_call``: VAD, STT, turn-taking, LLM, TTS). A barge-in turn starts while
  the bot is still speaking, and the bot must fall silent soon after.
- ``mode: text``: the turns' words go straight to the deployment's LLM (``TextConversation``); no speech.
- ``caller:``: an LLM plays the caller, in text, turn by turn from its persona and goal.

The scenario's ``tools`` are added to the deployment for this call only (a mocked booking system, say). The
agent ending the call (``end_call``/``transfer``) ends the scripted caller too: later turns are never played.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from typing import Any

from voxpipe.bench import simulated_call
from voxpipe.bench.expectations import PlayedConversation, PlayedTurn, call_verdicts, turn_verdicts
from voxpipe.bench.judge import Judge
from voxpipe.bench.observed import AgentActions
from voxpipe.bench.scenario import Scenario, ScenarioTurn, SimulatedCaller
from voxpipe.bench.simulated_call import CallerTurn, CallResult
from voxpipe.bench.text_call import TextConversation
from voxpipe.config.loader import apply_overrides
from voxpipe.config.models import AgentConfig, Deployment, ServiceConfig
from voxpipe.pipeline.builder import CallContext
from voxpipe.pipeline.latency import NEW_REPLY_GAP_SECS, first_audible, last_audible
from voxpipe.providers.registry import default_registry
from voxpipe.records.model import CallError, CallRecord, TurnRecord, Verdict

HANG_UP = "HANG UP"
CALLER_INSTRUCTIONS = (
    "You are a caller on the phone with a business's voice agent. Stay in character. {persona} Your goal: {goal} "
    "Say one or two short sentences per turn, only your own words. When your goal is met or you give up, say "
    "goodbye and end your line with " + HANG_UP + "."
)


@dataclass
class ScenarioCall:
    """One scenario played once on one deployment: the record (labelled, with verdicts) and the conversation."""

    record: CallRecord
    conversation: PlayedConversation


def with_scenario_tools(deployment: Deployment, scenario: Scenario) -> Deployment:
    """The deployment with the scenario's tools added (a tool of the same name is replaced)."""
    if not scenario.tools:
        return deployment
    names = {tool.function_name for tool in scenario.tools}
    kept = [tool for tool in deployment.agent.tools if tool.function_name not in names]
    tools = [tool.model_dump(exclude_none=True) for tool in [*kept, *scenario.tools]]
    return apply_overrides(deployment, {"agent": {"tools": tools}}, source=f"scenario {scenario.name}")


async def play_scenario(
    scenario: Scenario,
    deployment: Deployment,
    judge: Judge | None,
    *,
    caller_llm: Deployment | None = None,
    settle_secs: float = 1.0,
    reply_timeout_secs: float = 20.0,
) -> ScenarioCall:
    """Play ``scenario`` on ``deployment`` and judge every expectation (``judge`` scores rubrics)."""
    started = time.monotonic()
    record = CallRecord.starting_now(deployment.name, deployment.mode, scenario=scenario.name)
    try:
        deployment = with_scenario_tools(deployment, scenario)
        if scenario.caller is not None:
            conversation = await _simulated_caller(scenario, deployment, caller_llm, record, reply_timeout_secs)
        elif scenario.mode == "text":
            conversation = await _text_turns(scenario, deployment, record, reply_timeout_secs)
        else:
            conversation = await _audio_turns(scenario, deployment, record, settle_secs, reply_timeout_secs)
    except Exception as exc:  # a failing provider is a measured outcome: every expectation is an error
        error = CallError(kind="exception", message=f"{type(exc).__name__}: {exc}", fatal=True)
        record.errors.append(error)
        record.verdicts = [Verdict(expectation="call", outcome="error", detail=error.summary())]
        return ScenarioCall(record, PlayedConversation("", [], [], "caller_hangup"))
    record.duration_secs = record.duration_secs or time.monotonic() - started
    for index, turn in enumerate(scenario.turns or [], 1):
        played = conversation.turns[index - 1] if index <= len(conversation.turns) else PlayedTurn(turn.say or "")
        record.verdicts += turn_verdicts(index, turn, played)
    record.verdicts += call_verdicts(scenario.expect, conversation)
    for rubric in [scenario.expect.judge] if isinstance(scenario.expect.judge, str) else scenario.expect.judge or []:
        if judge is None:
            verdict = Verdict(expectation="judge", outcome="error", detail=f"{rubric}: no judge configured")
        else:
            scored = await judge.score(rubric, conversation.transcript())
            detail = f"{rubric} — {scored.reason}"
            verdict = Verdict(expectation="judge", outcome=scored.outcome, detail=detail, cost_usd=scored.cost_usd)
        record.verdicts.append(verdict)
    return ScenarioCall(record, conversation)


def _ending(actions: AgentActions) -> str:
    return actions.ending.effect if actions.ending else "caller_hangup"


async def _text_turns(
    scenario: Scenario, deployment: Deployment, record: CallRecord, reply_timeout_secs: float
) -> PlayedConversation:
    agent, actions = _agent_in_text(deployment, reply_timeout_secs)
    turns: list[PlayedTurn] = []
    try:
        for scripted in scenario.turns or []:
            said = scripted.say or ""
            if actions.ending is not None:
                turns.append(PlayedTurn(said))
                continue
            turns.append(await _text_turn(agent, actions, said, record))
    finally:
        record.usage = await agent.close()
        record.errors += agent.errors
    return PlayedConversation(deployment.agent.greeting or "", turns, actions.tools, _ending(actions))


async def _audio_turns(
    scenario: Scenario, deployment: Deployment, record: CallRecord, settle_secs: float, reply_timeout_secs: float
) -> PlayedConversation:
    actions = AgentActions()
    result = await simulated_call.simulate_call(
        deployment,
        [_caller_turn(scenario, turn) for turn in scenario.turns or []],
        settle_secs=settle_secs,
        reply_timeout_secs=reply_timeout_secs,
        call=CallContext(on_effect=actions.on_effect),
        observers=[actions],
    )
    measured = result.record(call_id=record.call_id)
    record.turns, record.usage, record.duration_secs = measured.turns, measured.usage, measured.duration_secs
    record.errors += measured.errors
    record.fallbacks = measured.fallbacks
    turns = _played_turns(scenario, result, actions)
    return PlayedConversation(result.greeting, turns, actions.tools, _ending(actions))


def _caller_turn(scenario: Scenario, turn: ScenarioTurn) -> CallerTurn:
    spoken = (
        CallerTurn.from_wav(scenario.source.parent / turn.audio, turn.say)
        if turn.audio is not None
        else spoken_turn(turn.say or "")
    )
    barge_in = None if turn.barge_in_after_ms is None else turn.barge_in_after_ms / 1000
    return replace(spoken, barge_in_after_secs=barge_in)


@functools.cache
def spoken_turn(text: str) -> CallerTurn:
    """``text`` spoken by the offline TTS, once per process: every deployment and repeat hears the same audio."""
    return CallerTurn.from_text(text)


def _played_turns(scenario: Scenario, result: CallResult, actions: AgentActions) -> list[PlayedTurn]:
    """Each caller turn with what the bot answered between it and the next one (measured from the audio)."""
    starts = result.caller_turn_starts
    played = []
    for index, scripted in enumerate(scenario.turns or []):
        said = scripted.say or ""
        if index >= len(starts) or (actions.ending is not None and actions.ending.at < starts[index]):
            played.append(PlayedTurn(said))
            continue
        start, end = starts[index], starts[index + 1] if index + 1 < len(starts) else float("inf")
        answers = [turn for turn in result.turns if start <= turn.user_speech_end < end]
        turn = PlayedTurn(
            said,
            " ".join(answer.reply for answer in answers).strip(),
            answers[0].voice_to_voice_ms if answers else None,
            actions.tools_between(start, end),
            heard=" ".join(answer.heard for answer in answers).strip(),
        )
        if scripted.barge_in_after_ms is not None:
            turn.yielded_ms, turn.barge_in_problem = _yield_after_barge_in(result, start)
        played.append(turn)
    return played


def _yield_after_barge_in(result: CallResult, turn_start: float) -> tuple[float | None, str | None]:
    """Milliseconds from the caller's first sound of the turn to the end of the bot's speech it cut into."""
    speech_start = next(
        (
            at + offset
            for at, frame in result.caller_audio
            if at >= turn_start and (offset := first_audible(frame, result.audio.sample_rate_in)) is not None
        ),
        None,
    )
    if speech_start is None:
        return None, "the caller's barge-in turn has no audible speech"
    sounds = sorted(
        (chunk.started_at + start, chunk.started_at + (last_audible(chunk.audio, chunk.sample_rate) or start))
        for chunk in result.bot_audio
        if (start := first_audible(chunk.audio, chunk.sample_rate)) is not None
    )
    before = [sound for sound in sounds if sound[0] <= speech_start]
    if not before or speech_start - before[-1][1] > NEW_REPLY_GAP_SECS:
        return None, "the bot was not speaking when the caller began (it had finished: nothing to interrupt)"
    end = before[-1][1]
    for begin, finish in sounds[len(before) :]:
        if begin - end > NEW_REPLY_GAP_SECS:
            break
        end = max(end, finish)
    return round(max(0.0, end - speech_start) * 1000, 1), None


def _agent_in_text(deployment: Deployment, reply_timeout_secs: float) -> tuple[TextConversation, AgentActions]:
    """The deployment's LLM as a text conversation, observed for tool calls and the call's ending."""
    actions = AgentActions()
    call = CallContext(on_effect=actions.on_effect)
    return TextConversation(deployment, call=call, observers=[actions], reply_timeout_secs=reply_timeout_secs), actions


async def _text_turn(agent: TextConversation, actions: AgentActions, said: str, record: CallRecord) -> PlayedTurn:
    began = time.monotonic()
    reply = await agent.say(said)
    if reply.timed_out:
        record.errors.append(CallError(message=f"no complete answer within {agent.reply_timeout_secs:g} s"))
    record.turns.append(
        TurnRecord(index=len(record.turns) + 1, heard=said, reply=reply.text, llm_first_token_ms=reply.first_token_ms)
    )
    return PlayedTurn(said, reply.text, reply.first_token_ms, actions.tools_between(began, time.monotonic()))


async def _simulated_caller(
    scenario: Scenario,
    deployment: Deployment,
    caller_llm: Deployment | None,
    record: CallRecord,
    reply_timeout_secs: float,
) -> PlayedConversation:
    """An LLM plays the caller: it hears the agent's words and answers, until it hangs up or runs out of turns."""
    persona = scenario.caller
    if persona is None:
        raise ValueError(f"scenario {scenario.name} has no caller block")
    caller = TextConversation(_caller_deployment(persona, caller_llm), reply_timeout_secs=reply_timeout_secs)
    agent, actions = _agent_in_text(deployment, reply_timeout_secs)
    turns: list[PlayedTurn] = []
    heard = deployment.agent.greeting or "(the agent picks up and says nothing)"
    try:
        for _ in range(persona.max_turns):
            line = (await caller.say(heard)).text
            hangs_up = HANG_UP.lower() in line.lower()
            said = line[: line.lower().find(HANG_UP.lower())].strip() if hangs_up else line
            if said:
                turns.append(await _text_turn(agent, actions, said, record))
                heard = turns[-1].reply or "(silence)"
            if hangs_up or actions.ending is not None or not said:
                break
    finally:
        record.usage = await agent.close()
        await caller.close()  # the caller's LLM is the bench's cost, not the deployment's
        record.errors += agent.errors
    record.errors += [
        error.model_copy(update={"message": f"simulated caller: {error.message}"}) for error in caller.errors
    ]
    return PlayedConversation(deployment.agent.greeting or "", turns, actions.tools, _ending(actions))


def _caller_deployment(persona: SimulatedCaller, fallback: Deployment | None) -> Deployment:
    """A deployment whose agent is the caller: the persona's LLM (or the bench's judge LLM) with its prompt."""
    agent = AgentConfig(instructions=CALLER_INSTRUCTIONS.format(persona=persona.persona, goal=persona.goal))
    if persona.llm is not None:
        chain = [persona.llm]
    elif fallback is not None:
        chain = fallback.services("llm")
    else:
        raise ValueError("a simulated caller needs caller.llm or the bench's --judge LLM")
    base = fallback or Deployment(name="caller", agent=agent)
    llm = [service.model_copy(update={"options": _sampling(service, persona)}) for service in chain]
    return base.model_copy(update={"agent": agent, "llm": llm, "pricing": {}})


def _sampling(service: ServiceConfig, persona: SimulatedCaller) -> dict[str, Any]:
    """The service's options with the caller's ``temperature`` and ``seed``, where its provider takes them."""
    registered = default_registry().get("llm", service.provider)
    accepted = registered.provider.options.model_fields if registered else {}
    wanted = {"temperature": persona.temperature, "seed": persona.seed}
    return {**service.options, **{key: value for key, value in wanted.items() if key in accepted}}
