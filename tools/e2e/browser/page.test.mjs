// Tally's page in headless chromium (Debian's package, driven by playwright-core), against a stack
// that e2e/tests/page.rs started and filled with a known workload. Every figure the page shows is
// compared with the api's own answer, asked with the admin token outside the browser.
//
// Configuration: TALLY_PAGE_TEST (JSON, written by page.rs). Exit 0 when every check passed.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.env.TALLY_PAGE_TEST ?? '{}');
const API = config.api;
const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
mkdirSync(config.results, { recursive: true });

const CHROMIUM = process.env.TALLY_CHROMIUM ?? '/usr/bin/chromium';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1440, height: 900 };

let step = '';
process.on('exit', (code) => {
  if (code !== 0) console.error(`page test: FAILED at "${step}"`);
});
function say(message) {
  step = message;
  console.log(`page test: ${message}`);
}

/** Integers as BigInt, exactly (Node 20 has no source text in revivers: a figure beyond 2^53
 * there would be refused rather than rounded). */
function exactIntegers(_key, value, context) {
  if (typeof value !== 'number' || !Number.isInteger(value)) return value;
  if (context?.source !== undefined) return BigInt(context.source);
  if (!Number.isSafeInteger(value)) throw new Error(`an integer beyond 2^53 cannot be read exactly here: ${value}`);
  return BigInt(value);
}

/** The api, as a client outside the browser (admin token unless told otherwise). */
async function api(path, { method = 'GET', token = config.admin_token, body } = {}) {
  const r = await fetch(`${API}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text, exactIntegers);
  } catch {
    json = text;
  }
  return { status: r.status, body: json };
}

async function apiOk(path, options) {
  const r = await api(path, options);
  assert.ok(r.status >= 200 && r.status < 300, `${options?.method ?? 'GET'} ${path}: ${r.status} ${JSON.stringify(r.body, big)}`);
  return r.body;
}

const big = (_k, v) => (typeof v === 'bigint' ? v.toString() : v);

/** Screenshots of every open page, for a failure's record. */
async function screenshotAll(label) {
  let n = 0;
  for (const p of openPages) {
    await p.screenshot({ path: `${config.results}/failed-${label}-${n++}.png`, fullPage: true }).catch(() => undefined);
  }
}

async function eventually(what, check, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v !== undefined && v !== false && v !== null) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  await screenshotAll(what.replace(/[^a-z0-9]+/gi, '-'));
  throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last: ${last.message})` : ''}`);
}

// ---- the browser ------------------------------------------------------------------------------

const secrets = new Set([config.admin_token, config.read_keys.near, config.read_keys.over, config.ingest_key]);
const requested = [];
const cspViolations = [];

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });

const openPages = new Set();
async function newPage(viewport = DESKTOP, extra = {}) {
  const context = await browser.newContext({ viewport, ...extra });
  const page = await context.newPage();
  openPages.add(page);
  page.on('close', () => openPages.delete(page));
  page.on('request', (r) => requested.push(r.url()));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  return { context, page };
}

/** The one element of a figure; its raw value. */
async function figure(page, name, extra = '') {
  const el = page.locator(`[data-tally="${name}"]${extra}`);
  await el.first().waitFor({ timeout: 20_000 });
  assert.equal(await el.count(), 1, `exactly one ${name}${extra}`);
  return el.getAttribute('data-value');
}

async function values(page, name) {
  return page.locator(`[data-tally="${name}"]`).evaluateAll((els) => els.map((e) => e.getAttribute('data-value')));
}

async function axe(page, label) {
  // axe runs as an injected script: the page's own CSP (script-src 'self') forbids that, so the
  // accessibility pass runs in a context that bypasses CSP and is never used for other checks.
  await page.addScriptTag({ content: AXE_SOURCE });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  const serious = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(serious, [], `axe on ${label}: ${JSON.stringify(serious, null, 1)}`);
  if (result.length) console.log(`page test: axe on ${label}: minor findings ${result.map((v) => v.id).join(', ')}`);
}

async function portalLink(orgId, ttl) {
  const body = await apiOk(`/v1/orgs/${orgId}/portal-sessions`, { method: 'POST', body: ttl ? { ttl_secs: ttl } : {} });
  secrets.add(new URL(body.url).hash.slice(1));
  return body.url;
}

const expiring = await portalLink(config.orgs.near, 60);
const expiringMadeAt = Date.now();

// ---- the customer's page ------------------------------------------------------------------------

async function checkCustomerFigures(page, orgId) {
  const usage = await apiOk(`/v1/orgs/${orgId}/usage`);
  await page.locator('[data-tally="traces"]').first().waitFor({ timeout: 20_000 });
  assert.equal(await figure(page, 'traces'), usage.traces.toString(), 'traces');
  assert.equal(await figure(page, 'payload_bytes'), usage.payload_bytes.toString(), 'payload bytes');
  assert.equal(await figure(page, 'included_traces'), usage.included.traces.toString(), 'included traces');
  assert.equal(await figure(page, 'included_payload_bytes'), usage.included.payload_bytes.toString(), 'included payload');
  assert.equal(await figure(page, 'draft_total_cents'), usage.cost.total_cents.toString(), 'draft total');
  assert.equal(await figure(page, 'tier'), usage.tier, 'tier');
  const expectedWarnings = usage.warnings.map((w) => `${w.metric}:${w.level === 'exceeded' ? 100 : 90}`).sort();
  assert.deepEqual((await values(page, 'warning')).sort(), expectedWarnings, 'warnings');

  // The projection: the page's projected usage, priced by the api, is the page's projected cost.
  await page.locator('[data-tally="projected_total_cents"]').waitFor({ timeout: 20_000 });
  const projected = { traces: BigInt(await figure(page, 'projected_traces')), payload_bytes: BigInt(await figure(page, 'projected_payload_bytes')) };
  assert.ok(projected.traces >= usage.traces && projected.payload_bytes >= usage.payload_bytes, 'a projection is not below the usage so far');
  // (JSON numbers: these figures are far below 2^53.)
  const estimate = await apiOk('/v1/pricing/estimate', { method: 'POST', body: { traces: Number(projected.traces), payload_bytes: Number(projected.payload_bytes) } });
  const onTier = estimate.estimates.find((e) => e.tier === usage.tier);
  assert.equal(await figure(page, 'projected_total_cents'), onTier.total_cents.toString(), 'projected cost');

  // The estimator on every tier, for this period's usage.
  const current = await apiOk('/v1/pricing/estimate', { method: 'POST', body: { traces: Number(usage.traces), payload_bytes: Number(usage.payload_bytes) } });
  for (const e of current.estimates) {
    assert.equal(await figure(page, 'estimate_total_cents', `[data-tier="${e.tier}"][data-basis="current"]`), e.total_cents.toString(), `estimate on ${e.tier}`);
  }

  // History: the chart's table totals equal the api's days, for both metrics.
  const daily = await apiOk(`/v1/orgs/${orgId}/usage/daily`);
  const sum = (metric) => daily.days.reduce((s, d) => s + d[metric], 0n);
  assert.equal(await figure(page, 'history_total'), sum('traces').toString(), 'history total (traces)');
  await page.getByRole('radio', { name: 'Payload bytes' }).check();
  await eventually('the history shows payload bytes', async () => (await figure(page, 'history_total')) === sum('payload_bytes').toString());
  await page.getByRole('radio', { name: 'Traces' }).check();

  // Invoices: every one the api lists, with its total.
  const invoices = await apiOk(`/v1/orgs/${orgId}/invoices`);
  for (const i of invoices.invoices) {
    assert.equal(await figure(page, 'invoice_total_cents', `[data-period="${i.period}"]`), i.total_cents.toString(), `invoice ${i.period}`);
  }
  return usage;
}

say('a portal link opens the customer page of its org');
const { context: customer, page } = await newPage(DESKTOP);
const nearLink = await portalLink(config.orgs.near);
const started = Date.now();
await page.goto(nearLink);
await page.locator('[data-tally="traces"]').waitFor({ timeout: 20_000 });
console.log(`page test: from navigation to the figures: ${Date.now() - started} ms`);
assert.equal(new URL(page.url()).hash, '', 'the token leaves the address bar');
const cookies = await customer.cookies();
const session = cookies.find((c) => c.name === 'tally_session');
assert.ok(session && session.httpOnly && session.sameSite === 'Strict', `the session cookie is HttpOnly and SameSite=Strict: ${JSON.stringify(session)}`);
secrets.add(session.value);
assert.equal(await page.evaluate(() => document.cookie), '', 'scripts cannot read the session cookie');
assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0, 'nothing in browser storage');
say('the customer page shows the api\'s figures (near: 90% of the payload)');
const nearUsage = await checkCustomerFigures(page, config.orgs.near);
assert.deepEqual(await values(page, 'warning'), ['payload_bytes:90']);
await page.screenshot({ path: `${config.results}/customer-near.png`, fullPage: true });

say('late events of a closed period');
await page.locator('#late-period').selectOption(config.late_period);
await eventually('the late count of the closed period', async () => (await figure(page, 'late_count')) === '3');
const lateApi = await apiOk(`/v1/orgs/${config.orgs.near}/late-events?period=${config.late_period}`);
for (const e of lateApi.late_events) await page.getByText(e.event_id).first().waitFor({ timeout: 10_000 });

say('the CSV download carries the api\'s days');
const csvLink = page.getByRole('link', { name: /csv/i });
const [download] = await Promise.all([page.waitForEvent('download'), csvLink.click()]);
const csv = readFileSync(await download.path(), 'utf8').trim().split('\n');
assert.equal(csv[0], 'day,operation,traces,payload_bytes');
const csvTraces = csv.slice(1).reduce((s, line) => s + BigInt(line.split(',')[2]), 0n);
assert.equal(csvTraces, nearUsage.traces, 'the CSV adds up to the usage');

say('one org\'s session reads nothing of another\'s');
const probeCode = async (path, method = 'GET', body) =>
  page.evaluate(async ([path, method, body]) => {
    const r = await fetch(path, { method, headers: body ? { 'content-type': 'application/json' } : {}, body });
    const answer = await r.json().catch(() => null);
    return `${r.status} ${answer?.error?.code ?? ''}`.trim();
  }, [path, method, body ?? null]);
const probe = async (...args) => Number((await probeCode(...args)).split(' ')[0]);
const other = config.orgs.over;
for (const path of [`/v1/orgs/${other}/usage`, `/v1/orgs/${other}/usage/daily`, `/v1/orgs/${other}/usage/projection`, `/v1/orgs/${other}/invoices`,
  `/v1/orgs/${other}/late-events`, `/v1/orgs/${other}/subscription`, `/v1/orgs/${other}/invoices/${config.period}`]) {
  assert.equal(await probe(path), 404, `GET ${path} from another org's session`);
}
for (const path of ['/v1/orgs', '/v1/pipeline']) assert.equal(await probe(path), 403, `GET ${path} needs the admin`);
assert.equal(await probe(`/v1/orgs/${other}/portal-sessions`, 'POST', '{}'), 403, 'a customer cannot make links (no CSRF token, and not admin)');
assert.equal(await probeCode(`/v1/orgs/${config.orgs.near}/plan-changes`, 'POST', '{"tier":"growth"}'), '403 csrf_failed', 'a change without the CSRF token is refused');
assert.equal(await probeCode('/v1/sessions/current', 'DELETE'), '403 csrf_failed', 'signing out takes the CSRF token too');
await customer.close();

say('a reused link and a changed link are refused with a page that says so');
for (const [url, code] of [[nearLink, 'link_used'], [nearLink.slice(0, -1) + (nearLink.endsWith('0') ? '1' : '0'), 'link_invalid']]) {
  const { context, page: p } = await newPage(PHONE);
  await p.goto(url);
  assert.equal(await figure(p, 'link-refused'), code);
  assert.equal(new URL(p.url()).hash, '', 'the token leaves the address bar, even when refused');
  assert.equal((await context.cookies()).length, 0, 'a refused link opens no session');
  await context.close();
}

say('sign-in refuses what it should, with its code; signing out ends the session');
{
  const signIn = async (body, contentType = 'application/json') => {
    const r = await fetch(`${API}/v1/sessions`, { method: 'POST', headers: { 'content-type': contentType }, body });
    return `${r.status} ${(await r.json().catch(() => null))?.error?.code ?? ''}`.trim();
  };
  assert.equal(await signIn(JSON.stringify({ key: 'tally_read_' + '0'.repeat(64) })), '401 invalid_key');
  assert.equal(await signIn(JSON.stringify({ key: config.ingest_key })), '403 key_not_allowed');
  assert.equal(await signIn(`key=${config.read_keys.near}`, 'application/x-www-form-urlencoded'), '415 unsupported_media_type');
  const bearer = await api(`/v1/orgs/${config.orgs.over}/plan-changes`, { method: 'POST', token: config.read_keys.over, body: { tier: 'growth' } });
  assert.equal(bearer.status, 403, 'a bare read key cannot change what an org pays');
  const { context, page: p } = await newPage(PHONE);
  await p.goto(`${API}/app/signin`);
  await p.getByLabel('Read or billing key, or admin token').fill(config.read_keys.near);
  await p.getByRole('button', { name: /sign in/i }).click();
  await p.locator('[data-tally="traces"]').waitFor();
  // A read key's session reads: the plans are shown, with no way to buy or switch.
  await p.locator('[data-tally-note="read-only"]').waitFor();
  assert.equal(await p.getByRole('button', { name: /^(Subscribe to|Switch to)/ }).count(), 0, 'a read key cannot change the plan');
  const csrf = await p.evaluate(async () => (await (await fetch('/v1/sessions/current')).json()).csrf_token);
  const refused = await p.evaluate(async ([org, token]) => {
    const r = await fetch(`/v1/orgs/${org}/checkout`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tally-csrf': token }, body: JSON.stringify({ tier: 'growth', success_url: location.origin + '/app/', cancel_url: location.origin + '/app/' }) });
    return `${r.status} ${(await r.json()).error?.code}`;
  }, [config.orgs.near, csrf]);
  assert.equal(refused, '403 forbidden', 'nor start Checkout through the api');
  await p.getByRole('button', { name: /sign out/i }).click();
  await p.waitForURL(/\/app\/signin/);
  const after = await p.evaluate(async () => (await fetch('/v1/sessions/current')).status);
  assert.equal(after, 401, 'the session is gone');
  await context.close();
}

// ---- Checkout and tier changes ------------------------------------------------------------------

say('a customer without a subscription, signed in with a billing key, buys growth through Checkout');
{
  const billingKey = await apiOk(`/v1/orgs/${config.orgs.buyer}/keys`, { method: 'POST', body: { scope: 'billing' } });
  secrets.add(billingKey.key);
  const { context, page: p } = await newPage(DESKTOP);
  await p.goto(`${API}/app/signin`);
  await p.getByLabel('Read or billing key, or admin token').fill(billingKey.key);
  await p.getByRole('button', { name: /sign in/i }).click();
  await p.locator('[data-tally="tier"]').waitFor();
  assert.equal(await figure(p, 'tier'), 'starter');
  await p.getByRole('button', { name: 'Subscribe to Growth' }).click();
  await p.waitForURL(/\/_standin\/checkout\//);
  await p.getByRole('button', { name: 'Subscribe' }).click();
  await p.waitForURL(/\/app\//);
  await eventually('the bought tier shows after the webhook', async () => (await p.locator('[data-tally="tier"]').getAttribute('data-value')) === 'growth', 60_000);
  const usage = await apiOk(`/v1/orgs/${config.orgs.buyer}/usage`);
  assert.equal(usage.tier, 'growth');
  await context.close();
}

say('a subscribed customer switches tier; the page shows it once the webhook is in');
{
  const { context, page: p } = await newPage(DESKTOP);
  await p.goto(await portalLink(config.orgs.over));
  await p.locator('[data-tally="tier"]').waitFor();
  assert.equal(await figure(p, 'tier'), 'starter');
  assert.deepEqual((await values(p, 'warning')).sort(), ['payload_bytes:100']);
  await checkCustomerFigures(p, config.orgs.over);
  await p.getByRole('button', { name: 'Switch to Business' }).click();
  const dialog = p.getByRole('dialog');
  await dialog.waitFor();
  assert.match(await dialog.innerText(), /whole/i, 'the dialog says the tier at the period end prices the whole period');
  await dialog.getByRole('button', { name: 'Switch to Business' }).click();
  await eventually('the new tier shows after the webhook', async () => (await p.locator('[data-tally="tier"]').getAttribute('data-value')) === 'business', 60_000);
  const usage = await apiOk(`/v1/orgs/${config.orgs.over}/usage`);
  assert.equal(usage.tier, 'business');
  await checkCustomerFigures(p, config.orgs.over);
  await context.close();
}

// ---- the operator's page ------------------------------------------------------------------------

say('the operator signs in with the admin token and sees every org, sorted and paged as the api');
{
  const { context, page: p } = await newPage(DESKTOP);
  await p.goto(`${API}/app/signin`);
  await p.getByLabel('Read or billing key, or admin token').fill(config.admin_token);
  await p.getByRole('button', { name: /sign in/i }).click();
  await p.waitForURL(/\/app\/admin/);
  const settled = () => eventually('the list settles', async () => !(await p.getByText('(updating…)').count()));
  await p.getByLabel('Search orgs by id or name').fill(config.prefix);
  // The search applies after a pause in typing, and a new search starts again at page 1: page
  // only once the list is the search's.
  await p.getByText(`matching “${config.prefix}”`).waitFor();
  await settled();
  const expectedOrgs = [config.orgs.near, config.orgs.over, config.orgs.buyer, ...config.orgs.quiet];
  const apiAll = async (sort, order) => {
    const rows = [];
    let cursor = null;
    do {
      const q = new URLSearchParams({ sort, order, q: config.prefix, limit: '50', ...(cursor ? { cursor } : {}) });
      const page = await apiOk(`/v1/orgs?${q}`);
      rows.push(...page.orgs);
      cursor = page.next_cursor;
    } while (cursor);
    return rows;
  };
  const pageRows = async () =>
    p.locator('[data-tally="org-row"]').evaluateAll((rows) =>
      rows.map((r) => ({
        org: r.getAttribute('data-org'),
        traces: r.querySelector('[data-tally="org_traces"]')?.getAttribute('data-value'),
        bytes: r.querySelector('[data-tally="org_payload_bytes"]')?.getAttribute('data-value'),
        draft: r.querySelector('[data-tally="org_draft_total_cents"]')?.getAttribute('data-value'),
      })),
    );
  const walk = async () => {
    const seen = [];
    for (;;) {
      await settled();
      seen.push(...(await pageRows()));
      const next = p.getByRole('button', { name: 'Next page' });
      if (await next.isDisabled()) return seen;
      const first = (await pageRows())[0]?.org;
      await next.click();
      await eventually('the next page', async () => (await pageRows())[0]?.org !== first);
    }
  };
  for (const [label, sort, order] of [[null, 'org_id', 'asc'], ['Traces', 'traces', 'desc'], ['Traces', 'traces', 'asc'], ['Name', 'name', 'asc']]) {
    if (label) await p.getByRole('button', { name: label, exact: false }).first().click();
    const want = await apiAll(sort, order);
    assert.deepEqual(want.map((o) => o.org_id).sort(), [...expectedOrgs].sort(), 'the api lists every org of the search');
    // Back to the first page of this sort, then walk the pages.
    await eventually(`the list sorted by ${sort} ${order}`, async () => (await pageRows())[0]?.org === want[0].org_id && (await pageRows()).length === Math.min(50, want.length));
    const seen = await walk();
    assert.deepEqual(seen.map((r) => r.org), want.map((o) => o.org_id), `the page's order, by ${sort} ${order}`);
    for (const [i, r] of seen.entries()) {
      assert.deepEqual([r.traces, r.bytes, r.draft], [want[i].traces.toString(), want[i].payload_bytes.toString(), want[i].draft_total_cents.toString()], `figures of ${r.org}`);
    }
    // A new sort starts again at its first page (the page keeps no cursor across sorts).
  }
  say('the pipeline shows each stage');
  const pipeline = await apiOk('/v1/pipeline');
  for (const s of pipeline.stages) await p.getByText(s.name, { exact: true }).first().waitFor();
  await p.screenshot({ path: `${config.results}/operator.png`, fullPage: true });

  say('an operator opens an org: its page plus the admin actions');
  await p.goto(`${API}/app/admin/orgs/${config.orgs.near}`);
  await checkCustomerFigures(p, config.orgs.near);
  await p.getByRole('button', { name: /customer link/i }).click();
  const link = await p.getByLabel('Link (works once)').inputValue();
  assert.match(link, /\/app\/portal#/);
  await context.close();
}

// ---- accessibility, at phone and desktop widths ---------------------------------------------------

say('axe-core finds no serious or critical violation on either page, at both widths');
for (const viewport of [PHONE, DESKTOP]) {
  const { context, page: p } = await newPage(viewport, { bypassCSP: true });
  await p.goto(await portalLink(config.orgs.near));
  await p.locator('[data-tally="projected_total_cents"]').waitFor();
  await p.locator('[data-tally="history_total"]').waitFor();
  await axe(p, `the customer's page at ${viewport.width} px`);
  await context.close();
  const { context: c2, page: p2 } = await newPage(viewport, { bypassCSP: true });
  await p2.goto(`${API}/app/signin`);
  await axe(p2, `the sign-in page at ${viewport.width} px`);
  await p2.getByLabel('Read or billing key, or admin token').fill(config.admin_token);
  await p2.getByRole('button', { name: /sign in/i }).click();
  await p2.locator('[data-tally="org-row"]').first().waitFor();
  await axe(p2, `the operator's page at ${viewport.width} px`);
  await c2.close();
}

// ---- an expired link --------------------------------------------------------------------------

say('an expired link is refused');
{
  const wait = expiringMadeAt + 61_000 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const { context, page: p } = await newPage(PHONE);
  await p.goto(expiring);
  assert.equal(await figure(p, 'link-refused'), 'link_expired');
  assert.equal(new URL(p.url()).hash, '', 'the token leaves the address bar');
  await context.close();
}

say('no key, token or session id appeared in any URL the browser asked for, and the CSP held');
for (const url of requested) {
  for (const s of secrets) assert.ok(!url.includes(s), `a secret in a requested URL: ${url.slice(0, 80)}…`);
}
assert.deepEqual(cspViolations, [], 'no Content-Security-Policy violation');
console.log(`page test: ${requested.length} requests checked; every check passed`);
await browser.close();
process.exit(0);
