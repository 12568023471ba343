import { useEffect, useRef, useState } from 'preact/hooks';
import { createPortalLink, createReadKey, getPricing, getSubscription, messageOf, setTier } from '../api';
import { formatLocal, formatUtc, tierName } from '../format';
import { useResource } from '../hooks';
import type { NewKey, PortalLink } from '../types';
import { OrgPage } from './OrgPage';
import { pollSubscription } from './Plan';

/** The customer's page of one org, as an operator sees it, with the admin actions. */
export function AdminOrgPage({ orgId, checkoutReturn }: { orgId: string; checkoutReturn: string | null }) {
  return (
    <>
      <p class="no-print">
        <a href="/app/admin#orgs">← All orgs</a>
      </p>
      <OrgPage orgId={orgId} admin mayChangePlan checkoutReturn={checkoutReturn} extra={(reload) => <AdminPanel orgId={orgId} onChanged={reload} />} />
    </>
  );
}

function AdminPanel({ orgId, onChanged }: { orgId: string; onChanged: () => void }) {
  return (
    <section id="admin" class="section admin-panel" aria-labelledby="admin-h">
      <h2 id="admin-h">Admin</h2>
      <div class="grid-3">
        <ReadKey orgId={orgId} />
        <CustomerLink orgId={orgId} />
        <TierOverride orgId={orgId} onChanged={onChanged} />
      </div>
    </section>
  );
}

/** Creates a read key and shows it once, here only; it is gone when the page is left. */
function ReadKey({ orgId }: { orgId: string }) {
  const [key, setKey] = useState<NewKey | null>(null);
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);
  const create = async () => {
    setBusy(true);
    setMessage(null);
    try {
      setKey(await createReadKey(orgId));
      setMessage('Key created. Copy it now: it is shown only once.');
    } catch (e) {
      setMessage(`No key was created: ${messageOf(e)}`);
    } finally {
      setBusy(false);
    }
  };
  const copy = async () => {
    if (!key) return;
    try {
      await navigator.clipboard.writeText(key.key);
      setMessage('Copied to the clipboard.');
    } catch {
      input.current?.select();
      setMessage('Could not copy automatically: the key is selected, press Ctrl+C (⌘C).');
    }
  };
  return (
    <div class="card">
      <h3>Read key</h3>
      <p class="muted">A key that reads this org's usage and invoices (and signs in here).</p>
      <button type="button" class="secondary" onClick={create} disabled={busy}>
        {busy ? 'Creating…' : key ? 'Create another read key' : 'Create a read key'}
      </button>
      {key && (
        <div class="field">
          <label for="new-key">New read key</label>
          <div class="copy-row">
            <input id="new-key" ref={input} type="text" readOnly value={key.key} class="mono" autoComplete="off" spellcheck={false} />
            <button type="button" class="secondary" onClick={copy}>
              Copy
            </button>
          </div>
        </div>
      )}
      <p aria-live="polite" class="help">
        {message}
      </p>
    </div>
  );
}

function CustomerLink({ orgId }: { orgId: string }) {
  const [link, setLink] = useState<PortalLink | null>(null);
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const create = async () => {
    setBusy(true);
    setMessage(null);
    try {
      setLink(await createPortalLink(orgId));
    } catch (e) {
      setMessage(`No link was created: ${messageOf(e)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="card">
      <h3>Customer link</h3>
      <p class="muted">A one-time link that opens this page for the org's people (15 minutes).</p>
      <button type="button" class="secondary" onClick={create} disabled={busy}>
        {busy ? 'Creating…' : 'Create a customer link'}
      </button>
      {link && (
        <div class="field">
          <label for="portal-url">Link (works once)</label>
          <input id="portal-url" type="text" readOnly value={link.url} class="mono" autoComplete="off" spellcheck={false} />
          <p class="help">
            Expires <time dateTime={link.expires_at}>{formatUtc(new Date(link.expires_at))}</time> ({formatLocal(new Date(link.expires_at))}).
          </p>
        </div>
      )}
      <p aria-live="polite" class="help">
        {message}
      </p>
    </div>
  );
}

function TierOverride({ orgId, onChanged }: { orgId: string; onChanged: () => void }) {
  const pricing = useResource((s) => getPricing(s), []);
  const subscription = useResource((s) => getSubscription(orgId, s), [orgId]);
  const [tier, setTierChoice] = useState('');
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const polling = useRef<AbortController | null>(null);
  useEffect(() => () => polling.current?.abort(), []);
  const tiers = pricing.data?.tiers ?? [];
  // Starts on the org's current tier.
  const chosen = tier || subscription.data?.tier || tiers[0]?.tier || '';
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!chosen) return;
    setBusy(true);
    setMessage(null);
    try {
      await setTier(orgId, chosen);
      setMessage(`Recorded: ${tierName(chosen)}. Waiting for the pipeline to apply it…`);
      polling.current?.abort();
      const controller = new AbortController();
      polling.current = controller;
      pollSubscription(orgId, (s) => s.tier === chosen, controller.signal).then(
        (ok) => {
          setMessage(ok ? `The plan is now ${tierName(chosen)}.` : `Recorded, but not applied yet after a minute; reload later.`);
          if (ok) onChanged();
        },
        () => undefined,
      );
    } catch (e2) {
      setMessage(`Not changed: ${messageOf(e2)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card" onSubmit={submit}>
      <h3>Set the plan</h3>
      <p class="muted">An operator override, recorded in the billing log; Stripe is not told.</p>
      <div class="field">
        <label for="override-tier">Plan</label>
        <select id="override-tier" value={chosen} onChange={(e) => setTierChoice((e.target as HTMLSelectElement).value)}>
          {tiers.map((t) => (
            <option key={t.tier} value={t.tier}>
              {t.name}
            </option>
          ))}
        </select>
      </div>
      <button type="submit" class="primary" disabled={busy || !chosen}>
        {busy ? 'Setting…' : 'Set plan'}
      </button>
      <p aria-live="polite" class="help">
        {message}
      </p>
    </form>
  );
}
