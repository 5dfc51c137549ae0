"""The process that exports a Trinity process's spans (``python -m
trinity.observability.export_child``): it reads frames of trace messages from its standard
input (:mod:`.shipping` writes them), makes spans of them (:class:`.spanbuilder.SpanBuilder`),
turns those into the OpenTelemetry SDK's ``ReadableSpan`` and hands them to a
``BatchSpanProcessor`` per exporter the ``OTEL_*`` variables choose. When its input closes
(the parent exited, or was killed) it ends what is still open, exports what is left and exits.
Its parent is the only writer of the pipe."""

from __future__ import annotations

import logging
import marshal
import os
import struct
import sys
import threading
from typing import Any

from trinity.observability import Repeats
from trinity.observability.shipping import EXIT_WAIT_S
from trinity.observability.spanbuilder import SpanBuilder
from trinity.observability.spans import SpanRecord


def exporter_names() -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names, checked (``otlp`` as ``otlp-grpc`` or
    ``otlp-http`` by ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``; ``console``), without importing
    them: a bad value is a ConfigError in the run's process, which never loads the SDK."""
    from trinity.errors import ConfigError

    chosen = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    names = []
    for name in (part.strip() for part in chosen.split(",") if part.strip() not in ("", "none")):
        if name == "otlp":
            variable = (
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                if "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" in os.environ
                else "OTEL_EXPORTER_OTLP_PROTOCOL"
            )
            protocol = os.environ.get(variable, "http/protobuf").strip().lower()
            if protocol not in ("grpc", "http/protobuf"):
                raise ConfigError(
                    f"{variable}={protocol!r}: Trinity exports traces over grpc or http/protobuf"
                )
            names.append("otlp-grpc" if protocol == "grpc" else "otlp-http")
        elif name == "console":
            names.append(name)
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={chosen!r}: Trinity knows otlp, console and none"
            )
    return names


def exporters_from_env() -> list[Any]:
    """The exporters :func:`exporter_names` names, made."""
    found: list[Any] = []
    for name in exporter_names():
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter())
        elif name == "otlp-grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            found.append(GrpcExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            found.append(HttpExporter())
    return found


def readable(records: list[SpanRecord], resource: Any, scope: Any) -> list[Any]:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    sampled = TraceFlags(TraceFlags.SAMPLED)
    made = []
    for r in records:
        parent = (
            SpanContext(r.trace_id, r.parent_id, is_remote=r.remote_parent, trace_flags=sampled)
            if r.parent_id
            else None
        )
        status = Status(StatusCode.ERROR, r.error) if r.error is not None else Status()
        made.append(
            ReadableSpan(
                name=r.name,
                context=SpanContext(r.trace_id, r.span_id, is_remote=False, trace_flags=sampled),
                parent=parent,
                resource=resource,
                attributes=r.attributes,
                kind=SpanKind.INTERNAL,
                status=status,
                start_time=r.start_ns,
                end_time=r.end_ns,
                instrumentation_scope=scope,
            )
        )
    return made


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trinity span export: %(levelname)s %(message)s"))
    handler.addFilter(Repeats())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def main() -> None:
    """Read frames until the input closes; export through the SDK's batch span processor
    (``OTEL_BSP_*`` apply): reading never waits for an export, so the parent's pipe drains
    even while a collector is slow."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    _logging()
    processors = [BatchSpanProcessor(exporter) for exporter in exporters_from_env()]
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "trinity")})
    scope = InstrumentationScope("trinity")
    export_now = threading.Event()

    def flusher() -> None:  # a run ended: its spans go now, not at the next schedule
        while True:
            export_now.wait()
            export_now.clear()
            for processor in processors:
                processor.force_flush()

    threading.Thread(target=flusher, name="flush", daemon=True).start()
    records: list[SpanRecord] = []
    builder = SpanBuilder(records.append)

    def export(made: list[SpanRecord]) -> None:
        spans = readable(made, resource, scope)
        made.clear()
        for processor in processors:
            for span in spans:
                processor.on_end(span)

    stream = sys.stdin.buffer
    while True:
        head = stream.read(4)
        if len(head) < 4:
            break
        (size,) = struct.unpack(">I", head)
        if size == 0:
            export_now.set()
            continue
        data = stream.read(size)
        if len(data) < size:
            break  # the parent died mid-frame
        for message in marshal.loads(data):
            try:
                builder(message)
            except Exception:  # a message this version does not know: the others still count
                logging.getLogger("trinity.tracing").exception("bad trace message %.200r", message)
        export(records)
    builder.close_all()  # the traced process is gone: what it left open ends, as cut off
    export(records)
    # Past the parent's wait, a slow collector's last exports go on alone: let go of the
    # parent's output, so a pipe reading it (``trinity run ... | jq``) sees its end.
    detach = threading.Timer(EXIT_WAIT_S, _detach)
    detach.daemon = True
    detach.start()
    for processor in processors:
        processor.shutdown()


def _detach() -> None:
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)


if __name__ == "__main__":
    main()
