import { getInvoice } from '../api';
import { Bytes, Int } from '../components/Figures';
import { Loaded } from '../components/Status';
import { formatCents, formatUtc, periodLabel, tierName } from '../format';
import { useResource } from '../hooks';
import { orgBase } from '../router';
import { invoiceState, stripeState } from './Invoices';
import { LinesTable } from './ThisPeriod';

/** One invoice, printable. */
export function InvoicePage({ orgId, period, admin }: { orgId: string; period: string; admin: boolean }) {
  const invoice = useResource((s) => getInvoice(orgId, period, s), [orgId, period]);
  const back = `${orgBase(orgId, admin)}#invoices`;
  return (
    <>
      <p class="no-print">
        <a href={back}>← Back to {admin ? orgId : 'your usage page'}</a>
      </p>
      <div class="page-title">
        <h1 tabIndex={-1}>
          Invoice, {periodLabel(period)} <span class="muted">· <span class="mono">{orgId}</span></span>
        </h1>
        <button type="button" class="secondary no-print" onClick={() => window.print()}>
          Print
        </button>
      </div>
      <Loaded resource={invoice} what="the invoice">
        {(i) => {
          const s = invoiceState(i);
          return (
            <section class="section" aria-labelledby="inv-h">
              <h2 id="inv-h" class="visually-hidden">
                Invoice details
              </h2>
              <div class="card">
                <dl class="pairs">
                  <dt>Status</dt>
                  <dd>
                    <span class={`badge ${s.className}`}>{s.label}</span>
                    {i.status === 'draft' && ' (the period is open: this follows usage until it closes)'}
                  </dd>
                  <dt>Org</dt>
                  <dd class="mono">{i.org_id}</dd>
                  <dt>Period</dt>
                  <dd>{periodLabel(i.period)}</dd>
                  <dt>Plan</dt>
                  <dd>{tierName(i.tier)}</dd>
                  <dt>Pricing version</dt>
                  <dd class="mono">{i.pricing_version}</dd>
                  <dt>Currency</dt>
                  <dd>{i.currency.toUpperCase()}</dd>
                  <dt>Usage</dt>
                  <dd>
                    <Int value={i.usage.traces} /> traces, <Bytes value={i.usage.payload_bytes} exact />
                  </dd>
                  {i.finalized_at && (
                    <>
                      <dt>Finalized</dt>
                      <dd>
                        <time dateTime={i.finalized_at}>{formatUtc(new Date(i.finalized_at))}</time>
                      </dd>
                    </>
                  )}
                  <dt>Stripe</dt>
                  <dd>
                    {stripeState(i)}
                    {i.stripe && (
                      <>
                        {' '}
                        (invoice <span class="mono">{i.stripe.invoice_id}</span>
                        {i.stripe.total_cents !== null && <>, {formatCents(i.stripe.total_cents)}</>})
                      </>
                    )}
                  </dd>
                </dl>
              </div>
              {i.correction && (
                <div class="banner banner-warn">
                  <p>
                    <strong>Corrected</strong> on <time dateTime={i.correction.corrected_at}>{formatUtc(new Date(i.correction.corrected_at))}</time>:{' '}
                    {i.correction.reason}. It replaces an invoice of {formatCents(i.correction.replaces_total_cents)} (correction{' '}
                    <span class="mono">{i.correction.correction_id}</span>).
                  </p>
                </div>
              )}
              <div class="card">
                <h3>Lines</h3>
                <LinesTable
                  lines={i.lines}
                  label={`Invoice lines, ${periodLabel(i.period)}`}
                  total={i.total_cents}
                  totalTag={{ 'data-tally': 'invoice_total_cents', 'data-value': i.total_cents.toString(), 'data-period': i.period }}
                />
              </div>
            </section>
          );
        }}
      </Loaded>
    </>
  );
}
