// The api client: same-origin fetches authenticated by the session cookie, JSON parsed with every
// integer as a BigInt, the CSRF token (kept in this module only: never in storage, never in a
// URL) on every state-changing request, and one error type.

import type {
  Daily, Invoice, LateEvents, NewKey, OrgList, PeriodSummary, Pipeline, PortalLink, Pricing, Projection,
  PeriodUsage, Session, SortKey, Subscription,
} from './types';

/** An api refusal (`{"error": {"code", "message"}}`) or a failure to reach it (status 0). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

const INTEGER = /^-?\d+$/;

type Reviver = (this: unknown, key: string, value: unknown, context?: { source?: string }) => unknown;

/**
 * JSON.parse where every integer becomes a BigInt taken from the number's source text, so
 * figures above 2^53 stay exact; non-integers (display-only percentages) stay numbers.
 * Without source text access (an old browser) a safe integer is still exact; an unsafe one is
 * refused rather than shown wrong.
 */
export function parseJson(text: string): unknown {
  const reviver: Reviver = (_key, value, context) => {
    if (typeof value !== 'number') return value;
    const source = context?.source;
    if (source !== undefined) return INTEGER.test(source) ? BigInt(source) : value;
    if (Number.isInteger(value)) {
      if (!Number.isSafeInteger(value)) throw new Error('this browser cannot read large figures exactly; use a current browser');
      return BigInt(value);
    }
    return value;
  };
  return JSON.parse(text, reviver as (this: unknown, key: string, value: unknown) => unknown);
}

// ---- the session ----------------------------------------------------------------------------

let session: Session | null = null;
let onSignedOut: (() => void) | null = null;

export function currentSession(): Session | null {
  return session;
}

/** Called when a request finds the session gone (401): the router sends the browser to sign in. */
export function setSignedOutHandler(handler: () => void): void {
  onSignedOut = handler;
}

// ---- requests -------------------------------------------------------------------------------

interface RequestOptions {
  body?: unknown;
  signal?: AbortSignal;
  /** Don't treat a 401 as "the session ended" (the sign-in calls answer 401 for a bad key). */
  quiet401?: boolean;
}

async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const changes = method !== 'GET' && method !== 'HEAD';
  if (changes || options.body !== undefined) headers['Content-Type'] = 'application/json';
  if (changes && session) headers['X-Tally-CSRF'] = session.csrf_token;
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal: options.signal,
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Could not reach Tally. Check your connection and try again.');
  }
  const text = await response.text();
  if (!response.ok) {
    const error = errorOf(response, text);
    if (response.status === 401 && !options.quiet401) {
      session = null;
      onSignedOut?.();
    }
    throw error;
  }
  if (response.status === 204 || text === '') return null as T;
  try {
    return parseJson(text) as T;
  } catch (e) {
    throw new ApiError(response.status, 'bad_answer', `The api's answer could not be read: ${(e as Error).message}`);
  }
}

function errorOf(response: Response, text: string): ApiError {
  try {
    const body = parseJson(text) as { error?: { code?: unknown; message?: unknown } };
    const code = body.error?.code;
    const message = body.error?.message;
    if (typeof code === 'string') {
      return new ApiError(response.status, code, typeof message === 'string' ? message : code);
    }
  } catch {
    // not JSON: fall through
  }
  const reason = response.statusText ? ` ${response.statusText}` : '';
  return new ApiError(response.status, 'http_' + response.status, `The api answered ${response.status}${reason}.`);
}

const seg = encodeURIComponent;

function query(params: Record<string, string | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

// ---- sessions -------------------------------------------------------------------------------

export async function signIn(key: string): Promise<Session> {
  session = await request<Session>('POST', '/v1/sessions', { body: { key }, quiet401: true });
  return session;
}

export async function openPortal(token: string): Promise<Session> {
  session = await request<Session>('POST', '/v1/sessions/portal', { body: { token }, quiet401: true });
  return session;
}

/** The cookie's session, or null when there is none (401). */
export async function loadSession(): Promise<Session | null> {
  try {
    session = await request<Session>('GET', '/v1/sessions/current', { quiet401: true });
    return session;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      session = null;
      return null;
    }
    throw e;
  }
}

export async function signOut(): Promise<void> {
  try {
    await request<null>('DELETE', '/v1/sessions/current', { quiet401: true });
  } finally {
    session = null;
  }
}

// ---- reading --------------------------------------------------------------------------------

const org = (id: string) => `/v1/orgs/${seg(id)}`;

export const getUsage = (id: string, period?: string, signal?: AbortSignal) =>
  request<PeriodUsage>('GET', `${org(id)}/usage${query({ period })}`, { signal });

export const getProjection = (id: string, signal?: AbortSignal) =>
  request<Projection>('GET', `${org(id)}/usage/projection`, { signal });

export function dailyPath(id: string, from: string, to: string, format?: 'csv'): string {
  return `${org(id)}/usage/daily${query({ from, to, format })}`;
}

export const getDaily = (id: string, from: string, to: string, signal?: AbortSignal) =>
  request<Daily>('GET', dailyPath(id, from, to), { signal });

export const getLateEvents = (id: string, period: string, signal?: AbortSignal) =>
  request<LateEvents>('GET', `${org(id)}/late-events${query({ period })}`, { signal });

export const getPricing = (signal?: AbortSignal) => request<Pricing>('GET', '/v1/pricing', { signal });

export const getSubscription = (id: string, signal?: AbortSignal) =>
  request<Subscription>('GET', `${org(id)}/subscription`, { signal });

export const getPeriods = (id: string, signal?: AbortSignal) =>
  request<{ org_id: string; periods: PeriodSummary[] }>('GET', `${org(id)}/periods`, { signal });

export const getInvoices = (id: string, signal?: AbortSignal) =>
  request<{ org_id: string; invoices: Invoice[] }>('GET', `${org(id)}/invoices`, { signal });

export const getInvoice = (id: string, period: string, signal?: AbortSignal) =>
  request<Invoice>('GET', `${org(id)}/invoices/${seg(period)}`, { signal });

export interface OrgListQuery {
  sort: SortKey;
  order: 'asc' | 'desc';
  q: string;
  cursor: string | null;
  limit: number;
}

export const listOrgs = (p: OrgListQuery, signal?: AbortSignal) =>
  request<OrgList>(
    'GET',
    `/v1/orgs${query({ sort: p.sort, order: p.order, q: p.q.trim(), limit: String(p.limit), cursor: p.cursor })}`,
    { signal },
  );

export const getPipeline = (signal?: AbortSignal) => request<Pipeline>('GET', '/v1/pipeline', { signal });

// ---- changing -------------------------------------------------------------------------------

export const checkout = (id: string, tier: string, successUrl: string, cancelUrl: string) =>
  request<{ url: string; session_id: string }>('POST', `${org(id)}/checkout`, {
    body: { tier, success_url: successUrl, cancel_url: cancelUrl },
  });

export const requestPlanChange = (id: string, tier: string) =>
  request<{ org_id: string; tier: string; subscription_id: string }>('POST', `${org(id)}/plan-changes`, { body: { tier } });

export const createReadKey = (id: string) => request<NewKey>('POST', `${org(id)}/keys`, { body: { scope: 'read' } });

export const createPortalLink = (id: string) => request<PortalLink>('POST', `${org(id)}/portal-sessions`, { body: {} });

export const setTier = (id: string, tier: string) =>
  request<{ org_id: string; tier: string }>('PUT', `${org(id)}/subscription`, { body: { tier } });

/** A message for any thrown value. */
export function messageOf(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
