import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { currentSession, loadSession, setSignedOutHandler } from './api';
import { AppHeader } from './components/AppHeader';
import { ErrorMessage, Loading } from './components/Status';
import { periodLabel } from './format';
import { AdminOrgPage } from './pages/AdminOrgPage';
import { AdminPage } from './pages/AdminPage';
import { InvoicePage } from './pages/InvoicePage';
import { OrgPage } from './pages/OrgPage';
import { capturePortalToken, Portal } from './pages/Portal';
import { SignIn } from './pages/SignIn';
import { BASE, interceptLinks, matchRoute, navigate, type Route, useLocation } from './router';
import type { Session } from './types';
import './styles.css';

/** A notice for the sign-in page (why the browser was sent there), kept in memory only. */
let signInNotice: string | null = null;

setSignedOutHandler(() => {
  if (location.pathname !== `${BASE}/signin`) {
    signInNotice = 'Your session has ended. Sign in again.';
    navigate(`${BASE}/signin`, { replace: true });
  }
});

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, { replace: true }), [to]);
  return null;
}

function titleOf(route: Route, session: Session | null): string {
  switch (route.name) {
    case 'signin':
      return 'Sign in';
    case 'portal':
      return 'Opening your usage page';
    case 'home':
      return session?.org_id ? `${session.org_id}: usage` : 'Usage';
    case 'invoice':
      return `Invoice ${periodLabel(route.period)}`;
    case 'admin':
      return 'Operator';
    case 'admin-org':
      return `${route.org}: operator`;
    case 'admin-invoice':
      return `${route.org}: invoice ${periodLabel(route.period)}`;
    default:
      return 'Not found';
  }
}

function App() {
  const loc = useLocation();
  const route = matchRoute(loc.path);
  const needsSession = route.name !== 'signin' && route.name !== 'portal' && route.name !== 'not-found';
  const [, setLoaded] = useState(0);
  const [sessionError, setSessionError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  const session = currentSession();

  useEffect(() => {
    if (!needsSession || currentSession()) return undefined;
    let cancelled = false;
    setSessionError(null);
    loadSession().then(
      (s) => {
        if (cancelled) return;
        if (s === null) navigate(`${BASE}/signin`, { replace: true });
        else setLoaded((n) => n + 1);
      },
      (e: unknown) => {
        if (!cancelled) setSessionError(e);
      },
    );
    return () => {
      cancelled = true;
    };
  }, [needsSession, loc.path, attempt]);

  // Each page change: a title, and focus on the new page's heading (not on the first load).
  const first = useRef(true);
  useEffect(() => {
    document.title = `${titleOf(route, session)} · Tally`;
    if (route.name !== 'signin') signInNotice = null;
    if (first.current) {
      first.current = false;
      return undefined;
    }
    const id = setTimeout(() => document.querySelector<HTMLElement>('main h1')?.focus(), 0);
    return () => clearTimeout(id);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [loc.path]);

  let body;
  if (route.name === 'signin') {
    body = <SignIn notice={signInNotice} />;
  } else if (route.name === 'portal') {
    body = <Portal />;
  } else if (route.name === 'not-found') {
    body = (
      <div class="narrow">
        <h1 tabIndex={-1}>Page not found</h1>
        <p>
          There is no page at this address. <a href={`${BASE}/`}>Go to your usage page</a>.
        </p>
      </div>
    );
  } else if (!session) {
    body = sessionError ? (
      <div class="narrow">
        <h1 tabIndex={-1}>Tally</h1>
        <ErrorMessage what="your session" error={sessionError} retry={() => setAttempt((a) => a + 1)} />
      </div>
    ) : (
      <Loading what="your session" />
    );
  } else {
    body = page(route, session, loc.search);
  }

  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      {session && needsSession && <AppHeader session={session} />}
      <main id="main" tabIndex={-1}>
        {body}
      </main>
    </>
  );
}

function page(route: Route, session: Session, search: URLSearchParams) {
  const operator = session.role === 'operator';
  const checkoutReturn = search.get('checkout');
  switch (route.name) {
    case 'home':
      if (operator) return <Redirect to={`${BASE}/admin`} />;
      return (
        <OrgPage orgId={session.org_id ?? ''} admin={false} mayChangePlan={session.may_change_plan} checkoutReturn={checkoutReturn} />
      );
    case 'invoice':
      if (operator) return <Redirect to={`${BASE}/admin`} />;
      return <InvoicePage orgId={session.org_id ?? ''} period={route.period} admin={false} />;
    case 'admin':
      if (!operator) return <Redirect to={`${BASE}/`} />;
      return <AdminPage />;
    case 'admin-org':
      if (!operator) return <Redirect to={`${BASE}/`} />;
      return <AdminOrgPage key={route.org} orgId={route.org} checkoutReturn={checkoutReturn} />;
    case 'admin-invoice':
      if (!operator) return <Redirect to={`${BASE}/`} />;
      return <InvoicePage orgId={route.org} period={route.period} admin />;
    default:
      return null;
  }
}

capturePortalToken();
interceptLinks();
const root = document.getElementById('app');
if (root) {
  root.textContent = '';
  render(<App />, root);
}
