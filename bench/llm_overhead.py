"""What a task costs in model traffic: LLM calls and input tokens per plan step.

    python bench/llm_overhead.py

A task in words runs through the whole runtime with the scripted model, which answers as a
good model would: the plan (3 or 10 ``fs.write`` steps, each with a ``file_exists`` check, or
none), then a passing verdict for every judged step. Every request the runtime makes is kept
and sized as the real providers send it: the messages, plus the reply's JSON schema, which the
OpenAI and Anthropic providers put in the system prompt (``json_schema_instruction``).
Tokens are estimated as characters / 4 (no tokenizer is installed here; the same estimate on
both sides of any comparison).

Cases: 3 and 10 steps; verification ``llm-judge`` (every step judged by the model) and
``checks`` (deterministic checks only). Reported per case: LLM calls, input tokens, tokens per
plan step, and the plan request's size broken down (system prompt, tool list, schema).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tables import table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from trinity.config import Settings  # noqa: E402
from trinity.llm.scripted import ScriptedProvider  # noqa: E402
from trinity.llm.sdk import json_schema_instruction  # noqa: E402
from trinity.runtime import Runtime  # noqa: E402
from trinity.state import StopReason  # noqa: E402

CHARS_PER_TOKEN = 4


def plan(steps: int, checks: bool) -> dict[str, Any]:
    return {
        "rationale": "write the notes one file at a time",
        "steps": [
            {
                "id": f"note-{n}",
                "tool": "fs.write",
                "args": {"path": f"notes/{n}.txt", "content": f"note number {n}\n"},
                "expected": f"notes/{n}.txt exists",
                **({"checks": [{"file_exists": f"notes/{n}.txt"}]} if checks else {}),
            }
            for n in range(1, steps + 1)
        ],
    }


def tokens(request: Any) -> int:
    chars = sum(len(message.content) for message in request.messages)
    if request.json_schema is not None:
        chars += len(json_schema_instruction(request.json_schema))
    return chars // CHARS_PER_TOKEN


async def run_case(steps: int, verification: str) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp())
    verdict = json.dumps({"passed": True, "reason": "the file is there"})
    llm = ScriptedProvider(
        [
            {
                "match": {"purpose": "atlas.plan"},
                "text": json.dumps(plan(steps, verification == "checks")),
            },
            {"text": verdict, "repeat": True},
        ]
    )
    settings = Settings(database_url=str(folder / "t.db"), workspace=folder / "ws")
    runtime = Runtime(settings, llm=llm)
    try:
        request = runtime.prepare(
            f"Write {steps} numbered notes under notes/",
            model="scripted:x",
            verification=verification,  # type: ignore[arg-type]
        )
        state = await runtime.start(request)
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    first = llm.requests[0]
    system = first.messages[0].content
    tool_list = system[system.find("- fs.") :] if "- fs." in system else ""
    schema = len(json_schema_instruction(first.json_schema)) if first.json_schema else 0
    total = sum(tokens(r) for r in llm.requests)
    return {
        "calls": len(llm.requests),
        "tokens": total,
        "per_step": total / steps,
        "plan_tokens": tokens(first),
        "plan_system": len(system) // CHARS_PER_TOKEN,
        "plan_tools": len(tool_list) // CHARS_PER_TOKEN,
        "plan_schema": schema // CHARS_PER_TOKEN,
    }


def main() -> None:
    os.environ.pop("TRINITY_MODEL", None)
    rows = []
    for steps in (3, 10):
        for verification in ("llm-judge", "checks"):
            r = asyncio.run(run_case(steps, verification))
            rows.append(
                [
                    str(steps),
                    verification,
                    str(r["calls"]),
                    f"{r['tokens']:,}",
                    f"{r['per_step']:,.0f}",
                    f"{r['plan_tokens']:,}",
                    f"{r['plan_system']:,} / {r['plan_tools']:,} / {r['plan_schema']:,}",
                ]
            )
    header = [
        "steps",
        "verification",
        "LLM calls",
        "input tokens",
        "tokens / step",
        "plan request",
        "plan: system / of it tools / schema",
    ]
    print(table("Model traffic per task (tokens estimated as characters / 4)", header, rows))


if __name__ == "__main__":
    main()
