"""Prometheus metrics, made from the runs' events.

:class:`RunMetrics` is an event sink (the Runtime subscribes one per process): each event a run
emits updates counters and histograms (runs started and finished, run time, steps, LLM calls by
provider and model with the GenAI semantic conventions' names and buckets, tool calls by server
and tool, loop and stall findings, MCP server problems, cost). :class:`StoreCollector` reads
what only the database knows at scrape time (runs by status: active runs, pending approvals,
and how long the oldest of each has waited), so the numbers hold across processes.

Several processes (``trinity serve --workers N``, CLI runs next to a ``trinity metrics serve``)
share their metrics through prometheus-client's multiprocess mode: :func:`use_directory` names
the folder before the library is imported (the ``metrics_dir`` setting).

Label values are redacted (a model string may carry a URL with credentials) and cut to 200
characters.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trinity.observability import Repeats
from trinity.security.secrets import redact
from trinity.tools.builtin import BUILTIN_SPECS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from trinity.events import EventBase
    from trinity.store import Store

log = logging.getLogger("trinity.metrics")
log.addFilter(Repeats())  # a bad file would be said at every scrape
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format, as a scrape expects it."""
_BUILTIN_NAMESPACES = frozenset(spec.name.split(".")[0] for spec in BUILTIN_SPECS)

# The OpenTelemetry GenAI semantic conventions' explicit bucket boundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip
RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
STEP_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


SERIES_PER_METRIC = 500
"""The label sets a metric takes before new ones are counted as :data:`OTHER`."""
OTHER = "other"

_PROCESS: RunMetrics | None = None


def process_metrics(metrics_dir: Path | None = None) -> RunMetrics:
    """The process's one :class:`RunMetrics` (prometheus-client's registry takes each metric
    once); ``metrics_dir`` (the setting) shares it with other processes."""
    global _PROCESS
    if _PROCESS is None:
        if metrics_dir is not None:
            use_directory(metrics_dir)
        _PROCESS = RunMetrics()
    return _PROCESS


def use_directory(folder: str | Path) -> None:
    """Share metrics with the other processes writing to ``folder`` (made if missing). Call it
    before prometheus-client is imported: the library picks its value storage at import."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)


def _label(value: object) -> str:
    return redact(str(value))[:200]


def provider_of(model: str) -> str:
    """``openai:gpt-4o`` → ``openai`` (the GenAI conventions' ``gen_ai.provider.name``)."""
    kind = model.partition(":")[0]
    return {"openai-compatible": "openai", "scripted": "scripted"}.get(kind, kind) or "unknown"


class RunMetrics:
    """The process's metrics, and the sink that keeps them (``metrics(event)``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # no `_created` series: they double what a scrape carries
        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        self.runs_started = Counter(
            "trinity_runs_started", "Runs started or resumed", ["resumed"], registry=reg
        )
        self.runs_finished = Counter(
            "trinity_runs_finished",
            "Runs that ended, by stop reason",
            ["stop_reason"],
            registry=reg,
        )
        self.run_duration = Histogram(
            "trinity_run_duration_seconds",
            "Wall-clock time of a run's execution (from its start or resume to its end)",
            ["stop_reason"],
            buckets=RUN_BUCKETS,
            registry=reg,
        )
        self.run_steps = Histogram(
            "trinity_run_steps",
            "Graph steps a run had taken when it ended",
            ["stop_reason"],
            buckets=STEP_BUCKETS,
            registry=reg,
        )
        common = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
        self.llm_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration (gen_ai.client.operation.duration) of the calls that "
            "answered (failed ones: trinity_llm_errors)",
            common,
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.llm_tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per GenAI operation (gen_ai.client.token.usage)",
            [*common, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=reg,
        )
        self.llm_errors = Counter(
            "trinity_llm_errors",
            "LLM calls that failed for good, after their retries",
            ["gen_ai_provider_name", "gen_ai_request_model"],
            registry=reg,
        )
        self.llm_retries = Counter(
            "trinity_llm_retries",
            "LLM attempts retried (timeouts, 429, 5xx)",
            ["purpose"],
            registry=reg,
        )
        self.llm_cost = Counter(
            "trinity_llm_cost_usd",
            "What the LLM calls cost, in US dollars (priced models only)",
            ["gen_ai_provider_name", "gen_ai_request_model"],
            registry=reg,
        )
        self.tool_duration = Histogram(
            "trinity_tool_call_duration_seconds",
            "Tool call duration",
            ["server", "tool", "ok"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.tool_errors = Counter(
            "trinity_tool_call_errors", "Tool calls that failed", ["server", "tool"], registry=reg
        )
        self.findings = Counter(
            "trinity_progress_findings",
            "Loops and stalls the Meta-Planner found",
            ["kind"],
            registry=reg,
        )
        self.verdicts = Counter(
            "trinity_verdicts", "Grisha's verdicts", ["passed", "level"], registry=reg
        )
        self.server_problems = Counter(
            "trinity_mcp_server_problems",
            "MCP server failures (start, crash, timeout; each is followed by a restart)",
            ["server"],
            registry=reg,
        )
        self.approvals_requested = Counter(
            "trinity_approvals_requested", "Runs paused for a person", ["question"], registry=reg
        )
        self._started: dict[str, float] = {}
        self._tools: dict[str, str] = {}  # run id -> the tool its current call is on
        self._handlers: dict[str, Callable[[Any], None]] = {
            "run_started": self._run_started,
            "run_finished": self._run_finished,
            "llm_call": self._llm_call,
            "llm_failed": self._llm_failed,
            "llm_retry": lambda e: self._of(self.llm_retries, _label(e.purpose)).inc(),
            "tool_call": self._tool_call,
            "tool_result": self._tool_result,
            "verdict": lambda e: self._of(self.verdicts, str(e.passed).lower(), e.level).inc(),
            "progress": lambda e: self._of(self.findings, e.finding.kind.value).inc(),
            "tool_server_problem": lambda e: self._of(self.server_problems, _label(e.server)).inc(),
            "approval_requested": lambda e: self._of(self.approvals_requested, e.question).inc(),
        }
        self._steps: dict[str, int] = {}
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._series: dict[Any, int] = {}

    def _of(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered (prometheus-client's look-up costs ~3 µs).
        A metric takes :data:`SERIES_PER_METRIC` label sets; a new one past them is counted
        under ``other`` (model names come from API callers and tool names from MCP servers: an
        endless supply of them would grow every scrape and this process without bound)."""
        key = (metric, values)
        child = self._children.get(key)
        if child is not None:
            return child
        taken = self._series.get(metric, 0)
        if taken < SERIES_PER_METRIC:
            self._series[metric] = taken + 1
            child = self._children[key] = metric.labels(*values)
            return child
        if taken == SERIES_PER_METRIC:
            self._series[metric] = taken + 1
            log.warning(
                "metric %s has %d label sets: new ones are counted as %r",
                metric._name,
                SERIES_PER_METRIC,
                OTHER,
            )
        other = (metric, (OTHER,) * len(values))
        child = self._children.get(other)
        if child is None:
            child = self._children[other] = metric.labels(*other[1])
        return child

    def __call__(self, event: EventBase) -> None:
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(event)
        elif event.kind == "node_finished":
            self._steps[event.run_id] = event.step  # type: ignore[attr-defined]

    def _run_started(self, event: Any) -> None:
        self._of(self.runs_started, str(event.resumed).lower()).inc()
        self._started[event.run_id] = event.ts
        self._steps[event.run_id] = event.step

    def _run_finished(self, event: Any) -> None:
        reason = event.stop_reason
        self._of(self.runs_finished, reason).inc()
        started = self._started.pop(event.run_id, None)
        if started is not None:
            self._of(self.run_duration, reason).observe(max(0.0, event.ts - started))
        self._of(self.run_steps, reason).observe(self._steps.pop(event.run_id, 0))
        self._tools.pop(event.run_id, None)

    def _llm_call(self, event: Any) -> None:
        model = _label(event.model)
        provider = provider_of(event.model)
        operation = ("chat", provider, model)
        self._of(self.llm_duration, *operation).observe(event.latency_s)
        self._of(self.llm_tokens, *operation, "input").observe(event.input_tokens)
        self._of(self.llm_tokens, *operation, "output").observe(event.output_tokens)
        if event.cost_usd:
            self._of(self.llm_cost, provider, model).inc(event.cost_usd)

    def _llm_failed(self, event: Any) -> None:
        self._of(self.llm_errors, provider_of(event.model), _label(event.model)).inc()

    def _tool_call(self, event: Any) -> None:
        self._tools[event.run_id] = event.tool

    def _tool_result(self, event: Any) -> None:
        tool = self._tools.pop(event.run_id, "unknown")
        namespace = tool.split(".", 1)[0]
        server = "builtin" if namespace in _BUILTIN_NAMESPACES else namespace
        labels = (_label(server), _label(tool))
        self._of(self.tool_duration, *labels, str(event.ok).lower()).observe(event.seconds)
        if not event.ok:
            self._of(self.tool_errors, *labels).inc()


class StoreCollector:
    """What the database knows, read at each scrape: runs by status, and how long the oldest
    running run and the oldest run awaiting a person have been so."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        counts, oldest = self._store().run_gauges()
        runs = GaugeMetricFamily("trinity_runs", "Stored runs by status", labels=["status"])
        for status, count in sorted(counts.items()):
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily(
            "trinity_runs_active", "Runs executing now", value=counts.get("running", 0)
        )
        yield GaugeMetricFamily(
            "trinity_approvals_pending",
            "Runs waiting for a person",
            value=counts.get("awaiting_approval", 0),
        )
        age = GaugeMetricFamily(
            "trinity_oldest_run_age_seconds",
            "How long the oldest run in a status has been in it (running: since created; "
            "awaiting_approval: since the person was asked)",
            labels=["status"],
        )
        now = time.time()
        for status, since in sorted(oldest.items()):
            age.add_metric([status], max(0.0, now - since))
        yield age


def exposition(registry: CollectorRegistry | None, store: Callable[[], Store] | None) -> bytes:
    """The text a scrape gets: this process's metrics, or every process's in multiprocess
    mode, and the store's gauges."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if os.environ.get(MULTIPROC_ENV):
        reg = CollectorRegistry()
        reg.register(_ReadableFiles(os.environ[MULTIPROC_ENV], multiprocess.MultiProcessCollector))
    else:
        reg = registry if registry is not None else REGISTRY
    if store is None:
        return generate_latest(reg)
    combined = CollectorRegistry()
    combined.register(_Of(reg))
    combined.register(StoreCollector(store))
    return generate_latest(combined)


class _ReadableFiles:
    """prometheus-client's multiprocess merge of the folder's files, without those it cannot
    read: a file a process left truncated (killed while it grew, a full disk) made every
    scrape fail, so one bad file blinded the monitoring of every process. Such a file is left
    out of the scrape (not moved: a live process may still write to it) with a warning a
    minute."""

    def __init__(self, folder: str, collector: Any) -> None:
        self.folder = folder
        self.merge = collector.merge

    def collect(self) -> Any:
        files = sorted(glob.glob(os.path.join(self.folder, "*.db")))
        try:
            return self.merge(files, accumulate=True)
        except Exception:  # find which: the others still count
            readable = []
            for name in files:
                try:
                    self.merge([name], accumulate=True)
                except Exception as exc:
                    log.warning("metrics file %s cannot be read, left out: %s", name, exc)
                    continue
                readable.append(name)
            return self.merge(readable, accumulate=True)


class _Of:
    """Another registry's metrics, as one collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
