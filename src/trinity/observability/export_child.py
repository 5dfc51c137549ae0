"""The process that exports a Trinity process's spans (``python -m
trinity.observability.export_child``): it reads batches of :class:`~.spans.SpanRecord` from
its standard input (a 4-byte length, then their tuples, marshalled), turns them into the
OpenTelemetry SDK's ``ReadableSpan`` and hands them to the exporters the ``OTEL_*`` variables
choose. When its input closes it exports what is left and exits. Its parent is the only writer
of the pipe."""

from __future__ import annotations

import marshal
import os
import struct
import sys
from typing import Any

from trinity.observability.spans import SpanRecord


def exporters_from_env() -> list[Any]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (``otlp`` over http/protobuf or grpc,
    ``console``)."""
    chosen = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    found: list[Any] = []
    for name in (part.strip() for part in chosen.split(",") if part.strip() != "none"):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                found.append(GrpcExporter())
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpExporter,
                )

                found.append(HttpExporter())
        else:
            from trinity.errors import ConfigError

            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={chosen!r}: Trinity knows otlp, console and none"
            )
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


def main() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    exporters = exporters_from_env()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "trinity")})
    scope = InstrumentationScope("trinity")
    stream = sys.stdin.buffer
    while True:
        head = stream.read(4)
        if len(head) < 4:
            break
        (size,) = struct.unpack(">I", head)
        batch = [SpanRecord(*row) for row in marshal.loads(stream.read(size))]
        spans = readable(batch, resource, scope)
        for exporter in exporters:
            try:
                exporter.export(spans)
            except Exception as exc:  # a collector that is down: these spans are lost
                print(f"trinity: span export failed: {exc}", file=sys.stderr)
    for exporter in exporters:
        exporter.shutdown()


if __name__ == "__main__":
    main()
