"""A Python service traced with OpenTelemetry's own SDK, exporting to Tally's ingest over OTLP/HTTP
(protobuf, gzip) exactly as docs/otlp.md configures it, or over OTLP/gRPC to an OpenTelemetry
Collector that forwards to Tally. It replays a generated trace set (tools/loadgen's TraceSet, as
JSON): one tracer provider per service (its resource), every span with its parent, times,
attributes, events and status.

    python emit.py SET.json URL KEY [http|grpc]

With http (the default) URL is ingest's base URL and the exporter posts to URL/v1/traces, with the
key in its Authorization header. With grpc URL is the Collector's gRPC endpoint (host:port, no
TLS) and the key is not sent: the Collector holds it. Exits non-zero when an export failed after
the exporter's own retries.
"""

import json
import sys

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context


def value(v):
    kind = v["type"]
    if kind in ("string", "bool", "string_array"):
        return v["value"]
    if kind == "int":
        return int(v["value"])
    if kind == "double":
        return float(v["value"])
    raise ValueError(f"unknown attribute type {kind}")


def attributes(entries):
    return {a["key"]: value(a["value"]) for a in entries}


class Watched(SpanExporter):
    """Counts the exports that failed after the exporter's own retries."""

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result != SpanExportResult.SUCCESS:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def emit(tracer, spec, parent):
    span = tracer.start_span(
        spec["name"],
        context=parent,
        kind=SpanKind.CLIENT,
        attributes=attributes(spec["attributes"]),
        start_time=int(spec["start_unix_nano"]),
    )
    for event in spec["events"]:
        span.add_event(event["name"], attributes(event["attributes"]), int(event["time_unix_nano"]))
    if spec["error"]:
        span.set_status(Status(StatusCode.ERROR, "failed"))
    child_context = set_span_in_context(span, parent)
    for child in spec["children"]:
        emit(tracer, child, child_context)
    span.end(end_time=int(spec["end_unix_nano"]))


def exporter_for(protocol, url, key):
    if protocol == "http":
        return OTLPSpanExporter(
            endpoint=f"{url}/v1/traces",
            headers={"Authorization": f"Bearer {key}"},
            compression=Compression.Gzip,
        )
    from grpc import Compression as GrpcCompression
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    return GrpcExporter(endpoint=url, insecure=True, compression=GrpcCompression.Gzip)


def main():
    if len(sys.argv) not in (4, 5):
        print("usage: python emit.py SET.json URL KEY [http|grpc]", file=sys.stderr)
        return 2
    path, url, key = sys.argv[1:4]
    protocol = sys.argv[4] if len(sys.argv) == 5 else "http"
    with open(path, encoding="utf-8") as f:
        trace_set = json.load(f)
    failures = 0
    for service in trace_set["services"]:
        exporter = Watched(exporter_for(protocol, url, key))
        provider = TracerProvider(resource=Resource.create(attributes(service["resource"])))
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
        tracer = provider.get_tracer("tally-e2e")
        for root in service["traces"]:
            # A root span has no parent: start each trace from an empty context.
            emit(tracer, root, Context())
        provider.force_flush()
        provider.shutdown()
        failures += exporter.failures
    if failures:
        print(f"export failed {failures} time(s)", file=sys.stderr)
        return 1
    print("exported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
