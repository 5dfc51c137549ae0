"""Lenient JSON on hostile model replies: Trinity's ``extract_json`` beside PyPI ``json-repair``.

    .venv/bin/pip install json-repair
    .venv/bin/python bench/json_parsers.py        # about 35 s

The corpus below holds 63 replies real models send when asked for JSON: code fences with and
without prose, ``<think>`` reasoning, trailing commas, single, typographic and missing quotes,
Python literals, comments, unquoted keys, raw newlines, NULs and lone surrogates, a plan followed
by a corrected plan, braces in the prose, markdown tables, HTML pages, refusals, replies cut off
at ``max_tokens``, 100 levels of nesting, 1 MB replies and the pathological replies of
``tests/test_structured.py``. Each holds the value a careful reader would take from it, or
"expect failure" when nothing should be accepted: no JSON at all, or a reply cut off inside its
object (completing it would invent data: a ``"content": "hel`` cut off becomes a file that
says ``hel``; a missing last brace cannot tell that no more keys were coming). A reply with a
first try and a correction expects the correction; a format example before the answer expects
the answer.

Two levels are measured:

* **Extraction.** ``extract_json(reply)`` beside ``json_repair.loads(reply)`` (defaults: the
  ``json.loads`` fast path first, then the repair parser; ``strict=True`` is a third row).
  Outcomes: *correct* (the expected value, or a refusal where failure is expected), *wrong
  accepted* (a value other than the expected one, or any value where failure is expected: the
  dangerous outcome, as nothing downstream knows it was made up), *refused* (nothing accepted
  although the reply held an answer). The rule for "accepted" is the same for both parsers: a
  dict or a list. Anything else counts as a refusal, since a structured reply is always an
  object (a top-level list can still be wrapped into one): an exception of any kind (``json_repair``
  raises ``RecursionError`` and ``ValueError``), ``json_repair``'s documented "nothing found"
  result ``""``, and any other scalar (``extract_json('"text"')`` returns the string, which no
  caller can use either). Values are compared as sorted ``json.dumps`` text, so ``true`` is not
  ``1``.
* **Validation**, for the cases whose answer is a plan or a verdict: what the runtime uses.
  ``parse_structured(reply, Model)`` beside ``json_repair.loads`` followed by the same schema
  forgiveness ``parse_structured`` applies (``_reshape``, ``_coerce``, ``_clean``) and
  ``Model.model_validate``, i.e. json-repair dropped in for ``extract_json``; and
  ``json_repair.loads(reply, schema=Model)``, its own (beta) schema-guided repair. The models are
  the planner's ``PlanDraft`` and the judge's ``JudgeReply``. ``parse_structured`` tries up to
  8 JSON values of a reply until one validates; json-repair gives one value (or a list of all
  top-level values when there are several).

Options of ``json_repair.loads`` considered: ``skip_json_loads`` only skips the stdlib fast path
(its docs warn it may then "repair" valid JSON), so the default is used; ``stream_stable`` keeps
the repair of a growing stream stable, it does not refuse a cut-off reply; ``logging`` returns
the repairs made, which a caller could use to refuse some of them (not done here: a policy
on top of the library is new code, and its log does not say "cut off"); ``strict=True``
is measured, and refuses every fenced reply ("multiple top-level elements").

Time: each parser on each case, repeated until 0.2 s is spent (at most 200 runs, at least 1),
median and worst call in µs (``time.perf_counter``). A last table shows how json-repair's time
grows on two of the pathological replies, each size run once. Reported besides: the lines of
code each needs (``wc -l`` of ``lexer.py`` + ``lenient_json.py``; every ``.py`` file of the
installed ``json_repair`` package).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import json_repair
from pydantic import BaseModel

from tables import table
from trinity.agents.atlas import PlanDraft
from trinity.agents.grisha import JudgeReply
from trinity.llm.structured import _clean, extract_json, parse_structured
from trinity.llm.structured.coercion import _coerce, _reshape, _schema_of

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

BUDGET_S = 0.2
MAX_RUNS = 200
FAIL: Any = object()
"""The expected value of a reply from which no object should be accepted."""

# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------

PLAN = {
    "rationale": "write the greeting",
    "steps": [
        {
            "id": "greet",
            "tool": "fs.write",
            "args": {"path": "hello.txt", "content": "hello"},
        }
    ],
}
PLAN_SHELL = {
    "rationale": "write the greeting",
    "steps": [{"id": "greet", "tool": "shell.run", "args": {"command": "echo hello > hello.txt"}}],
}
PLAN_JSON = json.dumps(PLAN, indent=2)
VERDICT = {"passed": True, "reason": "hello.txt says hello"}
VERDICT_JSON = json.dumps(VERDICT)
FAILED = {"passed": False, "reason": "hello.txt is empty"}
TWO_LINES = {
    "rationale": "two lines",
    "steps": [
        {"id": "w", "tool": "fs.write", "args": {"path": "a.txt", "content": "line 1\nline 2"}}
    ],
}


def big_plan(content_chars: int) -> dict[str, Any]:
    args = {"path": "big.txt", "content": "x" * content_chars}
    return {
        "rationale": "write a big file",
        "steps": [{"id": "big", "tool": "fs.write", "args": args}],
    }


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


PLAN_1MB = big_plan(999_800)  # with its fence and prose, just under extract_json's 1,000,000
PLAN_1MB_REPLY = f"Here is the plan:\n```json\n{json.dumps(PLAN_1MB)}\n```\n"
PLAN_HUGE = big_plan(1_100_000)
DEEP = nested(100)

NAMES: list[tuple[str, Any]] = [
    ("PLAN", PLAN),
    ("PLAN_SHELL", PLAN_SHELL),
    ("VERDICT", VERDICT),
    ("FAILED", FAILED),
    ("TWO_LINES", TWO_LINES),
    ("PLAN_1MB", PLAN_1MB),
    ("PLAN_1.1MB", PLAN_HUGE),
    ("DEEP_100", DEEP),
]
"""Values shown by name in the tables."""


@dataclass
class Case:
    name: str
    reply: str
    expected: Any
    model: type[BaseModel] | None = None


def corpus() -> list[Case]:
    p, v = PlanDraft, JudgeReply
    return [
        # -- wrapping: fences, prose, reasoning, several values
        Case("clean JSON", PLAN_JSON, PLAN, p),
        Case("json fence", f"```json\n{PLAN_JSON}\n```", PLAN, p),
        Case("bare fence + prose", f"Here is the plan:\n\n```\n{PLAN_JSON}\n```\n\nAsk!", PLAN, p),
        Case("fence never closed", f"```json\n{PLAN_JSON}\n", PLAN, p),
        Case("prose around, no fence", f"Sure! The plan:\n{PLAN_JSON}\nHope it helps.", PLAN, p),
        Case("fence inline in prose", f"Sure. ```json\n{VERDICT_JSON}\n``` Done.", VERDICT, v),
        Case("'json' label, no fence", f"json\n{VERDICT_JSON}", VERDICT, v),
        Case(
            "fence, then bash fence with {a,b}",
            f"```json\n{PLAN_JSON}\n```\nCheck it with:\n```bash\n"
            'for f in {a,b}.txt; do cat "$f"; done\n```',
            PLAN,
            p,
        ),
        Case(
            "braces in prose before",
            "I'll follow the {id, tool, args} shape; paths are relative to {workspace}.\n\n"
            + PLAN_JSON,
            PLAN,
            p,
        ),
        Case(
            "braces in prose after",
            PLAN_JSON + "\n\nNote: the path may also be written {workspace}/hello.txt.",
            PLAN,
            p,
        ),
        Case(
            "format example, then fenced answer",
            'You asked for {"passed": bool, "reason": str}. Here it is:\n```json\n'
            + VERDICT_JSON
            + "\n```",
            VERDICT,
            v,
        ),
        Case(
            "step example, then plan (no fence)",
            'Each step looks like {"id": "...", "tool": "..."}. The plan:\n' + PLAN_JSON,
            PLAN,
            p,
        ),
        Case(
            "markdown links, [1], then plan",
            "See [the docs](https://example.com/docs) and [1]: it's simple.\n" + PLAN_JSON,
            PLAN,
            p,
        ),
        Case(
            "<think> prose, then JSON",
            "<think>\nThe user wants hello.txt to say hello; fs.write takes {path, content}.\n"
            "</think>\n\n" + PLAN_JSON,
            PLAN,
            p,
        ),
        Case(
            "<think> with a draft, then JSON",
            '<think>\nFirst guess: {"passed": false, "reason": "not checked yet"}. But the '
            "output shows hello, so it passes.\n</think>\n" + VERDICT_JSON,
            VERDICT,
            v,
        ),
        Case(
            "plan, then corrected plan",
            f"Plan:\n```json\n{json.dumps(PLAN_SHELL, indent=2)}\n```\nWait: files must not be "
            f"written through the shell. Corrected plan:\n```json\n{PLAN_JSON}\n```",
            PLAN,
            p,
        ),
        Case(
            "verdict, then 'Actually' verdict",
            '{"passed": true, "reason": "looks fine"}\n\nActually, the file is empty. '
            "Corrected:\n" + json.dumps(FAILED),
            FAILED,
            v,
        ),
        Case("top-level array", "Steps:\n" + json.dumps(PLAN["steps"]), PLAN["steps"]),
        # -- syntax slips
        Case(
            "trailing commas",
            '{\n  "rationale": "write the greeting",\n  "steps": [\n    {"id": "greet", "tool": '
            '"fs.write", "args": {"path": "hello.txt", "content": "hello",},},\n  ],\n}',
            PLAN,
            p,
        ),
        Case(
            "Python repr (print(dict))",
            repr({"passed": True, "reason": "the file's content is hello", "detail": None}),
            {"passed": True, "reason": "the file's content is hello", "detail": None},
            v,
        ),
        Case(
            "single quotes, apostrophe inside",
            "{'passed': true, 'reason': 'it's there and says hello'}",
            {"passed": True, "reason": "it's there and says hello"},
            v,
        ),
        Case(
            "typographic quotes",
            "{\u201cpassed\u201d: true, \u201creason\u201d: \u201cit says \u2018hello\u2019\u201d}",
            {"passed": True, "reason": "it says \u2018hello\u2019"},
            v,
        ),
        Case(
            "Python True/None",
            '{"passed": True, "reason": "ok", "detail": None}',
            {"passed": True, "reason": "ok", "detail": None},
            v,
        ),
        Case(
            "// and /* */ comments",
            '{\n  // verdict\n  "passed": true, /* checked twice */\n'
            '  "reason": "see http://example.com/*log*/"\n}',
            {"passed": True, "reason": "see http://example.com/*log*/"},
            v,
        ),
        Case(
            "# comments",
            '{\n  "passed": true,  # the file exists\n  "reason": "it says hello"\n}',
            {"passed": True, "reason": "it says hello"},
            v,
        ),
        Case(
            "unquoted keys",
            '{passed: true, reason: "it says hello"}',
            {"passed": True, "reason": "it says hello"},
            v,
        ),
        Case(
            "raw newline in a string",
            '{"rationale": "two lines", "steps": [{"id": "w", "tool": "fs.write", "args": '
            '{"path": "a.txt", "content": "line 1\nline 2"}}]}',
            TWO_LINES,
            p,
        ),
        Case(
            "unescaped quotes in a string",
            '{"passed": true, "reason": "the file says "hello" as asked"}',
            {"passed": True, "reason": 'the file says "hello" as asked'},
            v,
        ),
        Case(
            "Windows path, bad escapes",
            r'{"passed": true, "reason": "wrote C:\Users\dev\out.txt"}',
            {"passed": True, "reason": r"wrote C:\Users\dev\out.txt"},
            v,
        ),
        Case(
            "missing comma",
            '{"passed": true\n "reason": "it says hello"}',
            {"passed": True, "reason": "it says hello"},
            v,
        ),
        Case("byte-order mark", "\ufeff" + VERDICT_JSON, VERDICT, v),
        Case(
            "numbers, big int",
            '{"passed": true, "reason": "ok", "score": -1.5e3, "n": 0, '
            '"big": 12345678901234567890}',
            {"passed": True, "reason": "ok", "score": -1500.0, "n": 0, "big": 12345678901234567890},
            v,
        ),
        Case(
            "non-Latin text, emoji",
            '{"passed": true, "reason": "\u6587\u4ef6\u5185\u5bb9 hello \u2713 \U0001f600"}',
            {"passed": True, "reason": "\u6587\u4ef6\u5185\u5bb9 hello \u2713 \U0001f600"},
            v,
        ),
        Case(
            "NUL before, \\u0000 \\ud83d escapes",
            'note \x00 {"passed": true, "reason": "hello \\ud83d \\u0000 end"}',
            {"passed": True, "reason": "hello \ud83d \x00 end"},
            v,
        ),
        Case(
            "raw NUL in a string",
            '{"passed": true, "reason": "a\x00b"}',
            {"passed": True, "reason": "a\x00b"},
            v,
        ),
        Case(
            "raw lone surrogate in a string",
            '{"passed": true, "reason": "a\ud800b"}',
            {"passed": True, "reason": "a\ud800b"},
            v,
        ),
        # -- no answer to take: prose, pages, placeholders, other formats
        Case("empty reply", "", FAIL, v),
        Case("whitespace only", "\n\n  \n", FAIL, v),
        Case("prose only", "The file hello.txt now contains hello, so the step passed.", FAIL, v),
        Case("refusal", "I'm sorry, but I can't help with that request.", FAIL, p),
        Case(
            "HTML login page",
            "<html><head><title>Sign in</title></head><body><h1>Portal login</h1></body></html>",
            FAIL,
            p,
        ),
        Case(
            "HTML page with a script object",
            '<html><head><script>window.config = {user: "guest", retries: 3};</script></head>'
            "<body><h1>Portal login</h1></body></html>",
            FAIL,
            v,
        ),
        Case(
            "markdown table",
            "| check | result |\n|---|---|\n| hello.txt exists | yes |\n| says hello | yes |",
            FAIL,
            v,
        ),
        Case(
            "markdown checklist [x]",
            "- [x] wrote hello.txt\n- [x] checked its content\n- [ ] nothing else to do",
            FAIL,
            v,
        ),
        Case("YAML instead of JSON", "passed: true\nreason: it says hello", FAIL, v),
        Case(
            "'...' placeholder for the steps",
            '{"rationale": "write the greeting", "steps": [...]}',
            FAIL,
            p,
        ),
        Case("value left out", '{"passed": , "reason": "it says hello"}', FAIL, v),
        # -- cut off at max_tokens
        Case(
            "cut off in a tool name",
            '{"rationale": "greet twice", "steps": [{"id": "a", "tool": "fs.write", "args": '
            '{"path": "a.txt", "content": "hello"}}, {"id": "b", "tool": "fs.wr',
            FAIL,
            p,
        ),
        Case(
            "cut off in file content",
            '{"rationale": "write the greeting", "steps": [{"id": "greet", "tool": "fs.write", '
            '"args": {"path": "hello.txt", "content": "hel',
            FAIL,
            p,
        ),
        Case(
            "cut off in a number",
            '{"rationale": "wait, then write", "steps": [{"id": "wait", "tool": "shell.run", '
            '"args": {"command": "sleep 1", "timeout_s": 12',
            FAIL,
            p,
        ),
        Case("cut off in a literal", '{"reason": "3 of 4 checks hold", "passed": tr', FAIL, v),
        Case("cut off after a key", '{"passed": true, "reason":', FAIL, v),
        Case(
            "cut off: only '}' missing", '{"passed": false, "reason": "hello.txt is empty"', FAIL, v
        ),
        Case("cut off inside a fence", "```json\n" + PLAN_JSON[: len(PLAN_JSON) * 2 // 3], FAIL, p),
        # -- size and depth
        Case("100 levels deep", f"Result: {json.dumps(DEEP)} (as asked)", DEEP),
        Case("'[' x 100,000", "[" * 100_000, FAIL),
        Case("1 MB plan in a fence", PLAN_1MB_REPLY, PLAN_1MB, p),
        Case("1.1 MB plan, clean JSON", json.dumps(PLAN_HUGE), PLAN_HUGE, p),
        Case("1 MiB of prose", "not json at all " * 65_536, FAIL, v),
        Case("1 MB markdown checklist", "- [x] step done\n" * 62_500, FAIL, v),
        Case("'{' x 20,000", "{" * 20_000, FAIL, p),
        Case('"[\'" x 3,000', "['" * 3_000, FAIL, p),
        Case("'```\\n{\\n' x 1,000", "```\n{\n" * 1_000, FAIL, p),
    ]


# --------------------------------------------------------------------------------------------
# Running and judging
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    """``correct``, ``wrong`` (a wrong value accepted) or ``refused`` (an answer missed)."""
    shown: str
    median_us: float = 0.0
    worst_us: float = 0.0


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def same(value: Any, expected: Any) -> bool:
    try:
        return canonical(value) == canonical(expected)
    except (TypeError, ValueError, RecursionError):
        return bool(value == expected)


def short(value: Any, limit: int = 44) -> str:
    for name, known in NAMES:
        if same(value, known):
            return name
    try:
        text = canonical(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def call(fn: Callable[[str], Any], reply: str) -> tuple[bool, Any]:
    try:
        return True, fn(reply)
    except Exception as exc:  # every failure is a refusal; its type is shown
        return False, exc


def timed(fn: Callable[[str], Any], reply: str) -> tuple[bool, Any, float, float]:
    """The first call's result, and the median and worst time (µs) of all calls."""
    times: list[float] = []
    first: tuple[bool, Any] | None = None
    while True:
        started = time.perf_counter()
        result = call(fn, reply)
        times.append(time.perf_counter() - started)
        first = first or result
        if sum(times) >= BUDGET_S or len(times) >= MAX_RUNS:
            break
    return *first, statistics.median(times) * 1e6, max(times) * 1e6


def judge(ok: bool, value: Any, expected: Any) -> Outcome:
    """Sort one result into correct / wrong accepted / refused (see the module docstring)."""
    accepted = ok and isinstance(value, dict | list | BaseModel)
    if not accepted:
        why = type(value).__name__ if not ok else short(value)
        if expected is FAIL:
            return Outcome("correct", f"ok: refused ({why})")
        return Outcome("refused", f"missed: refused ({why})")
    if isinstance(value, BaseModel):
        right = value == expected
        value = value.model_dump()
    else:
        right = same(value, expected)
    if expected is not FAIL and right:
        return Outcome("correct", "ok")
    return Outcome("wrong", f"WRONG: {short(value)}")


def run_extraction(case: Case, fn: Callable[[str], Any]) -> Outcome:
    ok, value, median_us, worst_us = timed(fn, case.reply)
    outcome = judge(ok, value, case.expected)
    outcome.median_us, outcome.worst_us = median_us, worst_us
    return outcome


def repaired_then_validated(model: type[BaseModel]) -> Callable[[str], Any]:
    """json-repair in place of extract_json, with parse_structured's forgiveness kept."""
    schema = _schema_of(model)
    defs = schema.get("$defs", {})

    def parse(reply: str) -> BaseModel:
        value = json_repair.loads(reply)
        if not isinstance(value, dict | list):
            raise ValueError(f"json_repair returned {short(value)}")
        return model.model_validate(_clean(_coerce(_reshape(value, schema), schema, defs)))

    return parse


def schema_repaired(model: type[BaseModel]) -> Callable[[str], Any]:
    """json-repair's own schema-guided repair (beta), then the model."""

    def parse(reply: str) -> BaseModel:
        value = json_repair.loads(reply, schema=model)
        if not isinstance(value, dict | list):
            raise ValueError(f"json_repair returned {short(value)}")
        return model.model_validate(_clean(value))

    return parse


def run_validation(case: Case, fn: Callable[[str], Any]) -> Outcome:
    assert case.model is not None
    expected = FAIL if case.expected is FAIL else case.model.model_validate(_clean(case.expected))
    ok, value = call(fn, case.reply)
    return judge(ok, value, expected)


EXTRACTORS: list[tuple[str, Callable[[str], Any]]] = [
    ("extract_json", extract_json),
    ("json_repair.loads", json_repair.loads),
    ("json_repair.loads(strict=True)", lambda reply: json_repair.loads(reply, strict=True)),
]


def validators(model: type[BaseModel]) -> list[tuple[str, Callable[[str], Any]]]:
    return [
        ("parse_structured", lambda reply: parse_structured(reply, model)),
        ("json_repair.loads + coercion + model", repaired_then_validated(model)),
        ("json_repair.loads(schema=Model) + model", schema_repaired(model)),
    ]


def summary(title: str, names: list[str], results: list[list[Outcome]], fails: int) -> str:
    rows = []
    for index, name in enumerate(names):
        column = [row[index] for row in results]
        count = {kind: sum(o.kind == kind for o in column) for kind in ("correct", "wrong")}
        refused = sum(o.kind == "refused" for o in column)
        fail_ok = sum(o.shown.startswith("ok: refused") for o in column)
        row = [
            name,
            f"{count['correct']}/{len(column)}",
            str(count["wrong"]),
            str(refused),
            f"{fail_ok}/{fails}",
        ]
        if any(o.worst_us for o in column):
            median = statistics.median(o.median_us for o in column)
            row += [f"{median:,.0f}", f"{max(o.worst_us for o in column):,.0f}"]
        rows.append(row)
    header = ["parser", "correct", "wrong accepted", "refused (answer missed)", "failures refused"]
    if len(rows[0]) > len(header):
        header += ["median µs", "worst µs"]
    return table(title, header, rows)


def growth() -> str:
    """json-repair's time as two pathological replies grow (one run per size)."""
    rows = []
    for pattern, counts in (("['", (1_000, 2_000, 4_000)), ("{", (5_000, 10_000, 20_000))):
        for count in counts:
            reply = pattern * count
            timings = []
            for fn in (extract_json, json_repair.loads):
                started = time.perf_counter()
                call(fn, reply)
                timings.append(time.perf_counter() - started)
            rows.append(
                [
                    f"{pattern!r} x {count:,}",
                    f"{len(reply):,}",
                    f"{timings[0] * 1e3:,.1f}",
                    f"{timings[1] * 1e3:,.0f}",
                ]
            )
    header = ["reply", "chars", "extract_json ms", "json_repair ms"]
    return table("Growth on pathological replies (one run each)", header, rows)


def lines(paths: list[Path]) -> int:
    return sum(len(path.read_text(encoding="utf-8").splitlines()) for path in paths)


def main() -> None:
    started = time.perf_counter()
    cases = corpus()
    fails = sum(case.expected is FAIL for case in cases)
    extraction: list[list[Outcome]] = []
    for case in cases:
        extraction.append([run_extraction(case, fn) for _, fn in EXTRACTORS])
    rows = [
        [
            case.name,
            "expect failure" if case.expected is FAIL else short(case.expected, 30),
            result[0].shown,
            result[1].shown,
            f"{result[0].median_us:,.0f}",
            f"{result[1].median_us:,.0f}",
        ]
        for case, result in zip(cases, extraction, strict=True)
    ]
    header = ["case", "expected", "extract_json", "json_repair.loads", "µs lenient", "µs repair"]
    print(table("Each reply: what each parser made of it (median µs)", header, rows))
    names = [name for name, _ in EXTRACTORS]
    print(summary(f"Extraction: {len(cases)} replies", names, extraction, fails))

    checked = [case for case in cases if case.model is not None]
    validation = [
        [run_validation(case, fn) for _, fn in validators(case.model)]  # type: ignore[arg-type]
        for case in checked
    ]
    vnames = [name for name, _ in validators(JudgeReply)]
    vfails = sum(case.expected is FAIL for case in checked)
    title = f"Validation against PlanDraft / JudgeReply: {len(checked)} replies"
    print(summary(title, vnames, validation, vfails))
    differ = [
        [case.name, *(o.shown for o in result)]
        for case, result in zip(checked, validation, strict=True)
        if len({o.shown if o.kind == "wrong" else o.kind for o in result}) > 1
    ]
    print(table("Validation: the replies where they differ", ["case", *vnames], differ))

    print(growth())

    ours = [SRC / "trinity/llm/structured/lexer.py", SRC / "trinity/llm/structured/lenient_json.py"]
    theirs = sorted(Path(json_repair.__file__).parent.rglob("*.py"))
    version = importlib.metadata.version("json-repair")
    rows = [
        ["extract_json: lexer.py + lenient_json.py", str(len(ours)), f"{lines(ours):,}"],
        [f"json_repair {version}: installed package", str(len(theirs)), f"{lines(theirs):,}"],
    ]
    print(table("Code each needs (wc -l)", ["code", "files", "lines"], rows))
    print(
        f"\nPython {platform.python_version()}; whole bench {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
