import { useState } from 'preact/hooks';
import { ApiError, messageOf, signIn } from '../api';
import { BASE, navigate } from '../router';

const HINTS: Record<string, string> = {
  invalid_key: 'That key is not known or has been revoked.',
  key_not_allowed: 'That is an ingest key: sign in with a read key or the admin token.',
};

export function SignIn({ notice }: { notice?: string | null }) {
  const [key, setKey] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: Event) => {
    event.preventDefault();
    if (!key.trim()) {
      setError('Paste a read key or the admin token.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const session = await signIn(key.trim());
      setKey('');
      navigate(session.role === 'operator' ? `${BASE}/admin` : `${BASE}/`, { replace: true });
    } catch (e) {
      const hint = e instanceof ApiError ? HINTS[e.code] : undefined;
      setError(hint ? `${hint} (${messageOf(e)})` : messageOf(e));
      setBusy(false);
    }
  };
  return (
    <div class="narrow">
      <h1 tabIndex={-1}>Sign in to Tally</h1>
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      <form class="card" onSubmit={submit} noValidate>
        <label for="key">Read or billing key, or admin token</label>
        <input
          id="key"
          name="key"
          type="password"
          autoComplete="off"
          spellcheck={false}
          value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)}
          aria-describedby={error ? 'signin-error key-help' : 'key-help'}
          aria-invalid={error ? true : undefined}
          required
        />
        <p id="key-help" class="help">
          Your organisation's read key, or the operator's admin token. It is sent once to open a session and is not kept by
          this page.
        </p>
        <div aria-live="assertive">
          {error && (
            <p id="signin-error" class="error-text">
              {error}
            </p>
          )}
        </div>
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </div>
  );
}
