"""The dashboard in a real headless Chromium (Debian's, driven by playwright): log in with a
token, start a run from the form and watch it finish live, see it in the list, approve a
paused run with the button, cancel a running one. Screenshots go to ``build/screenshots``."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import plan, sleep, wait_for_status, write

from trinity.config import AlertRule, Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("TRINITY_SCREENSHOTS", "build/screenshots"))

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="LOUD SKIP: Debian's chromium is not installed (apt-get install chromium)",
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-dev-shm-usage",
            ],
        )
        yield launched
        await launched.close()


async def _logged_in(browser: Any, live: str, secret: str, dark: bool = False) -> Any:
    context = await browser.new_context(color_scheme="dark" if dark else "light")
    page = await context.new_page()
    await page.goto(f"{live}/")
    assert page.url.endswith("/login")
    await page.fill("#token", secret)
    await page.click("#login")
    await page.wait_for_url(f"{live}/")
    return page


async def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_log_in_start_a_run_and_watch_it_finish(
    browser: Any, live: str, token: Callable[..., str]
) -> None:
    page = await _logged_in(browser, live, token("runs:write", "approvals"))
    await page.click("text=New run")
    steps = [sleep(0.3, "think"), write("notes", "hello from the dashboard")]
    yaml_text = "task: notes from the form\nsteps:\n" + "".join(
        f"  - {step}\n".replace("'", '"') for step in steps
    )
    await page.fill("#plan", yaml_text)
    await page.fill("input[name=max_steps]", "0")
    await page.click("button:has-text('Start')")
    # a bad limit is said, naming it, and the form keeps what was typed
    assert "limit max_steps" in await page.inner_text("p.error")
    assert await page.input_value("#plan") == yaml_text
    await page.fill("input[name=max_steps]", "50")
    await page.click("button:has-text('Start')")
    await page.wait_for_url(f"{live}/runs/*")
    # the page follows the run live, then shows its end
    await page.wait_for_selector("#run-status.succeeded", timeout=20_000)
    await page.wait_for_selector("pre.report")
    assert "all 2 steps verified" in await page.inner_text("pre.report")
    assert "/ 50" in await page.inner_text("dl.usage")  # the limit given in the form
    # the agents' lanes: a bar per turn, labelled with the step and tool, and the verdicts
    lanes = page.locator("#lanes .lane")
    nodes = [await lane.get_attribute("data-node") for lane in await lanes.all()]
    assert {"meta", "atlas", "tetyana", "grisha"} <= set(nodes), nodes
    turns = await page.locator('.lane[data-node="tetyana"] .turn').all()
    titles = [await turn.get_attribute("title") or "" for turn in turns]
    assert any("think: python.run" in title for title in titles), titles
    assert await page.locator('.lane[data-node="grisha"] .turn.ok').count() == 2
    kinds = await page.locator("#timeline .kind").all_inner_texts()
    assert "tool_call" in kinds and "verdict" in kinds and "run_finished" in kinds
    await _shot(page, "run-page")
    await page.click("nav >> text=Runs")
    row = page.locator("tr[data-run]").first
    assert "notes from the form" in await row.inner_text()
    assert await row.locator(".badge").inner_text() == "succeeded"
    await _shot(page, "runs-list")


async def test_the_list_updates_live(browser: Any, live: str, token: Callable[..., str]) -> None:
    admin = token("admin")
    page = await _logged_in(browser, live, admin, dark=True)
    async with httpx.AsyncClient(
        base_url=live, headers={"Authorization": f"Bearer {admin}"}
    ) as api:
        created = await api.post("/v1/runs", json={"plan": plan(sleep(1.0), task="appears live")})
        run_id = created.json()["run"]["id"]
        # no reload by the test: the page's event stream brings the row, then its end
        await page.wait_for_selector(f"tr[data-run='{run_id}']", timeout=10_000)
        await page.wait_for_selector(f"tr[data-run='{run_id}'] .badge.succeeded", timeout=20_000)
    await _shot(page, "runs-list-dark")


async def test_approve_with_the_button(browser: Any, live: str, token: Callable[..., str]) -> None:
    admin = token("admin")
    policy = {"rules": [{"tool": "fs.write", "action": "ask", "reason": "a person checks"}]}
    async with httpx.AsyncClient(
        base_url=live, headers={"Authorization": f"Bearer {admin}"}
    ) as api:
        created = await api.post(
            "/v1/runs",
            json={"plan": plan(write("asked"), task="needs a yes"), "permissions": policy},
        )
        run_id = created.json()["run"]["id"]
        await wait_for_status(api, run_id, "awaiting_approval")
        page = await _logged_in(browser, live, token("approvals", "runs:read"))
        await page.click("nav >> text=Approvals")
        card = page.locator(f"section.approval[data-run='{run_id}']")
        assert "a person checks" in await card.inner_text()
        await _shot(page, "approvals")
        await card.locator("input[name=note]").fill("looks right")
        await card.locator("button:has-text('Approve')").click()
        await page.wait_for_url(f"{live}/runs/{run_id}")
        run = await wait_for_status(api, run_id, "succeeded")
        audit = (await api.get(f"/v1/runs/{run_id}/audit")).json()
    assert run["stop_reason"] == "completed"
    assert any(e["decision"] == "approve" and "looks right" in e["reason"] for e in audit), audit


async def test_cancel_with_the_button(browser: Any, live: str, token: Callable[..., str]) -> None:
    admin = token("admin")
    async with httpx.AsyncClient(
        base_url=live, headers={"Authorization": f"Bearer {admin}"}
    ) as api:
        created = await api.post("/v1/runs", json={"plan": plan(sleep(60), task="long")})
        run_id = created.json()["run"]["id"]
        page = await _logged_in(browser, live, token("runs:write"))
        await page.goto(f"{live}/runs/{run_id}")
        await page.click("#cancel")
        run = await wait_for_status(api, run_id, "cancelled", timeout=20)
    assert run["stop_reason"] == "cancelled"
    await page.goto(f"{live}/runs/{run_id}")
    await page.wait_for_selector("#run-status.cancelled")
    await _shot(page, "cancelled")


async def test_a_form_without_its_csrf_token_is_refused(
    live: str, token: Callable[..., str]
) -> None:
    secret = token("runs:write")
    async with httpx.AsyncClient(base_url=live, cookies={"trinity_session": secret}) as web:
        answer = await web.post("/new", data={"plan": "steps: []", "csrf": "forged"})
    assert answer.status_code == 403 and "CSRF" in answer.json()["detail"]


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    """The dashboard's server evaluates an alert rule twice a second."""
    rule = AlertRule(name="errors", kind="error_rate", threshold=0.3, window_s=3600)
    return server_settings.model_copy(update={"alerts": [rule], "alert_interval_s": 0.5})


async def test_the_monitor_page_shows_charts_alerts_and_the_report(
    browser: Any, live: str, token: Callable[..., str]
) -> None:
    admin = token("admin")
    failing = {"id": "bad", "tool": "shell.run", "args": {"command": "exit 3"}}
    async with httpx.AsyncClient(
        base_url=live, headers={"Authorization": f"Bearer {admin}"}
    ) as api:
        for steps in ([write("m1")], [write("m2")], [failing]):
            created = await api.post("/v1/runs", json={"plan": plan(*steps)})
            await wait_for_status(
                api, created.json()["run"]["id"], "failed" if steps[0] is failing else "succeeded"
            )
    page = await _logged_in(browser, live, admin)
    await page.click("nav >> text=Monitor")
    await page.wait_for_url(f"{live}/monitor")
    # the server's evaluator fires the alert (1 of 3 runs failed, over 30%) within a second
    for _ in range(20):
        state = await page.locator('tr[data-alert="errors"] .badge').inner_text()
        if state == "firing":
            break
        await page.wait_for_timeout(300)
        await page.reload()
    assert state == "firing"
    assert "1 of 3 runs failed" in await page.inner_text('tr[data-alert="errors"]')
    summary = await page.inner_text("#report-summary")
    assert summary.startswith("3 runs — 2 completed, 1 failed (33.3% errors)")
    assert "shell.run" in await page.inner_text("#tools")
    bars = page.locator("svg.chart").first.locator("rect")
    heights = [float(await bar.get_attribute("height") or 0) for bar in await bars.all()]
    assert sum(h > 0 for h in heights) >= 1 and len(heights) == 24  # a bar per hour
    await _shot(page, "monitor")
