import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, checkout, getSubscription, messageOf, requestPlanChange } from '../api';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { tally } from '../components/Figures';
import { ScrollTable } from '../components/ScrollTable';
import { ErrorMessage, Loaded, Loading } from '../components/Status';
import { formatCents, formatGB, formatInt, periodLabel, tierName } from '../format';
import type { Resource } from '../hooks';
import { featureName, isLive, overagePrice } from '../pricing';
import type { Estimate, PeriodUsage, Pricing, Projection, Subscription } from '../types';

interface Props {
  orgId: string;
  usage: Resource<PeriodUsage>;
  projection: Resource<Projection>;
  pricing: Resource<Pricing>;
  subscription: Resource<Subscription>;
  /** `?checkout=` on arrival: back from Stripe Checkout. */
  checkoutReturn: string | null;
  /** Whether this person may subscribe or switch (a read key's session only reads). */
  mayChangePlan: boolean;
  /** Called when the plan has changed: the page reloads its figures. */
  onChanged: () => void;
  /** Where Checkout sends the browser back to (this page's path). */
  returnPath: string;
}

type Status =
  | { kind: 'idle' }
  | { kind: 'waiting'; message: string }
  | { kind: 'done'; message: string }
  | { kind: 'warn'; message: string }
  | { kind: 'error'; message: string };

const POLL_MS = 2_000;
const POLL_LIMIT_MS = 60_000;

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const id = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(id);
      reject(new DOMException('aborted', 'AbortError'));
    });
  });
}

/** Polls the subscription every 2 s for up to 60 s until `done(subscription)`; true if it happened. */
export async function pollSubscription(orgId: string, done: (s: Subscription) => boolean, signal: AbortSignal): Promise<boolean> {
  const until = Date.now() + POLL_LIMIT_MS;
  while (Date.now() < until) {
    try {
      const s = await getSubscription(orgId, signal);
      if (done(s)) return true;
    } catch (e) {
      if (signal.aborted) throw e;
      // A failed poll is retried until the time is up.
    }
    await sleep(POLL_MS, signal);
  }
  return false;
}

export function Plan({ orgId, usage, projection, pricing, subscription, checkoutReturn, mayChangePlan, onChanged, returnPath }: Props) {
  const [status, setStatus] = useState<Status>({ kind: 'idle' });
  const [switchTo, setSwitchTo] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const polling = useRef<AbortController | null>(null);

  useEffect(() => () => polling.current?.abort(), []);

  const poll = (done: (s: Subscription) => boolean, success: string, timeout: string) => {
    polling.current?.abort();
    const controller = new AbortController();
    polling.current = controller;
    pollSubscription(orgId, done, controller.signal).then(
      (ok) => {
        setStatus(ok ? { kind: 'done', message: success } : { kind: 'warn', message: timeout });
        if (ok) onChanged();
      },
      () => undefined,
    );
  };

  // Back from Stripe Checkout.
  useEffect(() => {
    if (checkoutReturn === null) return;
    const url = new URL(location.href);
    // The tier bought, as Tally's success_url names it: the page waits until Tally prices on it.
    const bought = url.searchParams.get('tier');
    url.searchParams.delete('checkout');
    url.searchParams.delete('tier');
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    if (checkoutReturn === 'success') {
      setStatus({ kind: 'waiting', message: 'Back from Stripe Checkout: waiting for Stripe to confirm the subscription (usually a few seconds).' });
      poll(
        (s) => s.stripe !== null && isLive(s.stripe.status) && (bought === null || s.tier === bought),
        'Stripe confirmed your subscription. Your plan is shown below.',
        'Stripe has not confirmed yet. Your plan will appear here once it does: reload the page in a minute.',
      );
    } else if (checkoutReturn === 'cancel') {
      setStatus({ kind: 'warn', message: 'Checkout was cancelled; nothing changed.' });
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [checkoutReturn]);

  const subscribe = async (tier: string) => {
    setBusy(tier);
    setStatus({ kind: 'waiting', message: `Opening Stripe Checkout for ${tierName(tier)}…` });
    try {
      const base = location.origin + returnPath;
      const { url } = await checkout(orgId, tier, `${base}?checkout=success&tier=${encodeURIComponent(tier)}`, `${base}?checkout=cancel`);
      location.assign(url);
    } catch (e) {
      setStatus({ kind: 'error', message: `Could not open Checkout: ${messageOf(e)}` });
      setBusy(null);
    }
  };

  const confirmSwitch = async () => {
    const tier = switchTo;
    if (!tier) return;
    setBusy(tier);
    try {
      await requestPlanChange(orgId, tier);
      setSwitchTo(null);
      setBusy(null);
      setStatus({ kind: 'waiting', message: `Requested the switch to ${tierName(tier)}; Stripe confirms in a few seconds.` });
      poll(
        (s) => s.tier === tier,
        `Your plan is now ${tierName(tier)}.`,
        `Stripe has not confirmed the switch to ${tierName(tier)} yet. It will show here once it does: reload the page in a minute.`,
      );
    } catch (e) {
      setSwitchTo(null);
      setBusy(null);
      const why = e instanceof ApiError && e.code === 'no_subscription' ? 'there is no live Stripe subscription to change. ' : '';
      setStatus({ kind: 'error', message: `The switch was not made: ${why}${messageOf(e)}` });
    }
  };

  return (
    <section id="plan" class="section" aria-labelledby="plan-h">
      <h2 id="plan-h">Plan</h2>
      <div class="plan-status" aria-live="polite" role="status">
        {status.kind !== 'idle' && <p class={`banner banner-${status.kind}`}>{status.message}</p>}
      </div>
      <Loaded resource={subscription} what="your subscription">
        {(sub) => <Current sub={sub} pricing={pricing.data} />}
      </Loaded>
      {pricing.state === 'error' && pricing.data === null ? (
        <ErrorMessage what="the price list" error={pricing.error} retry={pricing.reload} />
      ) : pricing.data === null || subscription.data === null ? (
        subscription.state === 'error' ? null : <Loading what="the price list" />
      ) : (
        <Estimator
          pricing={pricing.data}
          sub={subscription.data}
          usage={usage.data}
          projection={projection}
          busy={busy}
          mayChangePlan={mayChangePlan}
          onSubscribe={subscribe}
          onSwitch={setSwitchTo}
        />
      )}
      {switchTo && subscription.data && (
        <SwitchDialog
          to={switchTo}
          from={subscription.data.tier}
          period={usage.data?.period.id ?? subscription.data.period}
          projection={projection.data}
          pricing={pricing.data}
          busy={busy === switchTo}
          onConfirm={confirmSwitch}
          onCancel={() => setSwitchTo(null)}
        />
      )}
    </section>
  );
}

function Current({ sub, pricing }: { sub: Subscription; pricing: Pricing | null }) {
  const name = pricing?.tiers.find((t) => t.tier === sub.tier)?.name ?? tierName(sub.tier);
  return (
    <div class="card current-plan">
      <h3>Current plan: {name}</h3>
      <p class="muted">The plan pricing {periodLabel(sub.period)}.</p>
      <ul class="features">
        {sub.features.map((f) => (
          <li key={f}>{featureName(f)}</li>
        ))}
      </ul>
      <p>
        {sub.stripe === null ? (
          'Not subscribed through Stripe yet: choose a plan below to subscribe.'
        ) : (
          <>
            Billing through Stripe: <span class={`badge badge-${isLive(sub.stripe.status) ? 'ok' : 'warn'}`}>{sub.stripe.status ?? 'no subscription'}</span>
            {sub.stripe.subscription_id && (
              <>
                {' '}
                (subscription <span class="mono">{sub.stripe.subscription_id}</span>)
              </>
            )}
          </>
        )}
      </p>
    </div>
  );
}

interface EstimatorProps {
  pricing: Pricing;
  sub: Subscription;
  usage: PeriodUsage | null;
  projection: Resource<Projection>;
  busy: string | null;
  mayChangePlan: boolean;
  onSubscribe: (tier: string) => void;
  onSwitch: (tier: string) => void;
}

function find(list: Estimate[] | undefined, tier: string): Estimate | undefined {
  return list?.find((e) => e.tier === tier);
}

function Estimator({ pricing, sub, usage, projection, busy, mayChangePlan, onSubscribe, onSwitch }: EstimatorProps) {
  const subscribed = sub.stripe !== null && isLive(sub.stripe.status);
  const p = projection.data;
  const period = usage ? periodLabel(usage.period.id) : 'this period';
  return (
    <div class="card">
      <h3>Plans and what {period} costs on each</h3>
      <p class="muted">
        Each plan priced on this period's usage so far and on the projection for the whole period, with the same prices as
        invoices (pricing {pricing.version}).
      </p>
      {!mayChangePlan && (
        <p class="notice" data-tally-note="read-only">
          You signed in with a read key, which reads usage only. To change the plan, sign in with a billing key or the link
          your account manager sends.
        </p>
      )}
      {projection.state === 'error' && p === null && (
        <ErrorMessage what="the estimates" error={projection.error} retry={projection.reload} />
      )}
      <ScrollTable label="Plans and estimates">
        <table class="estimator">
          <caption class="visually-hidden">Plans, their prices, and the cost of this period on each</caption>
          <thead>
            <tr>
              <th scope="col">Plan</th>
              <th scope="col" class="r">
                Monthly fee
              </th>
              <th scope="col">Included</th>
              <th scope="col">Beyond that</th>
              <th scope="col" class="r">
                Usage so far
              </th>
              <th scope="col" class="r">
                Projected
              </th>
              <th scope="col">
                <span class="visually-hidden">Action</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {pricing.tiers.map((t) => {
              const cur = find(p?.estimates.current, t.tier);
              const proj = find(p?.estimates.projected, t.tier);
              const isCurrent = t.tier === sub.tier;
              return (
                <tr key={t.tier} class={isCurrent ? 'current' : undefined}>
                  <th scope="row">
                    {t.name}
                    {isCurrent && <span class="badge badge-neutral">Current</span>}
                    <ul class="features small">
                      {t.features.map((f) => (
                        <li key={f}>{featureName(f)}</li>
                      ))}
                    </ul>
                  </th>
                  <td class="r num">{formatCents(t.base_fee_cents)}</td>
                  <td>
                    {formatInt(t.traces.included)} traces
                    <br />
                    <span title={`${formatInt(t.payload_bytes.included)} bytes`}>{formatGB(t.payload_bytes.included)}</span>
                  </td>
                  <td class="small">
                    Traces: {overagePrice('traces', t.traces)}
                    <br />
                    Payload: {overagePrice('payload_bytes', t.payload_bytes)}
                  </td>
                  <td class="r num">
                    {cur ? (
                      <>
                        <span {...tally('estimate_total_cents', cur.total_cents)} data-tier={t.tier} data-basis="current">
                          {formatCents(cur.total_cents)}
                        </span>
                        {p?.estimates.current_cheapest === t.tier && <span class="badge badge-ok">Cheapest</span>}
                      </>
                    ) : (
                      '—'
                    )}
                  </td>
                  <td class="r num">
                    {proj ? (
                      <>
                        <span {...tally('estimate_total_cents', proj.total_cents)} data-tier={t.tier} data-basis="projected">
                          {formatCents(proj.total_cents)}
                        </span>
                        {p?.estimates.projected_cheapest === t.tier && <span class="badge badge-ok">Cheapest</span>}
                      </>
                    ) : (
                      '—'
                    )}
                  </td>
                  <td>
                    {!mayChangePlan ? (
                      isCurrent ? <span class="muted">Your plan</span> : null
                    ) : !subscribed ? (
                      <button type="button" class="primary" disabled={busy !== null} onClick={() => onSubscribe(t.tier)}>
                        {busy === t.tier ? 'Opening…' : `Subscribe to ${t.name}`}
                      </button>
                    ) : isCurrent ? (
                      <span class="muted">Your plan</span>
                    ) : (
                      <button type="button" class="secondary" disabled={busy !== null} onClick={() => onSwitch(t.tier)}>
                        Switch to {t.name}
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </ScrollTable>
    </div>
  );
}

interface SwitchProps {
  to: string;
  from: string;
  period: string;
  projection: Projection | null;
  pricing: Pricing | null;
  busy: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}

function SwitchDialog({ to, from, period, projection, pricing, busy, onConfirm, onCancel }: SwitchProps) {
  const name = (tier: string) => pricing?.tiers.find((t) => t.tier === tier)?.name ?? tierName(tier);
  const cents = (list: Estimate[] | undefined, tier: string) => {
    const e = find(list, tier);
    return e ? formatCents(e.total_cents) : 'unknown';
  };
  const cur = projection?.estimates.current;
  const proj = projection?.estimates.projected;
  return (
    <ConfirmDialog open title={`Switch to ${name(to)}?`} confirmLabel={`Switch to ${name(to)}`} busy={busy} onConfirm={onConfirm} onCancel={onCancel}>
      <p>
        The tier in effect at the end of the period prices the whole period: if you switch now, all of {periodLabel(period)} is
        billed on {name(to)}: {cents(cur, to)} so far, {cents(proj, to)} projected, instead of {cents(cur, from)} so far and{' '}
        {cents(proj, from)} projected on {name(from)}.
      </p>
      <p class="muted">There is no proration. Stripe confirms the change in a few seconds.</p>
    </ConfirmDialog>
  );
}
