"""``trinity alerts``: the alert rules of the settings, evaluated once (for cron)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from trinity.cli.common import DbOption, JsonOption, err, failing, out, settings, when

app = typer.Typer(help="Alert rules (see [[alerts]] in trinity.toml).", no_args_is_help=True)


@app.command("check")
def alerts_check(db: DbOption = None, json_output: JsonOption = False) -> None:
    """Evaluate every alert rule once: record what fired or resolved, tell it (the log,
    webhooks), and print each alert's state. Run it from cron when no trinity serve does."""
    from trinity.engine.aio import run_main
    from trinity.observability.alerts import AlertEvaluator
    from trinity.runtime import Runtime
    from trinity.server.readiness import McpReadiness

    config = settings(db)
    if not config.alerts:
        err.print("no alert rules: add [[alerts]] to trinity.toml (see the user guide)")
        raise typer.Exit(0)
    with failing():
        runtime = Runtime(config)
        try:
            servers = str(config.mcp_servers_file) if config.mcp_servers_file else None
            probe = McpReadiness(runtime, servers)
            evaluator = AlertEvaluator(config, lambda: runtime.store, mcp_probe=probe.check)
            notices = run_main(evaluator.evaluate())
            states = runtime.store.alert_states()
        finally:
            runtime.close()
    if json_output:
        told = [{"alert": n.rule.name, "status": n.status} for n in notices]
        out.print_json(json.dumps({"told": told, "alerts": list(states.values())}))
        return
    table = Table(title="Alerts")
    for column in ("alert", "state", "value", "since (UTC)", "last told (UTC)", "summary"):
        table.add_column(column, overflow="fold")
    for rule in config.alerts:
        state = states.get(rule.name, {})
        value = state.get("value")
        table.add_row(
            rule.name,
            state.get("state", "ok"),
            "" if value is None else f"{value:g}",
            when(state.get("since")),
            when(state.get("notified_at")),
            state.get("summary", ""),
        )
    out.print(table)
    for notice in notices:
        err.print(f"told: {notice.rule.name} {notice.status}", highlight=False)
