// Trinity dashboard: theme switch and live updates over the API's event streams (SSE).
(() => {
  const root = document.documentElement;
  const saved = localStorage.getItem("trinity-theme");
  if (saved) root.dataset.theme = saved;
  document.getElementById("theme")?.addEventListener("click", () => {
    const dark = root.dataset.theme === "dark" ||
      (!root.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
    root.dataset.theme = dark ? "light" : "dark";
    localStorage.setItem("trinity-theme", root.dataset.theme);
  });

  const live = document.getElementById("live");
  const page = document.body.dataset.page;
  const stream = (url, onEvent) => {
    const source = new EventSource(url);  // same origin: the session cookie goes along
    source.onopen = () => live?.classList.add("on");
    source.onerror = () => live?.classList.remove("on");  // EventSource reconnects itself
    source.onmessage = (m) => onEvent(JSON.parse(m.data));
    const kinds = ["run_started", "run_finished", "checkpoint", "node_finished", "tool_call",
      "tool_result", "verdict", "plan", "llm_call", "llm_retry", "llm_streaming", "decision",
      "approval_requested", "permission", "cancel_requested", "node_started", "policy",
      "lessons_recalled", "lessons_stored", "progress", "run_error", "llm_failed"];
    for (const kind of kinds) source.addEventListener(kind, (m) => onEvent(JSON.parse(m.data)));
    return source;
  };
  const brief = (data) => JSON.stringify(data).slice(0, 240);

  let reloading = null;
  const reloadSoon = (ms = 400) => { clearTimeout(reloading); reloading = setTimeout(() => location.reload(), ms); };

  if (page === "runs") {
    stream("/v1/events/stream", (e) => {
      const row = document.querySelector(`tr[data-run="${e.run_id}"]`);
      if (!row) { reloadSoon(); return; }
      if (e.kind === "checkpoint" || e.kind === "run_finished" || e.kind === "node_finished") {
        fetch(`/v1/runs/${e.run_id}`).then((r) => r.ok ? r.json() : null).then((run) => {
          if (!run) return;
          const badge = row.querySelector('[data-field="status"]');
          badge.textContent = run.shown_status.replace("_", " ");
          badge.className = `badge ${run.shown_status}`;
          row.querySelector('[data-field="steps"]').textContent = run.steps || run.state?.step || 0;
          row.querySelector('[data-field="tokens"]').textContent = run.input_tokens + run.output_tokens;
          row.querySelector('[data-field="reason"]').textContent = run.stop_reason || "";
          if (run.finished_at) row.querySelector('[data-field="duration"]').textContent =
            `${(run.finished_at - run.created_at).toFixed(1)} s`;
        });
      }
    });
    setInterval(() => {
      for (const el of document.querySelectorAll(".ticking")) {
        el.textContent = `${(Date.now() / 1000 - Number(el.dataset.since)).toFixed(0)} s`;
      }
    }, 1000);
  }

  if (page === "run") {
    const bar = document.querySelector("[data-run]");
    const runId = bar.dataset.run;
    let lanesDue = null;
    const refreshLanes = () => {  // at most twice a second, however fast the turns come
      if (lanesDue) return;
      lanesDue = setTimeout(() => {
        lanesDue = null;
        fetch(`/runs/${runId}/lanes`).then((r) => r.ok ? r.text() : null).then((html) => {
          if (html) document.getElementById("lanes").outerHTML = html;
        });
      }, 500);
    };
    const timeline = document.getElementById("timeline");
    stream(`/v1/runs/${runId}/events/stream?after_seq=${bar.dataset.lastSeq}`, (e) => {
      const li = document.createElement("li");
      li.className = `ev ${e.kind} new`;
      for (const [cls, text] of [["seq", e.seq], ["t", "live"], ["node", e.node || ""],
        ["kind", e.kind], ["data", brief(e.data)]]) {
        const span = document.createElement("span");
        span.className = cls; span.textContent = text; li.append(span);
      }
      timeline.append(li);
      timeline.scrollTop = timeline.scrollHeight;
      if (e.kind === "node_finished") refreshLanes();
      if (e.kind === "run_finished" || e.kind === "approval_requested") reloadSoon(600);
    });
  }
})();
