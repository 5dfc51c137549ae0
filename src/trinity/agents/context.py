"""What every agent gets: the LLM, the tools, the store, settings and the event emitter."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from trinity.config import Settings
from trinity.engine import StopRun
from trinity.errors import EngineError, LLMError, StructuredOutputError
from trinity.events import EventSink, LLMCall, LLMFailed, LLMRetry, LLMStreaming
from trinity.llm.base import LLMProvider, LLMRequest, LLMResponse, Message
from trinity.llm.pricing import PriceTable
from trinity.llm.structured import complete_structured
from trinity.state import RunState, StepSpec, StopReason
from trinity.store import Store
from trinity.tools.base import ToolProvider, ToolSpec

if TYPE_CHECKING:
    from trinity.tools.permissions import PermissionPolicy

T = TypeVar("T", bound=BaseModel)


@cache
def prompt(name: str) -> Template:
    """A prompt template from ``agents/prompts/<name>.md`` (``$placeholders``)."""
    text = resources.files("trinity.agents").joinpath("prompts", f"{name}.md").read_text("utf-8")
    return Template(text)


@dataclass
class AgentContext:
    tools: ToolProvider
    store: Store
    settings: Settings
    workspace: Path
    llm: LLMProvider | None = None
    emit: EventSink = lambda event: None
    permissions: PermissionPolicy | None = None
    """Tool permission policy Tetyana checks before each call; ``None`` allows every call."""
    prices: PriceTable = field(default_factory=PriceTable)
    """What LLM calls cost, for ``Usage.cost_usd`` and the cost budget."""

    def llm_attempt_timeout(self, state: RunState) -> float:
        """The time limit of one LLM attempt: the run's ``llm_timeout_s``, shortened so that
        every attempt, and the waits between them (one attempt's worth), fit in its node's time
        (``--node-timeout`` may be short for a run): a silent model then fails with its own
        error rather than the node's."""
        timeout = state.policy.llm_timeout_s
        node = state.policy.node_timeout_s
        if node is not None:
            timeout = min(timeout, node / (max(1, self.settings.llm_max_attempts) + 1))
        return timeout

    def spec(self, tool: str) -> ToolSpec | None:
        """A tool's spec, from a provider that can tell without waiting (one with a
        ``spec(name)`` method: the hub, the built-in tools); ``None`` otherwise."""
        lookup = getattr(self.tools, "spec", None)
        found: ToolSpec | None = lookup(tool) if lookup is not None else None
        return found

    def repeatable(self, step: StepSpec) -> bool:
        """Whether the step's call may be made again without doing more than once: its tool is
        idempotent (reads, a write of the same content) as far as the tool provider can say."""
        spec = self.spec(step.tool)
        return spec is not None and spec.repeatable(step.args)

    async def ask(
        self,
        state: RunState,
        purpose: str,
        system: str,
        user: str,
        schema: type[T],
        check: Callable[[T], None] | None = None,
    ) -> T:
        """Ask the LLM for a structured reply; counts tokens and cost, and enforces the token
        and cost budgets (after each call: the last call may take the run a little over)."""
        if self.llm is None:
            raise EngineError(f"{purpose} needs an LLM, but this run has no model")
        node = purpose.split(".")[0]
        own = self.settings.for_model(state.model or self.llm.model)
        request = LLMRequest(
            messages=[Message("system", system), Message("user", user)],
            purpose=purpose,
            timeout_s=self.llm_attempt_timeout(state),
            max_tokens=own.max_tokens,
            on_progress=lambda chars, elapsed_s: self.emit(
                LLMStreaming(node=node, purpose=purpose, chars=chars, elapsed_s=round(elapsed_s, 3))
            ),
            on_retry=lambda attempt, reason, wait_s: self.emit(
                LLMRetry(
                    node=node,
                    purpose=purpose,
                    attempt=attempt,
                    reason=reason,
                    wait_s=round(wait_s, 3),
                )
            ),
        )
        price = self.prices.lookup(state.model or self.llm.model)

        def account(response: LLMResponse) -> None:
            usage = state.usage
            usage.llm_calls += 1
            usage.input_tokens += response.input_tokens
            usage.output_tokens += response.output_tokens
            usage.estimated_calls += response.usage_estimated
            usage.llm_seconds += response.latency_s
            cost = 0.0
            if price is not None:
                cost = price.cost(response.input_tokens, response.output_tokens)
                usage.cost_usd += cost
            else:
                usage.priced = False
            if self.settings.trace_content:
                from trinity.observability.tracing import note_content

                shown = [(str(message.role), message.content) for message in request.messages]
                note_content(state.run_id, shown, response.text)
            self.emit(
                LLMCall(
                    node=node,
                    purpose=purpose,
                    model=response.model,
                    input_tokens=response.input_tokens,
                    output_tokens=response.output_tokens,
                    latency_s=round(response.latency_s, 4),
                    attempts=response.attempts,
                    cost_usd=round(cost, 6) if price is not None else None,
                    finish_reason="length" if response.cut_off else "stop",
                )
            )
            budget = state.policy.token_budget
            if budget is not None and usage.total_tokens > budget:
                raise StopRun(
                    StopReason.TOKEN_BUDGET,
                    f"token budget of {budget} used ({usage.total_tokens} tokens)",
                )
            dollars = state.policy.cost_budget_usd
            if dollars is not None and usage.cost_usd > dollars:
                raise StopRun(
                    StopReason.COST_BUDGET,
                    f"cost budget of ${dollars:g} used (${usage.cost_usd:.4f} over "
                    f"{usage.llm_calls} LLM calls)",
                )

        try:
            return await complete_structured(
                self.llm,
                request,
                schema,
                max_repairs=self.settings.structured_max_repairs,
                max_tokens_ceiling=own.max_tokens_ceiling,
                check=check,
                on_response=account,
            )
        except StructuredOutputError:
            raise  # its replies were counted as they came
        except LLMError as exc:
            # Counted and told, so a run that only ever met a dead server does not report
            # "LLM calls 0" with an empty trace.
            state.usage.llm_calls += 1
            state.usage.llm_errors += 1
            self.emit(
                LLMFailed(
                    node=node,
                    purpose=purpose,
                    model=state.model or self.llm.model,
                    attempts=exc.attempts,
                    error=str(exc),
                )
            )
            raise


PROMPT_ARGS_CHARS = 2_000
"""The most of a step's arguments a prompt shows (a 5 MB ``fs.write`` is not sent to the
judge and the planner again and again)."""


def shown_args(args: dict[str, Any], limit: int = PROMPT_ARGS_CHARS) -> str:
    """A step's arguments as a prompt shows them: JSON, cut after ``limit`` characters."""
    text = json.dumps(args, ensure_ascii=False, default=str, separators=(",", ":"))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[+{len(text) - limit} characters not shown]"


def describe_tools(specs: list[ToolSpec], policy: PermissionPolicy | None = None) -> str:
    """The tool list for a planner prompt. With a permission policy, a tool every call of which
    is denied is left out, and rules that deny or ask about some calls are spelled out, so the
    plan steers clear of them instead of learning by failing."""
    lines = []
    for spec in specs:
        notes = _policy_notes(spec.name, policy)
        if notes is None:
            continue
        lines.append(
            f"- {spec.name}: {spec.description.rstrip('.')}. Arguments: {signature(spec)}"
            + "".join(f" [{note}]" for note in notes)
        )
    return "\n".join(lines)


_ARG_NOTE_CHARS = 120


def signature(spec: ToolSpec) -> str:
    """A tool's arguments as a short signature rather than its whole JSON schema (a quarter
    of the tokens): ``(path: string, content: string, append?: boolean = false)``, each with
    its description when it has a short one. Argument checks still use the full schema."""
    schema = spec.input_schema
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return json.dumps(schema)
    required = set(schema.get("required", []))
    defs = schema.get("$defs", {})
    parts = []
    for name, prop in properties.items():
        prop = _resolve(prop, defs)
        text = f"{name}{'' if name in required else '?'}: {_type_name(prop, defs)}"
        default = prop.get("default")
        if default is not None and name not in required:
            text += f" = {json.dumps(default)}"
        note = str(prop.get("description") or "")
        if note and len(note) <= _ARG_NOTE_CHARS:
            text += f" ({note.rstrip('.')})"
        parts.append(text)
    return f"({', '.join(parts)})"


def _resolve(prop: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(prop, dict) and isinstance(prop.get("$ref"), str):
        target = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
        return {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop if isinstance(prop, dict) else {}


def _type_name(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(json.dumps(value) for value in prop["enum"])
    branches = prop.get("anyOf") or prop.get("oneOf")
    if isinstance(branches, list):
        names = [_type_name(_resolve(b, defs), defs) for b in branches]
        return "|".join(name for name in dict.fromkeys(names) if name != "null") or "null"
    kind = prop.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind if k != "null")
    if kind == "array":
        return f"{_type_name(_resolve(prop.get('items', {}), defs), defs)}[]"
    return str(kind or "any")


def _policy_notes(tool: str, policy: PermissionPolicy | None) -> list[str] | None:
    """Notes on the policy's rules for ``tool``; ``None`` when every call of it is denied."""
    if policy is None:
        return []
    notes = []
    for rule in policy.rules:
        if not fnmatch.fnmatchcase(tool, rule.tool) or rule.action.value == "allow":
            continue
        if not rule.args and rule.action.value == "deny":
            return None
        verb = "denied" if rule.action.value == "deny" else "needs a person's approval"
        when = f" when {rule.describe().removeprefix(rule.tool).strip()}" if rule.args else ""
        why = f" ({rule.reason})" if rule.reason else ""
        notes.append(f"{verb}{when}{why}")
    if not notes and policy.default.value != "allow":
        notes.append(
            "denied unless a rule allows it"
            if policy.default.value == "deny"
            else "needs a person's approval unless a rule allows it"
        )
    return notes
