"""The LLM judge: scores a call's transcript against a rubric written in a scenario (``expect.judge``).

The judge is the ``llm`` role of a deployment file (``voxpipe bench --judge FILE``; by default the offline
``judge-offline.yaml``, which needs no keys), so any LLM provider of the registry can judge, with its keys
from the environment and its own prices. It must answer ``PASS: reason`` or ``FAIL: reason``; anything else,
or no answer at all, is an ``error`` verdict, never a pass. What judging cost is kept on the verdict, apart
from the call's own cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from voxpipe.bench.text_call import TextConversation
from voxpipe.config.models import AgentConfig, Deployment

DEFAULT_JUDGE = Path(__file__).resolve().parent.parent / "configs" / "judge-offline.yaml"
INSTRUCTIONS = (
    "You grade a phone call between a caller and an agent against one rubric. Read the call, then answer on "
    "one line: PASS or FAIL, a colon, and a short reason. PASS only if the call meets the rubric."
)
VERDICT = re.compile(r"^\W*(pass|fail)\b[\W_]*(.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class JudgeVerdict:
    """``outcome`` pass, fail or error; ``reason`` the judge's words (or why there is no verdict)."""

    outcome: str
    reason: str
    cost_usd: float


def parse_verdict(answer: str) -> tuple[str, str]:
    """``("pass" | "fail", reason)`` from the judge's answer, or ``("error", why)``."""
    match = VERDICT.match(answer.strip())
    if match is None:
        return "error", f'no verdict in the judge\'s answer: "{answer.strip()}"' if answer.strip() else "no answer"
    return match.group(1).lower(), match.group(2).strip()


class Judge:
    """Scores rubrics with the ``llm`` of ``deployment`` (its agent section is replaced by the judge's)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment.model_copy(update={"agent": AgentConfig(instructions=INSTRUCTIONS)})

    async def score(self, rubric: str, transcript: str) -> JudgeVerdict:
        conversation = TextConversation(self.deployment)
        try:
            reply = await conversation.say(f"Rubric: {rubric} The call: {transcript}")
        except Exception as exc:  # a failing judge is an error verdict, never the end of the bench
            usage = await conversation.close()
            return JudgeVerdict("error", f"the judge failed: {type(exc).__name__}: {exc}", _cost(usage))
        usage = await conversation.close()
        outcome, reason = parse_verdict(reply.text)
        if outcome == "error" and conversation.errors:
            reason += f" ({conversation.errors[0].summary()})"
        return JudgeVerdict(outcome, reason, _cost(usage))


def _cost(usage: list) -> float:
    return sum(u.cost_usd for u in usage)
