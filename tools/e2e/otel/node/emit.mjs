// A Node.js service traced with OpenTelemetry's own SDK, exporting to Tally's ingest over OTLP/HTTP
// exactly as docs/otlp.md configures it. It replays a generated trace set (tools/loadgen's
// TraceSet, as JSON): one tracer provider per service (its resource), every span with its parent,
// times, attributes, events and status.
//
//   node emit.mjs SET.json URL KEY proto|json
//
// URL is ingest's base URL; the exporter posts to URL/v1/traces. Exits non-zero when an export
// failed after the exporter's own retries.
import { readFileSync } from 'node:fs';
import { context, trace, SpanStatusCode, SpanKind } from '@opentelemetry/api';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';

const [file, url, key, protocol] = process.argv.slice(2);
if (!file || !url || !key || !['proto', 'json'].includes(protocol)) {
  console.error('usage: node emit.mjs SET.json URL KEY proto|json');
  process.exit(2);
}
const set = JSON.parse(readFileSync(file, 'utf8'));

// Nanoseconds since the epoch, sent as a decimal string: exact as [seconds, nanoseconds].
const hrTime = (nanos) => {
  const n = BigInt(nanos);
  return [Number(n / 1000000000n), Number(n % 1000000000n)];
};

const value = (v) => {
  switch (v.type) {
    case 'string':
    case 'bool':
    case 'string_array':
      return v.value;
    case 'int':
    case 'double':
      return Number(v.value);
    default:
      throw new Error(`unknown attribute type ${v.type}`);
  }
};
const attributes = (list) => Object.fromEntries(list.map((a) => [a.key, value(a.value)]));

// Records what the exporter could not deliver, after its own retries.
class Watched {
  constructor(inner) {
    this.inner = inner;
    this.failures = [];
  }
  export(spans, done) {
    this.inner.export(spans, (result) => {
      if (result.code !== 0) this.failures.push(result.error ? result.error.message : 'failed');
      done(result);
    });
  }
  shutdown() {
    return this.inner.shutdown();
  }
  forceFlush() {
    return this.inner.forceFlush ? this.inner.forceFlush() : Promise.resolve();
  }
}

const failures = [];
for (const service of set.services) {
  const Exporter = protocol === 'proto' ? ProtoExporter : JsonExporter;
  const exporter = new Watched(
    new Exporter({
      url: `${url}/v1/traces`,
      headers: { Authorization: `Bearer ${key}` },
    }),
  );
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes(attributes(service.resource)),
    spanProcessors: [new BatchSpanProcessor(exporter, { maxExportBatchSize: 64 })],
  });
  const tracer = provider.getTracer('tally-e2e');
  const emit = (spec, parentContext) => {
    const span = tracer.startSpan(
      spec.name,
      { kind: SpanKind.CLIENT, startTime: hrTime(spec.start_unix_nano), attributes: attributes(spec.attributes) },
      parentContext,
    );
    for (const event of spec.events) {
      span.addEvent(event.name, attributes(event.attributes), hrTime(event.time_unix_nano));
    }
    if (spec.error) span.setStatus({ code: SpanStatusCode.ERROR, message: 'failed' });
    const childContext = trace.setSpan(parentContext, span);
    for (const child of spec.children) emit(child, childContext);
    span.end(hrTime(spec.end_unix_nano));
  };
  // A root span has no parent: start each trace from an empty context.
  for (const root of service.traces) emit(root, trace.deleteSpan(context.active()));
  await provider.forceFlush();
  await provider.shutdown();
  failures.push(...exporter.failures);
}
if (failures.length > 0) {
  console.error(`export failed: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('exported');
