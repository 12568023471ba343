import { tally } from '../components/Figures';
import { ScrollTable } from '../components/ScrollTable';
import { Loaded } from '../components/Status';
import { formatCents, periodLabel, tierName } from '../format';
import type { Resource } from '../hooks';
import { invoiceHref } from '../router';
import type { Invoice } from '../types';

export function invoiceState(i: Invoice): { label: string; className: string } {
  if (i.correction !== null) return { label: 'corrected', className: 'badge-warn' };
  if (i.status === 'final') return { label: 'final', className: 'badge-ok' };
  return { label: 'draft', className: 'badge-neutral' };
}

export function stripeState(i: Invoice): string {
  if (i.stripe === null) return 'not sent';
  return i.stripe.status ?? 'sent';
}

export function Invoices({ orgId, admin, invoices }: { orgId: string; admin: boolean; invoices: Resource<{ invoices: Invoice[] }> }) {
  return (
    <section id="invoices" class="section" aria-labelledby="invoices-h">
      <h2 id="invoices-h">Invoices</h2>
      <Loaded resource={invoices} what="the invoices">
        {({ invoices: list }) =>
          list.length === 0 ? (
            <p>No invoices yet.</p>
          ) : (
            <ScrollTable label="Invoice list">
              <table class="invoices">
                <caption class="visually-hidden">Invoices, newest first</caption>
                <thead>
                  <tr>
                    <th scope="col">Period</th>
                    <th scope="col">Status</th>
                    <th scope="col">Plan</th>
                    <th scope="col">Pricing</th>
                    <th scope="col" class="r">
                      Total
                    </th>
                    <th scope="col">Stripe</th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((i) => {
                    const s = invoiceState(i);
                    return (
                      <tr key={i.period}>
                        <th scope="row">
                          <a href={invoiceHref(orgId, i.period, admin)}>{periodLabel(i.period)}</a>
                        </th>
                        <td>
                          <span class={`badge ${s.className}`}>{s.label}</span>
                        </td>
                        <td>{tierName(i.tier)}</td>
                        <td class="mono">{i.pricing_version}</td>
                        <td class="r num" {...tally('invoice_total_cents', i.total_cents)} data-period={i.period}>
                          {formatCents(i.total_cents)}
                        </td>
                        <td>{stripeState(i)}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </ScrollTable>
          )
        }
      </Loaded>
    </section>
  );
}
