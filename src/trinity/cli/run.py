"""``trinity run``, and the driver every command that runs a run shares (run, resume, approve,
deny): live progress, Ctrl-C / SIGTERM / SIGHUP, storage failures, the end of the run."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from trinity.cli.common import (
    EXIT_AWAITING,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_SIGNALLED,
    EXIT_STOPPED,
    DbOption,
    JsonOption,
    err,
    fail,
    failing,
    runtime,
    settings,
)

if TYPE_CHECKING:
    from trinity.events import EventBase, EventSink
    from trinity.runtime import Runtime
    from trinity.state import RunState


class _RunId:
    """Remembers the id of the run the command drives (from its first event)."""

    def __init__(self, known: str | None = None) -> None:
        self.value = known

    def __call__(self, event: EventBase) -> None:
        self.value = self.value or event.run_id


Drive = Callable[["Runtime", list["EventSink"]], Coroutine[Any, Any, "RunState"]]


def drive(runtime_: Runtime, go: Drive, json_output: bool, run_id: str | None = None) -> NoReturn:
    """Run ``go`` (start, resume, approve or deny) with live progress, then print how the run
    ended and exit with its code."""
    from trinity.cli.progress import Progress, print_outcome
    from trinity.engine.aio import Terminated, run_main
    from trinity.engine.watchdog import WATCHDOG
    from trinity.errors import (
        ApprovalPendingError,
        ConfigError,
        InputError,
        RunNotRecordedError,
        StoreError,
        TrinityError,
    )

    WATCHDOG.on_stuck = exit_when_stuck

    seen = _RunId(run_id)
    subscribers: list[EventSink] = [seen]
    if not json_output:
        subscribers.append(Progress(err))
    resume_hint = "`trinity runs list` shows it"
    try:
        state = run_main(go(runtime_, subscribers))
    except (KeyboardInterrupt, Terminated) as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        if seen.value:
            resume_hint = f"`trinity runs resume {seen.value}` continues it"
        name = signal.Signals(signum).name
        what = "interrupted" if signum == signal.SIGINT else f"terminated by {name}"
        err.print(
            f"[yellow]{what}[/]: the run was recorded as cancelled; {resume_hint}",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_SIGNALLED.get(signal.Signals(signum), EXIT_INTERRUPTED)) from None
    except ApprovalPendingError as exc:
        fail(str(exc), EXIT_AWAITING)
    except RunNotRecordedError as exc:  # it ran, and its end could not be written
        fail(str(exc), EXIT_STOPPED)
    except (InputError, ConfigError, StoreError) as exc:  # before the run could start
        fail(str(exc))
    except TrinityError as exc:
        fail(str(exc), EXIT_STOPPED)
    finally:
        runtime_.close()
    print_outcome(state, json_output)


def run(
    target: Annotated[str, typer.Argument(help="A task in words, or a plan file (.yaml/.json)")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="scripted:FILE | openai:MODEL | anthropic:MODEL | openai-compatible:URL#MODEL",
        ),
    ] = None,
    workspace: Annotated[
        Path | None, typer.Option("--workspace", "-w", help="Folder the tools work in")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Graph step budget")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Run deadline in seconds")
    ] = None,
    token_budget: Annotated[
        int | None, typer.Option("--token-budget", help="LLM tokens the run may use")
    ] = None,
    max_replans: Annotated[
        int | None, typer.Option("--max-replans", min=0, help="New plans Atlas may make")
    ] = None,
    cost_budget: Annotated[
        float | None, typer.Option("--cost-budget", help="US dollars the LLM calls may cost")
    ] = None,
    node_timeout: Annotated[
        float | None, typer.Option("--node-timeout", help="Seconds one agent's turn may take")
    ] = None,
    llm_timeout: Annotated[
        float | None, typer.Option("--llm-timeout", help="Seconds per LLM call")
    ] = None,
    tool_timeout: Annotated[
        float | None, typer.Option("--tool-timeout", help="Seconds per tool call (default)")
    ] = None,
    on_interrupted: Annotated[
        str | None,
        typer.Option(
            "--on-interrupted",
            help="After a crash during a tool call: recheck | rerun | ask | fail",
        ),
    ] = None,
    verify: Annotated[
        str | None,
        typer.Option("--verify", help="Force a verification level: none | checks | llm-judge"),
    ] = None,
    mcp: Annotated[
        Path | None,
        typer.Option("--mcp", help='MCP servers file ({"mcpServers": {...}} JSON)'),
    ] = None,
    mcp_server: Annotated[
        list[str] | None,
        typer.Option(
            "--mcp-server",
            help="Use only this configured MCP server (repeat for several; default: all)",
        ),
    ] = None,
    permissions: Annotated[
        Path | None,
        typer.Option(
            "--permissions", help="Tool permission policy (YAML): allow / ask / deny per tool"
        ),
    ] = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Save the LLM traffic as a replayable script")
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run a task through the five agents."""
    from trinity.limits import RunLimits
    from trinity.state import VerificationLevel

    config = settings(db)
    llm = None
    from trinity.state import OnInterrupted

    try:
        level = VerificationLevel(verify) if verify is not None else None
    except ValueError:
        fail(f"--verify must be one of {', '.join(VerificationLevel)}, got {verify!r}")
    if on_interrupted is not None and on_interrupted not in set(OnInterrupted):
        fail(f"--on-interrupted must be one of {', '.join(OnInterrupted)}, got {on_interrupted!r}")
    with failing():
        if record is not None:
            from trinity.llm.registry import check_model, make_provider
            from trinity.llm.scripted import RecordingProvider

            chosen = model or config.model
            if chosen is None:
                fail("--record needs a model (--model or TRINITY_MODEL)")
            check_model(chosen, config)
            llm = RecordingProvider(make_provider(chosen, config), record)
        runtime_ = runtime(config, llm=llm)
        request = runtime_.prepare(
            target,
            model=model,
            workspace=workspace,
            limits=RunLimits.given(
                max_steps=max_steps,
                timeout_s=timeout,
                token_budget=token_budget,
                cost_budget_usd=cost_budget,
                node_timeout_s=node_timeout,
                llm_timeout_s=llm_timeout,
                tool_timeout_s=tool_timeout,
            ),
            verification=level,
            max_replans=max_replans,
            permissions_file=permissions,
            mcp_servers_file=mcp,
            mcp_servers=mcp_server,
            on_interrupted=on_interrupted,
        )
    if not json_output:
        err.print(f"[bold]trinity[/] {escape(request.task[:200])}", highlight=False)

    async def go(rt: Runtime, subscribers: list[EventSink]) -> RunState:
        try:
            return await rt.start(request, subscribers=subscribers)
        finally:
            if llm is not None:
                await llm.aclose()

    drive(runtime_, go, json_output)


def exit_when_stuck(label: str, held_s: float) -> None:
    """The watchdog's last resort for this process: a run blocked in a call that cannot be
    interrupted still ends, by ending the process (its journal stays)."""
    run_id = label.removeprefix("run ")
    sys.stderr.write(
        f"error: {label} is blocked in a call that cannot be interrupted ({held_s:.1f}s past "
        f"its deadline); exiting. `trinity runs resume {run_id}` continues it from its last "
        "checkpoint.\n"
    )
    sys.stderr.flush()
    os._exit(EXIT_INTERNAL)
