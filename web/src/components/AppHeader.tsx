import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { signOut } from '../api';
import { BASE, navigate } from '../router';
import type { Session } from '../types';

/** The page's banner: who is signed in, and a way out. */
export function AppHeader({ session, children }: { session: Session; children?: ComponentChildren }) {
  const [busy, setBusy] = useState(false);
  const out = async () => {
    setBusy(true);
    try {
      await signOut();
    } catch {
      // The session is gone from this page either way; the sign-in page says the rest.
    }
    navigate(`${BASE}/signin`);
  };
  return (
    <header class="app-header">
      <a class="brand" href={session.role === 'operator' ? `${BASE}/admin` : `${BASE}/`}>
        Tally
      </a>
      <div class="who">
        {session.role === 'operator' ? (
          <span class="badge badge-neutral">Operator</span>
        ) : (
          <span>
            Org <strong class="mono">{session.org_id}</strong>
          </span>
        )}
        {children}
      </div>
      <button type="button" class="secondary" onClick={out} disabled={busy}>
        {busy ? 'Signing out…' : 'Sign out'}
      </button>
    </header>
  );
}
