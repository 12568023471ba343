import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, messageOf, openPortal } from '../api';
import { BASE, navigate } from '../router';

const REFUSALS: Record<string, string> = {
  link_expired: 'This link has expired',
  link_used: 'This link was already used',
  link_invalid: 'This link is not valid',
};

let captured: string | null = null;

/**
 * Reads a portal link's token from the fragment and removes it from the address bar at once
 * (called before the first render). The token then lives in this module only, until it is spent.
 */
export function capturePortalToken(): void {
  if (location.pathname !== `${BASE}/portal`) return;
  captured = location.hash.replace(/^#/, '');
  if (location.hash) history.replaceState(null, '', `${BASE}/portal`);
}

/**
 * Where a portal link lands: the token is in the fragment (never sent to a server). It is read,
 * removed from the address bar at once, and exchanged for a session.
 */
export function Portal() {
  const [refusal, setRefusal] = useState<{ code: string; message: string } | null>(null);
  // Each new link (a fragment pasted into this tab changes only the hash) is one attempt.
  const [attempt, setAttempt] = useState(0);
  const spent = useRef(-1);
  useEffect(() => {
    const again = () => {
      if (!location.hash) return;
      capturePortalToken();
      setRefusal(null);
      setAttempt((a) => a + 1);
    };
    addEventListener('hashchange', again);
    return () => removeEventListener('hashchange', again);
  }, []);
  useEffect(() => {
    if (spent.current === attempt) return;
    spent.current = attempt;
    if (captured === null) capturePortalToken();
    const token = captured ?? '';
    captured = null;
    if (!token) {
      setRefusal({ code: 'link_invalid', message: 'The link has no token.' });
      return;
    }
    openPortal(token).then(
      () => navigate(`${BASE}/`, { replace: true }),
      (e: unknown) => {
        const code = e instanceof ApiError ? e.code : 'error';
        setRefusal({ code, message: messageOf(e) });
      },
    );
  }, [attempt]);
  if (!refusal) {
    return (
      <div class="narrow">
        <h1 tabIndex={-1}>Opening your usage page…</h1>
        <p role="status">Checking your link.</p>
      </div>
    );
  }
  const headline = REFUSALS[refusal.code] ?? 'This link could not be opened';
  return (
    <div class="narrow">
      <h1 tabIndex={-1} data-tally="link-refused" data-value={refusal.code}>
        {headline}
      </h1>
      <div class="card" role="alert">
        <p>
          Links to this page work once and for a short time. Ask for a new link from your app: open the usage or billing page
          there again.
        </p>
        {!REFUSALS[refusal.code] && <p class="muted">{refusal.message}</p>}
      </div>
      <p>
        Have a read key? <a href={`${BASE}/signin`}>Sign in with it</a>.
      </p>
    </div>
  );
}
