"""Alerts: the rules of the settings (``[[alerts]]``), measured on the store, fired and resolved
with a cool-down, told to the log, to webhooks and (through the store) to the dashboard.

:class:`AlertEvaluator` measures every rule once (:meth:`AlertEvaluator.evaluate`): ``trinity
alerts check`` calls it from cron, and :class:`AlertService` calls it every
``alert_interval_s`` inside ``trinity serve``. A rule whose measure is over its threshold
fires; one that is not resolves. What each rule last was lives in the store, and every change
is a compare-and-swap there, so with several servers (or a server and a cron job) each firing
and each resolution is told once. A firing alert is told again after ``alert_cooldown_s``; one
that resolves and fires again within the cool-down is not told again until it has passed.

Webhooks get a JSON POST (``{"alert", "status": "firing" | "resolved", "severity", "value",
"threshold", "summary", "since", "sent_at"}``) or, with ``format = "slack"``, Slack's
``{"text": …}``. A failed delivery (no answer, a 5xx, a 429) is tried again after 0.5, 1 and 2
seconds, then given up with a warning in the log; it does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trinity.config import AlertRule, AlertWebhook, Settings
from trinity.observability import NOT_FAILED, nearest_rank
from trinity.security.secrets import redact

if TYPE_CHECKING:
    import httpx

    from trinity.store import Store

log = logging.getLogger("trinity.alerts")

BUDGETS = ("step_budget", "token_budget", "cost_budget")
RETRY_DELAYS_S = (0.5, 1.0, 2.0)


@dataclass
class Measure:
    """One rule's reading: ``value`` (``None``: not enough to judge, counts as not firing)."""

    value: float | None
    summary: str

    def over(self, rule: AlertRule) -> bool:
        return self.value is not None and self.value > rule.threshold


@dataclass
class Notice:
    """An alert to tell (a firing, a resolution, or a firing told again)."""

    rule: AlertRule
    status: str
    """``firing`` or ``resolved``."""
    measure: Measure
    since: float
    sent_at: float

    def payload(self, hook: AlertWebhook) -> dict[str, Any]:
        if hook.format == "slack":
            mark = ":rotating_light:" if self.status == "firing" else ":white_check_mark:"
            text = f"{mark} [{self.status.upper()}] {self.rule.name}: {self.measure.summary}"
            return {"text": text}
        return {
            "alert": self.rule.name,
            "kind": self.rule.kind,
            "status": self.status,
            "severity": self.rule.severity,
            "value": self.measure.value,
            "threshold": self.rule.threshold,
            "summary": self.measure.summary,
            "since": self.since,
            "sent_at": self.sent_at,
        }


class AlertEvaluator:
    def __init__(
        self,
        settings: Settings,
        store: Callable[[], Store],
        *,
        mcp_probe: Callable[[], Awaitable[dict[str, str]]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._store = store
        self._mcp_probe = mcp_probe
        self._transport = transport
        self._clock = clock

    async def evaluate(self) -> list[Notice]:
        """Measure every rule, record what changed, and tell it; the notices told."""
        store = self._store()
        now = self._clock()
        notices: list[Notice] = []
        states = store.alert_states()
        for rule in self.settings.alerts:
            measure = await self._measure(store, rule, now)
            state = states.get(rule.name, {})
            firing = state.get("state") == "firing"
            cooldown = self.settings.alert_cooldown_s
            if measure.over(rule) and not firing:
                told = state.get("notified_at")
                quiet = told is not None and now - told < cooldown  # it flapped: not yet
                changed = await store.alert_transition(
                    rule.name, "firing", measure.value, measure.summary, now, notify=not quiet
                )
                if changed and not quiet:
                    notices.append(Notice(rule, "firing", measure, now, now))
            elif measure.over(rule):
                if await store.alert_retold(rule.name, now, cooldown):
                    notices.append(Notice(rule, "firing", measure, state["since"], now))
                else:
                    await store.alert_measured(rule.name, measure.value, measure.summary)
            elif firing:
                # A firing nobody was told of (it flapped within the cool-down) resolves quietly.
                told = (state.get("notified_at") or 0) >= state["since"]
                changed = await store.alert_transition(
                    rule.name, "ok", measure.value, measure.summary, now, notify=told
                )
                if changed and told:
                    notices.append(Notice(rule, "resolved", measure, now, now))
        # together: a webhook that hangs costs one round of its retries, not one per notice
        await asyncio.gather(*(self._tell(notice) for notice in notices))
        return notices

    # -- measures --------------------------------------------------------------------------------

    async def _measure(self, store: Store, rule: AlertRule, now: float) -> Measure:
        window = f"{rule.window_s / 60:g} min"
        if rule.kind in ("error_rate", "p95_run_time", "budget_stops"):
            ended = await asyncio.to_thread(store.ended_runs, now - rule.window_s)
            if rule.kind == "error_rate":
                judged = [reason for reason, _, _ in ended if reason != "cancelled"]
                failed = sum(reason not in NOT_FAILED for reason in judged)
                if len(judged) < rule.min_runs:
                    return Measure(None, f"{len(judged)} run(s) ended in {window}: too few")
                rate = failed / len(judged)
                return Measure(
                    rate, f"{failed} of {len(judged)} runs failed in {window} ({rate:.0%})"
                )
            if rule.kind == "p95_run_time":
                durations = sorted(seconds for _, _, seconds in ended)
                if len(durations) < rule.min_runs:
                    return Measure(None, f"{len(durations)} run(s) ended in {window}: too few")
                p95 = nearest_rank(durations, 0.95)
                return Measure(
                    p95, f"p95 run time {p95:.1f}s over {len(durations)} runs in {window}"
                )
            stops = sum(reason in BUDGETS for reason, _, _ in ended)
            return Measure(float(stops), f"{stops} run(s) stopped on a budget in {window}")
        if rule.kind in ("stuck_runs", "approvals_waiting"):
            _, oldest = await asyncio.to_thread(store.run_gauges)
            status = "running" if rule.kind == "stuck_runs" else "awaiting_approval"
            since = oldest.get(status)
            if since is None:
                return Measure(0.0, f"no run is {status.replace('_', ' ')}")
            age = now - since
            what = "has run" if status == "running" else "has waited for a person"
            return Measure(age, f"the oldest {status.replace('_', ' ')} run {what} {age:.0f}s")
        # mcp_down: the eager MCP servers that do not start
        if self._mcp_probe is None:
            return Measure(None, "no MCP probe here")
        checked = await self._mcp_probe()
        down = sorted(name for name, said in checked.items() if said != "ok")
        if not down:
            return Measure(0.0, f"{len(checked)} eager MCP server(s) up")
        return Measure(float(len(down)), f"MCP server(s) down: {', '.join(down)}")

    # -- telling ---------------------------------------------------------------------------------

    async def _tell(self, notice: Notice) -> None:
        rule = notice.rule
        level = logging.WARNING if notice.status == "firing" else logging.INFO
        log.log(
            level,
            "alert %s %s (%s): %s",
            rule.name,
            notice.status,
            rule.severity,
            redact(notice.measure.summary),
        )
        if not self.settings.alert_webhooks:
            return
        import httpx

        async with httpx.AsyncClient(timeout=10, transport=self._transport) as client:
            await asyncio.gather(
                *(self._post(client, hook, notice) for hook in self.settings.alert_webhooks)
            )

    async def _post(self, client: httpx.AsyncClient, hook: AlertWebhook, notice: Notice) -> bool:
        import httpx

        problem, attempts = "", 0
        for delay in (0.0, *RETRY_DELAYS_S):
            attempts += 1
            if delay:
                await asyncio.sleep(delay)
            try:
                answer = await client.post(
                    hook.url, json=notice.payload(hook), headers=hook.headers
                )
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if answer.status_code < 300:
                return True
            problem = f"HTTP {answer.status_code}"
            if answer.status_code < 500 and answer.status_code != 429:
                break  # the receiver refuses it: sending it again changes nothing
        log.warning(
            "alert %s %s: webhook to %s failed after %d attempt(s): %s",
            notice.rule.name,
            notice.status,
            httpx.URL(hook.url).netloc.decode(),  # not the path: Slack's holds its secret
            attempts,
            redact(problem),
        )
        return False


class AlertService:
    """The evaluator every ``alert_interval_s``, as a background task (``trinity serve``)."""

    def __init__(self, evaluator: AlertEvaluator, interval_s: float) -> None:
        self.evaluator = evaluator
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.evaluator.settings.alerts:
            self._task = asyncio.create_task(self._loop(), name="trinity-alerts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.evaluator.evaluate()
            except Exception:  # a store hiccup: the next round tries again
                log.warning("alert evaluation failed", exc_info=True)
            await asyncio.sleep(self.interval_s)
