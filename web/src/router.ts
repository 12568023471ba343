// A small router over the history API: every page lives under /app/.

import { useEffect, useState } from 'preact/hooks';

export const BASE = '/app';

type Listener = () => void;
const listeners = new Set<Listener>();

function notify(): void {
  for (const l of listeners) l();
}

/** Goes to `path` (an /app/… path, optionally with a query) without reloading the page. */
export function navigate(path: string, options: { replace?: boolean } = {}): void {
  if (options.replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  notify();
}

export interface Location {
  path: string;
  search: URLSearchParams;
}

function current(): Location {
  return { path: location.pathname, search: new URLSearchParams(location.search) };
}

/** The current location; re-renders on navigation and on the browser's back and forward. */
export function useLocation(): Location {
  const [loc, setLoc] = useState(current);
  useEffect(() => {
    const update = () => setLoc(current());
    listeners.add(update);
    addEventListener('popstate', update);
    return () => {
      listeners.delete(update);
      removeEventListener('popstate', update);
    };
  }, []);
  return loc;
}

/**
 * Clicks on same-origin links under /app/ navigate in place (a download link, a modified click
 * or a link to another target keeps the browser's behaviour).
 */
export function interceptLinks(): void {
  document.addEventListener('click', (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const a = (event.target as Element | null)?.closest?.('a');
    if (!a || a.hasAttribute('download') || (a.target && a.target !== '_self')) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !(url.pathname === BASE || url.pathname.startsWith(`${BASE}/`))) return;
    if (url.pathname === location.pathname && url.search === location.search && url.hash) return; // in-page anchor
    event.preventDefault();
    navigate(url.pathname + url.search + url.hash);
  });
}

/** Matches `/app/…` paths to routes. */
export type Route =
  | { name: 'signin' }
  | { name: 'portal' }
  | { name: 'home' }
  | { name: 'invoice'; period: string }
  | { name: 'admin' }
  | { name: 'admin-org'; org: string }
  | { name: 'admin-invoice'; org: string; period: string }
  | { name: 'not-found' };

export function matchRoute(path: string): Route {
  const rest = path === BASE ? '' : path.startsWith(`${BASE}/`) ? path.slice(BASE.length + 1) : null;
  if (rest === null) return { name: 'not-found' };
  const parts = rest.split('/').filter((p) => p !== '').map(decodeSegment);
  if (parts.some((p) => p === null)) return { name: 'not-found' };
  const s = parts as string[];
  if (s.length === 0) return { name: 'home' };
  if (s.length === 1 && s[0] === 'signin') return { name: 'signin' };
  if (s.length === 1 && s[0] === 'portal') return { name: 'portal' };
  if (s.length === 2 && s[0] === 'invoices') return { name: 'invoice', period: s[1]! };
  if (s[0] === 'admin') {
    if (s.length === 1) return { name: 'admin' };
    if (s.length === 3 && s[1] === 'orgs') return { name: 'admin-org', org: s[2]! };
    if (s.length === 5 && s[1] === 'orgs' && s[3] === 'invoices') return { name: 'admin-invoice', org: s[2]!, period: s[4]! };
  }
  return { name: 'not-found' };
}

function decodeSegment(p: string): string | null {
  try {
    return decodeURIComponent(p);
  } catch {
    return null;
  }
}

/** The page of an org: the customer's own (/app/) or an operator's view of it. */
export function orgBase(org: string, admin: boolean): string {
  return admin ? `${BASE}/admin/orgs/${encodeURIComponent(org)}` : `${BASE}/`;
}

export function invoiceHref(org: string, period: string, admin: boolean): string {
  return admin
    ? `${BASE}/admin/orgs/${encodeURIComponent(org)}/invoices/${encodeURIComponent(period)}`
    : `${BASE}/invoices/${encodeURIComponent(period)}`;
}
