import { Bytes, Int, Money } from '../components/Figures';
import { ScrollTable } from '../components/ScrollTable';
import { Loaded } from '../components/Status';
import { UsageBar } from '../components/UsageBar';
import {
  basisPoints, formatBasisPoints, formatCents, formatDuration, formatGB, formatInt, formatLocal, formatQuantity, formatUtc,
  localTimeZone, periodLabel, tierName,
} from '../format';
import type { Resource } from '../hooks';
import { useNow } from '../hooks';
import { amount, overageCents, overagePrice, tierOf } from '../pricing';
import type { Line, PeriodUsage, Pricing, Projection, Warning } from '../types';

interface Props {
  usage: Resource<PeriodUsage>;
  projection: Resource<Projection>;
  pricing: Resource<Pricing>;
}

export function ThisPeriod({ usage, projection, pricing }: Props) {
  return (
    <section id="this-period" class="section" aria-labelledby="this-period-h">
      <h2 id="this-period-h">This period</h2>
      <Loaded resource={usage} what="this period's usage">
        {(u) => (
          <div class="period-grid">
            <div>
              <PeriodDates usage={u} />
              <div class="card">
                <UsageBar metric="traces" used={u.traces} included={u.included.traces} />
                <UsageBar metric="payload_bytes" used={u.payload_bytes} included={u.included.payload_bytes} />
              </div>
              <Warnings usage={u} pricing={pricing.data} />
            </div>
            <div>
              <CostTable usage={u} />
              <ProjectionCard projection={projection} />
            </div>
          </div>
        )}
      </Loaded>
    </section>
  );
}

function PeriodDates({ usage }: { usage: PeriodUsage }) {
  const now = useNow(60_000);
  const start = new Date(usage.period.start);
  const end = new Date(usage.period.end);
  const left = end.getTime() - now.getTime();
  return (
    <div class="card period-dates">
      <p class="period-name">
        <strong>{periodLabel(usage.period.id)}</strong> <span class={`badge badge-${usage.period.state}`}>{usage.period.state}</span>
      </p>
      <dl class="pairs">
        <dt>UTC</dt>
        <dd>
          <time dateTime={usage.period.start}>{formatUtc(start)}</time> – <time dateTime={usage.period.end}>{formatUtc(end)}</time>
        </dd>
        <dt>Your time ({localTimeZone()})</dt>
        <dd>
          {formatLocal(start)} – {formatLocal(end)}
        </dd>
        <dt>Time left</dt>
        <dd>{left > 0 ? formatDuration(left) : 'The period has ended'}</dd>
      </dl>
    </div>
  );
}

function Warnings({ usage, pricing }: { usage: PeriodUsage; pricing: Pricing | null }) {
  return (
    <div class="warnings" aria-live="polite">
      {usage.warnings.map((w) => (
        <WarningBanner key={`${w.metric}:${w.level}`} warning={w} usage={usage} pricing={pricing} />
      ))}
    </div>
  );
}

function WarningBanner({ warning, usage, pricing }: { warning: Warning; usage: PeriodUsage; pricing: Pricing | null }) {
  const metric = warning.metric;
  const used = metric === 'traces' ? usage.traces : usage.payload_bytes;
  const included = metric === 'traces' ? usage.included.traces : usage.included.payload_bytes;
  const pct = formatBasisPoints(basisPoints(used, included));
  const exceeded = warning.level === 'exceeded';
  const tier = pricing ? tierOf(pricing, usage.tier) : undefined;
  const price = tier ? overagePrice(metric, tier[metric]) : null;
  const what = metric === 'traces' ? 'Traces' : 'Payload';
  const plan = `your ${tier?.name ?? tierName(usage.tier)} plan`;
  const beyond = metric === 'traces' ? `Traces beyond ${formatInt(included)}` : `Payload beyond ${formatGB(included)}`;
  const over = overageCents(usage.cost.lines, metric);
  return (
    <div class={`banner banner-${warning.level}`} data-tally="warning" data-value={`${metric}:${exceeded ? 100 : 90}`}>
      <p>
        <strong>
          {exceeded ? `${what}: over the included amount (${pct})` : `${what}: ${pct} of the included amount`}
        </strong>
      </p>
      <p>
        {exceeded
          ? `You have used ${amount(metric, used)}, more than the ${amount(metric, included)} included in ${plan}. `
          : `You have used ${amount(metric, used)} of the ${amount(metric, included)} included in ${plan}. `}
        {price ? `${beyond} are billed at ${price}.` : `${beyond} are billed as overage.`}
        {exceeded && over > 0n && ` So far that adds ${formatCents(over)} to this period's invoice.`}
      </p>
    </div>
  );
}

export function LinesTable({ lines, label, total, totalTag }: { lines: Line[]; label: string; total: bigint; totalTag?: Record<string, string> }) {
  return (
    <ScrollTable label={label}>
      <table class="lines">
        <caption class="visually-hidden">{label}</caption>
        <thead>
          <tr>
            <th scope="col">Line</th>
            <th scope="col" class="r">
              Quantity
            </th>
            <th scope="col" class="r">
              Amount
            </th>
          </tr>
        </thead>
        <tbody>
          {lines.map((l, i) => (
            <tr key={i}>
              <th scope="row" class="line-desc">
                {l.description}
              </th>
              <td class="r num" title={l.metric === 'payload_bytes' ? `${formatInt(l.quantity)} bytes` : undefined}>
                {formatQuantity(l.metric, l.quantity)}
              </td>
              <td class="r num">{formatCents(l.amount_cents)}</td>
            </tr>
          ))}
        </tbody>
        <tfoot>
          <tr>
            <th scope="row" colSpan={2}>
              Total
            </th>
            <td class="r num total" {...(totalTag ?? {})}>
              {formatCents(total)}
            </td>
          </tr>
        </tfoot>
      </table>
    </ScrollTable>
  );
}

function CostTable({ usage }: { usage: PeriodUsage }) {
  const final = usage.cost.status === 'final';
  const title = final ? 'Final invoice' : 'Draft invoice, so far';
  return (
    <div class="card">
      <h3>{title}</h3>
      <p class="muted">
        {final
          ? `The period has closed and its invoice is final (pricing ${usage.cost.pricing_version}).`
          : `What this period costs if it ended now, priced on your current plan (pricing ${usage.cost.pricing_version}). It changes as usage arrives.`}
      </p>
      <LinesTable
        lines={usage.cost.lines}
        label={title}
        total={usage.cost.total_cents}
        totalTag={{ 'data-tally': 'draft_total_cents', 'data-value': usage.cost.total_cents.toString() }}
      />
    </div>
  );
}

function ProjectionCard({ projection }: { projection: Resource<Projection> }) {
  return (
    <div class="card projection">
      <h3>Projection</h3>
      <Loaded resource={projection} what="the projection">
        {(p) => {
          const elapsed = p.period_secs > 0n ? basisPoints(p.elapsed_secs, p.period_secs) : null;
          return (
            <>
              <p class="muted">
                If the rest of the period goes as the part so far ({formatBasisPoints(elapsed)} of it has passed). An estimate, as
                of {formatUtc(new Date(p.as_of))}; it is never billed.
              </p>
              <dl class="pairs">
                <dt>Projected traces</dt>
                <dd>
                  <Int value={p.projected.traces} name="projected_traces" />
                </dd>
                <dt>Projected payload</dt>
                <dd>
                  <Bytes value={p.projected.payload_bytes} exact name="projected_payload_bytes" />
                </dd>
                <dt>Projected cost ({tierName(p.projected_cost.tier)})</dt>
                <dd class="big">
                  <Money cents={p.projected_cost.total_cents} name="projected_total_cents" />
                </dd>
              </dl>
            </>
          );
        }}
      </Loaded>
    </div>
  );
}
