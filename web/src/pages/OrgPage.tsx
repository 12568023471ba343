import type { ComponentChildren } from 'preact';
import { useMemo, useState } from 'preact/hooks';
import { getInvoices, getPeriods, getPricing, getProjection, getSubscription, getUsage } from '../api';
import { tally } from '../components/Figures';
import { ErrorMessage, Loading } from '../components/Status';
import { periodOf, tierName } from '../format';
import { useResource } from '../hooks';
import { History } from './History';
import { Invoices } from './Invoices';
import { LateEvents } from './LateEvents';
import { Plan } from './Plan';
import { ThisPeriod } from './ThisPeriod';

interface Props {
  orgId: string;
  /** An operator's view of the org (links stay under /app/admin/orgs/…). */
  admin: boolean;
  /** Whether the signed-in person may change the plan (not a session opened with a read key). */
  mayChangePlan: boolean;
  /** `?checkout=` on arrival. */
  checkoutReturn: string | null;
  /** Extra sections (the operator's panel), given a way to reload the page's figures. */
  extra?: (reloadAll: () => void) => ComponentChildren;
}

const SECTIONS: [string, string][] = [
  ['this-period', 'This period'],
  ['plan', 'Plan'],
  ['history', 'History'],
  ['invoices', 'Invoices'],
  ['late-events', 'Late events'],
];

/** The customer's page of one org: this period, plan, history, invoices, late events. */
export function OrgPage({ orgId, admin, mayChangePlan, checkoutReturn, extra }: Props) {
  const [version, setVersion] = useState(0);
  const usage = useResource((s) => getUsage(orgId, undefined, s), [orgId, version]);
  const projection = useResource((s) => getProjection(orgId, s), [orgId, version]);
  const pricing = useResource((s) => getPricing(s), []);
  const subscription = useResource((s) => getSubscription(orgId, s), [orgId, version]);
  const invoices = useResource((s) => getInvoices(orgId, s), [orgId, version]);
  // Every period the pipeline has seen the org in (one with only late events has no invoice).
  const known = useResource((s) => getPeriods(orgId, s), [orgId, version]);
  const reloadAll = () => setVersion((v) => v + 1);

  const current = usage.data?.period.id ?? periodOf(new Date());
  const periods = useMemo(() => {
    const set = new Set<string>([current]);
    for (const p of known.data?.periods ?? []) set.add(p.period);
    return [...set].sort().reverse();
  }, [current, known.data]);

  const returnPath = admin ? `/app/admin/orgs/${encodeURIComponent(orgId)}` : '/app/';
  return (
    <>
      <div class="page-title">
        <h1 tabIndex={-1}>
          <span class="muted">{admin ? 'Org' : 'Usage of'}</span> <span class="mono">{orgId}</span>
        </h1>
        {usage.data && (
          <p class="tier-line">
            Plan: <span class="badge badge-tier" {...tally('tier', usage.data.tier)}>{tierName(usage.data.tier)}</span>
          </p>
        )}
      </div>
      <nav class="section-nav" aria-label="Sections">
        <ul>
          {SECTIONS.map(([id, label]) => (
            <li key={id}>
              <a href={`#${id}`}>{label}</a>
            </li>
          ))}
          {extra && (
            <li>
              <a href="#admin">Admin</a>
            </li>
          )}
        </ul>
      </nav>
      <ThisPeriod usage={usage} projection={projection} pricing={pricing} />
      <Plan
        orgId={orgId}
        usage={usage}
        projection={projection}
        pricing={pricing}
        subscription={subscription}
        checkoutReturn={checkoutReturn}
        mayChangePlan={mayChangePlan}
        onChanged={reloadAll}
        returnPath={returnPath}
      />
      <History orgId={orgId} periods={periods} current={current} />
      <Invoices orgId={orgId} admin={admin} invoices={invoices} />
      {usage.data ? (
        <LateEvents orgId={orgId} periods={periods} usage={usage.data} />
      ) : (
        <section id="late-events" class="section" aria-labelledby="late-h">
          <h2 id="late-h">Late events</h2>
          {usage.state === 'error' ? <ErrorMessage what="late events" error={usage.error} retry={usage.reload} /> : <Loading what="late events" />}
        </section>
      )}
      {extra?.(reloadAll)}
    </>
  );
}
