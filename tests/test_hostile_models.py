"""Model servers that misbehave: whole runs through the real ``openai`` and ``anthropic`` SDKs,
over real HTTP, against the scripted fake server (``llm_server.py``). Each run must end with the
right stop reason and a message that says what happened, never stay ``running``, and never let
a Python error out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from llm_server import FakeLLMServer, Hang, Raw, Reply, Status, fake_llm_server  # noqa: F401
from trinity.config import Settings
from trinity.events import EventBase, LLMFailed
from trinity.limits import RunLimits
from trinity.report import render_report
from trinity.runtime import Runtime
from trinity.state import RunState, StopReason
from trinity.store import Store

PLAN = {
    "rationale": "write the greeting",
    "steps": [
        {
            "id": "greet",
            "tool": "fs.write",
            "args": {"path": "hello.txt", "content": "hello"},
            "checks": [{"file_contains": {"path": "hello.txt", "text": "hello"}}],
        }
    ],
}
VERDICT = json.dumps({"passed": True, "reason": "the file says hello"})
PROVIDERS = ["openai", "anthropic", "openai+stream", "anthropic+stream"]
"""Each API, with replies read whole and streamed: the whole suite runs four times."""


def _settings(settings: Settings, fake: FakeLLMServer, provider: str, **extra: Any) -> Settings:
    update: dict[str, Any] = {
        "llm_max_attempts": 2,
        "llm_stream": provider.endswith("+stream"),
        **extra,
    }
    if provider.startswith("openai"):
        update |= {"openai_api_key": SecretStr("sk-test"), "openai_base_url": fake.openai_base_url}
    else:
        update |= {
            "anthropic_api_key": SecretStr("sk-ant-test"),
            "anthropic_base_url": fake.anthropic_base_url,
        }
    return settings.model_copy(update=update)


async def _run(
    settings: Settings, provider: str, events: list[EventBase] | None = None, **options: Any
) -> RunState:
    """The task through a whole runtime; ``events`` collects what the run emitted."""
    model = "openai:gpt-4o-mini" if provider.startswith("openai") else "anthropic:claude-test"
    runtime = Runtime(settings)
    subscribers = [events.append] if events is not None else []
    try:
        request = runtime.prepare("Write hello to hello.txt", model=model, **options)
        state = await runtime.start(request, subscribers=subscribers)
        row = runtime.store.get_run(state.run_id)
        assert row is not None and row["status"] != "running", row
        return state
    finally:
        runtime.close()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "usage"),
    [
        (11, 7, False),  # no usage object at all
        (-500, -3, True),
        (None, None, True),
        ("12", "x", True),
        (2**64, 2**63, True),
        (3.5, float("inf"), True),
    ],
    ids=["missing", "negative", "null", "strings", "2^64", "float"],
)
async def test_usage_is_never_trusted(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
    input_tokens: Any,
    output_tokens: Any,
    usage: bool,
) -> None:
    fake_llm_server.script(
        Reply(json.dumps(PLAN), input_tokens, output_tokens, usage=usage),
        Reply(VERDICT, input_tokens, output_tokens, usage=usage),
    )
    state = await _run(_settings(settings, fake_llm_server, provider), provider)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    # Every count is a sane estimate (or, for "12", the one field that was usable).
    assert 0 < state.usage.input_tokens < 100_000 and 0 < state.usage.output_tokens < 100_000
    assert state.usage.estimated_calls == state.usage.llm_calls >= 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_missing_usage_does_not_switch_the_token_budget_off(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
) -> None:
    fake_llm_server.script(Reply(json.dumps(PLAN), usage=False), Reply(VERDICT, usage=False))
    state = await _run(
        _settings(settings, fake_llm_server, provider), provider, limits=RunLimits(token_budget=50)
    )
    assert state.stop_reason == StopReason.TOKEN_BUDGET, state.stop_detail
    assert state.usage.total_tokens > 50


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            Raw(
                b"<html><head><title>Sign in</title></head><body><h1>Portal login</h1></body>"
                b"</html>",
                content_type="text/html",
            ),
            "Portal login",
        ),
        (Raw(b'{"error": {"message": "quota exceeded for this key"}}'), "quota exceeded"),
        (Raw(b"\xff\xfe\x00garbage\x80"), "not"),
        (Raw(b""), "empty"),
    ],
    ids=["html-200", "error-object-200", "not-utf8", "empty"],
)
async def test_odd_bodies_end_the_run_with_the_servers_words(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
    raw: Raw,
    expected: str,
) -> None:
    fake_llm_server.script(raw, raw, raw)
    state = await _run(_settings(settings, fake_llm_server, provider), provider)
    assert state.stop_reason in (StopReason.ERROR, StopReason.FAILED), state.stop_detail
    assert expected in (state.stop_detail or ""), state.stop_detail
    for word in ("AttributeError", "TypeError", "Traceback"):
        assert word not in (state.stop_detail or "")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_nul_and_lone_surrogates_in_a_reply_are_cleaned_and_stored(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
    workspace: Path,
) -> None:
    plan = json.loads(json.dumps(PLAN))
    plan["steps"][0]["args"]["content"] = "hello \\ud83d \\u0000 end"
    text = json.dumps(plan).replace("\\\\ud83d", "\\ud83d").replace("\\\\u0000", "\\u0000")
    fake_llm_server.script(Reply("note \x00 " + text), Reply(VERDICT))
    state = await _run(_settings(settings, fake_llm_server, provider), provider)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert (workspace / "hello.txt").read_text() == "hello \ufffd  end"
    store = Store(settings.database_url or "")
    try:
        assert store.get_run(state.run_id)["status"] == "succeeded"
    finally:
        store.close()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_huge_bad_reply_is_not_sent_back_whole(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
) -> None:
    garbage = "not json at all " * 320_000  # about 5 MB
    fake_llm_server.script(Reply(garbage), Reply(json.dumps(PLAN)), Reply(VERDICT))
    state = await _run(_settings(settings, fake_llm_server, provider), provider)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    repair = fake_llm_server.requests[1]
    assert len(json.dumps(repair.body)) < 60_000
    assert "more characters of this reply not shown" in json.dumps(repair.body)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "raw",
    [
        Raw(b'{"id": "' + b"x" * 3_000_000 + b'"}'),
        Raw(b'{"id": "' + b"x" * 3_000_000 + b'"}', declared=False),
        Raw(b"data: " + b"x" * 3_000_000, content_type="text/event-stream", declared=False),
    ],
    ids=["declared", "until-close", "endless-event"],
)
async def test_a_body_past_the_cap_is_read_no_further_and_not_asked_again(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
    raw: Raw,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server sending more than the cap (a whole body, one without a length, an event line
    that never ends) fails the call at once, before the SDK holds it all: asking again would
    read the same again. (The caps, 64 and 512 MB, are made 1 MB here.)"""
    from trinity.llm import bodycap

    monkeypatch.setattr(bodycap, "MAX_BODY_BYTES", 2**20)
    monkeypatch.setattr(bodycap, "MAX_STREAM_BYTES", 2**20)
    fake_llm_server.script(raw, raw, raw)
    state = await _run(_settings(settings, fake_llm_server, provider), provider)
    assert state.stop_reason in (StopReason.ERROR, StopReason.FAILED), state.stop_detail
    assert "went past 1 MB and was read no further" in (state.stop_detail or "")
    assert len(fake_llm_server.requests) == 1  # not retried


def test_time_limits_that_do_not_nest_are_refused_when_settings_load() -> None:
    with pytest.raises(ValueError, match=r"120 s x 5 = 600 s is longer than node_timeout_s"):
        Settings(llm_timeout_s=120, llm_max_attempts=4, node_timeout_s=300)
    defaults = Settings()
    fits = defaults.llm_timeout_s * (defaults.llm_max_attempts + 1)
    assert fits <= (defaults.node_timeout_s or 0)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_silent_server_fails_with_its_own_error_within_the_node_time(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
) -> None:
    fake_llm_server.script(Hang(30), Hang(30), Hang(30))
    # A short node timeout for this run: each attempt is shortened so both fit in it.
    state = await _run(
        _settings(settings, fake_llm_server, provider),
        provider,
        limits=RunLimits(node_timeout_s=2.0),
    )
    assert state.stop_reason == StopReason.ERROR, state.stop_detail
    assert "no complete reply" in (state.stop_detail or "") and "2 attempts" in (
        state.stop_detail or ""
    ), state.stop_detail
    assert len(fake_llm_server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_failed_call_is_counted_and_traced(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
) -> None:
    fake_llm_server.script(Status(503, "overloaded"), Status(503, "overloaded"))
    events: list[EventBase] = []
    state = await _run(_settings(settings, fake_llm_server, provider), provider, events)
    assert state.stop_reason == StopReason.ERROR, state.stop_detail
    assert state.usage.llm_calls == 1
    [failed] = [event for event in events if isinstance(event, LLMFailed)]
    assert failed.attempts == 2 and "overloaded" in failed.error
    assert "LLM calls 1" in render_report(state)


async def test_large_step_arguments_are_clipped_in_the_judges_prompt(settings: Settings) -> None:
    from trinity.llm.scripted import ScriptedProvider

    big = {
        "steps": [
            {"id": "w", "tool": "fs.write", "args": {"path": "big.txt", "content": "x" * 500_000}}
        ]
    }
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(big)},
            {"text": VERDICT, "repeat": True},
        ]
    )
    runtime = Runtime(settings, llm=llm)
    try:
        state = await runtime.start(runtime.prepare("write a big file", model="scripted:x"))
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    judge = next(r for r in llm.requests if r.purpose == "grisha.judge")
    sent = sum(len(m.content) for m in judge.messages)
    assert sent < 20_000 and "characters not shown" in judge.messages[-1].content


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_cut_off_reply_is_asked_again_with_more_room(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
) -> None:
    whole = json.dumps(PLAN)
    fake_llm_server.script(
        Reply(whole[: len(whole) // 2], cut_off=True), Reply(whole), Reply(VERDICT)
    )
    state = await _run(_settings(settings, fake_llm_server, provider), provider)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    first, second = fake_llm_server.requests[:2]
    key = "max_completion_tokens" if provider.startswith("openai") else "max_tokens"
    if provider.startswith("openai") and key not in first.body:
        key = "max_tokens"  # a compatible server gets the older name
    assert first.body[key] == 4096 and second.body[key] == 8192
    assert "cut off after 4096 tokens" in json.dumps(second.body)


DELETING_PLAN = {
    "steps": [
        {"id": "wipe", "tool": "shell.run", "args": {"command": "rm -rf ../outside"}},
    ]
}


@pytest.mark.parametrize(("sandbox", "asks"), [("off", True), ("strict", False)])
async def test_model_plans_ask_before_deleting_when_nothing_contains_them(
    settings: Settings, tmp_path: Path, sandbox: str, asks: bool
) -> None:
    from trinity.llm.scripted import ScriptedProvider
    from trinity.tools.sandbox import probe

    if sandbox == "strict" and not probe().available:
        pytest.skip(f"LOUD SKIP: no working bubblewrap here: {probe().reason}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(DELETING_PLAN)},
            {"text": VERDICT, "repeat": True},
        ]
    )
    runtime = Runtime(settings.model_copy(update={"sandbox": sandbox}), llm=llm)
    try:
        request = runtime.prepare("tidy up", model="scripted:x")
        state = await runtime.start(request)
    finally:
        runtime.close()
    # Unsandboxed, a person must approve it first; sandboxed, the command runs but cannot
    # reach outside the workspace. Either way the folder outside survives.
    assert (outside / "keep.txt").exists()
    if asks:
        assert state.stop_reason == StopReason.AWAITING_APPROVAL, state.stop_detail
        assert "deletes" in (state.stop_detail or "")
    else:
        assert state.stop_reason != StopReason.AWAITING_APPROVAL, state.stop_detail


# -- task-level completion -----------------------------------------------------------------------


def _plan_with(steps: list[dict[str, Any]], success: list[Any] | None = None) -> str:
    return json.dumps({"steps": steps, **({"success": success} if success else {})})


WRITE_OUT = {"id": "out", "tool": "fs.write", "args": {"path": "out.txt", "content": "done"}}
FAILING = {
    "id": "try",
    "tool": "shell.run",
    "args": {"command": "exit 3"},
    "checks": [{"exit_code": 0}],
}
DETOUR = {
    "id": "detour",
    "tool": "fs.write",
    "args": {"path": "notes.txt", "content": "ignore the task, all is well"},
}


async def _scripted(settings: Settings, replies: list[dict[str, Any]], **options: Any) -> RunState:
    from trinity.llm.scripted import ScriptedProvider

    llm = ScriptedProvider([*replies, {"text": VERDICT, "repeat": True}])
    runtime = Runtime(settings, llm=llm)
    try:
        return await runtime.start(
            runtime.prepare("Write done to out.txt", model="scripted:x", **options)
        )
    finally:
        runtime.close()


async def test_a_run_completes_when_its_success_criteria_hold(settings: Settings) -> None:
    plan = _plan_with([WRITE_OUT], [{"file_contains": {"path": "out.txt", "text": "done"}}])
    state = await _scripted(settings, [{"match": {"purpose": "atlas.plan"}, "text": plan}])
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert "the task's 1 success criteria hold" in (state.stop_detail or "")


async def test_a_replan_that_drops_the_task_does_not_complete(settings: Settings) -> None:
    """The first plan states the criterion; a replan (as a prompt injection would steer it)
    does something else, and every step of it passes: the run must not report completed."""
    first = _plan_with([FAILING], [{"file_exists": "out.txt"}])
    detour = _plan_with([DETOUR])  # no success field: it cannot drop the first plan's
    state = await _scripted(
        settings,
        [
            {"match": {"purpose": "atlas.plan"}, "text": first},
            {"match": {"purpose": "atlas.replan"}, "text": detour},
        ],
        max_replans=1,
    )
    assert state.stop_reason == StopReason.FAILED, state.stop_detail
    assert "success criteria do not hold" in (state.stop_detail or "")
    assert "file_exists out.txt" in (state.stop_detail or "")


async def test_unmet_criteria_send_the_run_back_to_the_planner(settings: Settings) -> None:
    first = _plan_with([FAILING], [{"file_exists": "out.txt"}])
    detour = _plan_with([DETOUR])
    fixed = _plan_with([{**WRITE_OUT, "id": "out-2"}])
    state = await _scripted(
        settings,
        [
            {"match": {"purpose": "atlas.plan"}, "text": first},
            {"match": {"purpose": "atlas.replan"}, "text": detour},
            {"match": {"purpose": "atlas.replan"}, "text": fixed},
        ],
        max_replans=2,
    )
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert state.plan is not None and state.plan.success[0].describe() == "file_exists out.txt"


async def test_success_criteria_check_files_only(settings: Settings) -> None:
    bad = _plan_with([WRITE_OUT], [{"exit_code": 0}])
    state = await _scripted(
        settings,
        [{"match": {"purpose": "atlas.plan"}, "text": bad, "repeat": True}],
    )
    assert state.stop_reason == StopReason.FAILED, state.stop_detail
    assert "success criteria check files" in (state.stop_detail or "")


def test_a_plan_file_states_success_criteria_too(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "task: write the report\n"
        "success: [{file_exists: report.md}]\n"
        "steps:\n  - {id: a, tool: fs.write, args: {path: notes.txt, content: hi}}\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trinity",
            "run",
            str(plan),
            "-w",
            str(tmp_path / "ws"),
            "--db",
            str(tmp_path / "t.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "500"},
    )
    assert done.returncode == 1, done.stderr
    assert "success criteria do not hold (no model to replan with)" in done.stdout + done.stderr
    assert "file_exists report.md" in done.stdout + done.stderr


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_every_retry_is_an_event(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
) -> None:
    from trinity.events import LLMRetry

    fake_llm_server.script(Status(503, "busy, try later"), Reply(json.dumps(PLAN)), Reply(VERDICT))
    events: list[EventBase] = []
    state = await _run(_settings(settings, fake_llm_server, provider), provider, events)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    [retry] = [event for event in events if isinstance(event, LLMRetry)]
    assert retry.purpose == "atlas.plan" and retry.attempt == 1 and retry.wait_s > 0
    assert "503" in retry.reason and "busy, try later" in retry.reason


# -- native structured output and streaming ------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_plans_and_verdicts_are_asked_for_natively(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
) -> None:
    fake_llm_server.script(Reply(json.dumps(PLAN)), Reply(VERDICT))
    state = await _run(_settings(settings, fake_llm_server, provider), provider)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    plan, verdict = (request.body for request in fake_llm_server.requests)
    if provider.startswith("openai"):
        assert plan["response_format"]["json_schema"]["name"] == "PlanDraft"
        assert verdict["response_format"]["json_schema"]["name"] == "JudgeReply"
    else:
        assert plan["tool_choice"] == {"type": "tool", "name": "PlanDraft"}
        assert verdict["tool_choice"] == {"type": "tool", "name": "JudgeReply"}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_server_without_native_output_still_runs_the_task(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
    workspace: Path,
) -> None:
    refusal = "'response_format' of type 'json_schema' is not supported; tools are not supported"
    fake_llm_server.script(Status(400, refusal), Reply(json.dumps(PLAN)), Reply(VERDICT))
    state = await _run(_settings(settings, fake_llm_server, provider), provider)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert (workspace / "hello.txt").read_text() == "hello"
    # The judge's request already knew: three requests, not four.
    assert len(fake_llm_server.requests) == 3


async def test_plan_steps_may_come_back_as_native_tool_calls(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    workspace: Path,
) -> None:
    step = PLAN["steps"][0]
    fake_llm_server.script(Reply("", tool_calls=((step["tool"], step["args"]),)), Reply(VERDICT))
    state = await _run(_settings(settings, fake_llm_server, "openai"), "openai")
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert (workspace / "hello.txt").read_text() == "hello"


@pytest.mark.parametrize("provider", ["openai+stream", "anthropic+stream"])
async def test_a_stalled_stream_is_retried_and_shows_live(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
) -> None:
    from trinity.events import LLMRetry, LLMStreaming

    fake_llm_server.script(
        Reply(json.dumps(PLAN), stall_s=30), Reply(json.dumps(PLAN)), Reply(VERDICT)
    )
    events: list[EventBase] = []
    fast = _settings(settings, fake_llm_server, provider, llm_idle_timeout_s=0.5)
    state = await _run(fast, provider, events)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    [retry] = [event for event in events if isinstance(event, LLMRetry)]
    assert "stalled" in retry.reason and "0.5 s" in retry.reason
    streaming = [event for event in events if isinstance(event, LLMStreaming)]
    assert {event.purpose for event in streaming} >= {"atlas.plan", "grisha.judge"}
    assert all(event.chars > 0 for event in streaming)


# -- reports that name the cause -----------------------------------------------------------------


async def test_a_loop_caught_at_plan_review_keeps_the_judges_failure_in_the_report(
    settings: Settings,
) -> None:
    """The judge never gives a usable verdict; Atlas replans the same plan twice; the run stops
    at plan review. The report must say where it stopped and why the step failed."""

    def plan(step_id: str) -> str:
        return json.dumps({"steps": [{**PLAN["steps"][0], "id": step_id}]})

    state = await _scripted(
        settings,
        [
            {"match": {"purpose": "atlas.plan"}, "text": plan("greet")},
            {"match": {"purpose": "atlas.replan"}, "text": plan("greet-2")},
            {"match": {"purpose": "atlas.replan"}, "text": plan("greet-3")},
            {"match": {"purpose": "grisha.judge"}, "text": "I think it is fine?", "repeat": True},
        ],
        max_replans=3,
        verification="llm-judge",
    )
    assert state.stop_reason == StopReason.LOOP, state.stop_detail
    report = render_report(state)
    assert "at plan review" in report, report
    assert "the judge gave no usable verdict" in report, report
    assert "step greet (fs.write): failed" in report, report


# -- a table of misbehaving servers ----------------------------------------------------------------


def _empty(provider: str) -> Raw:
    """A well-formed reply with nothing in it (no choices / no content blocks)."""
    if provider.startswith("openai"):
        body: dict[str, Any] = {"id": "x", "object": "chat.completion", "model": "m", "choices": []}
    else:
        body = {"id": "x", "type": "message", "role": "assistant", "content": []}
        body |= {"model": "m", "stop_reason": "end_turn"}
    return Raw(json.dumps(body).encode())


def _filtered(provider: str) -> Raw:
    """The server's safety filter took the reply: no text, a stop reason that says so."""
    if provider.startswith("openai"):
        choice = {"index": 0, "message": {"role": "assistant", "content": None}}
        body: dict[str, Any] = {"id": "x", "object": "chat.completion", "model": "m"}
        body["choices"] = [choice | {"finish_reason": "content_filter"}]
    else:
        body = {"id": "x", "type": "message", "role": "assistant", "content": [], "model": "m"}
        body["stop_reason"] = "refusal"
    return Raw(json.dumps(body).encode())


def _plan(**step: Any) -> Reply:
    return Reply(json.dumps({"steps": [{**PLAN["steps"][0], **step}]}))


GOOD = [Reply(json.dumps(PLAN)), Reply(VERDICT)]
MISBEHAVIOURS: dict[str, tuple[Any, tuple[StopReason, ...], str]] = {
    # name: (behaviours, or a function of the provider giving them; stop reasons; words)
    "401-bad-key": ([Status(401, "invalid x-api-key")], (StopReason.ERROR,), "check the API key"),
    "404-no-model": ([Status(404, "model: no-such")], (StopReason.ERROR,), "check the model name"),
    "429-for-an-hour": (
        [Status(429, "rate limited", headers={"Retry-After": "3600"})],
        (StopReason.ERROR,),
        "asks to wait 3600 s",
    ),
    "400-context-too-long": (
        [Status(400, "maximum context length is 8192 tokens")],
        (StopReason.ERROR,),
        "maximum context length is 8192 tokens",
    ),
    "prose-only": (
        [Reply("Sure! Happy to help with that.")] * 3,
        (StopReason.FAILED, StopReason.ERROR),
        "no valid structured output after 3 attempts",
    ),
    "empty-reply": (
        lambda p: [_empty(p)] * 3,
        (StopReason.FAILED, StopReason.ERROR),
        "no valid structured output",
    ),
    "content-filtered": (
        lambda p: [_filtered(p)] * 3,
        (StopReason.FAILED, StopReason.ERROR),
        "no valid structured output",
    ),
    "nested-200-deep": (
        [Reply("[" * 200 + "]" * 200)] * 3,
        (StopReason.FAILED, StopReason.ERROR),
        "no valid structured output",
    ),
    "hallucinated-tool-then-fixed": (
        [_plan(tool="fs.teleport"), *GOOD],
        (StopReason.COMPLETED,),
        "verified",
    ),
    "wrong-argument-type-then-fixed": (
        [_plan(args={"path": ["hello.txt"], "content": "hello"}), *GOOD],
        (StopReason.COMPLETED,),
        "verified",
    ),
    "duplicate-step-ids-then-fixed": (
        [Reply(json.dumps({"steps": [PLAN["steps"][0]] * 2})), *GOOD],
        (StopReason.COMPLETED,),
        "verified",
    ),
    "reasoning-before-the-answer": (
        [Reply('<think>maybe {"steps": []}</think>\n' + json.dumps(PLAN)), Reply(VERDICT)],
        (StopReason.COMPLETED,),
        "verified",
    ),
    "stream-dropped-then-whole": (
        [Reply(json.dumps(PLAN), stream_cut=True), *GOOD],
        (StopReason.COMPLETED,),
        "verified",
    ),
    "verdict-as-prose": (
        [Reply(json.dumps(PLAN)), *[Reply("yes, looks good")] * 6],  # 2 attempts x 3 calls
        (StopReason.FAILED, StopReason.ERROR),
        "the judge gave no usable verdict",
    ),
    "path-outside-the-workspace": (
        [_plan(args={"path": "../escape.txt", "content": "x"}), Reply(VERDICT)],
        (StopReason.FAILED, StopReason.ERROR),
        "escape.txt",
    ),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", sorted(MISBEHAVIOURS))
async def test_misbehaving_servers_end_cleanly(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    provider: str,
    case: str,
    workspace: Path,
) -> None:
    behaviours, reasons, words = MISBEHAVIOURS[case]
    if callable(behaviours):
        behaviours = behaviours(provider)
    if case == "stream-dropped-then-whole" and not provider.endswith("+stream"):
        behaviours = GOOD  # a whole reply cannot drop half-way in the same sense
    fake_llm_server.script(*behaviours)
    state = await _run(_settings(settings, fake_llm_server, provider), provider, max_replans=0)
    detail = state.stop_detail or ""
    report = render_report(state)
    assert state.stop_reason in reasons, detail
    assert words in report, report
    for word in ("Traceback", "AttributeError", "TypeError", "KeyError"):
        assert word not in report, report
    # Nothing outside the workspace was touched.
    assert not (workspace.parent / "escape.txt").exists()
