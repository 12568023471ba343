// `make bench-page`, the browser's part: from navigation to the figures shown. Each run opens a
// fresh browser context (no cache), follows a portal link to the customer's page and stops the
// clock when the usage figures are on screen; then the operator's list the same way. The stack
// runs on the same machine (`make up`, after `make demo`).
import { DESKTOP, launch, portalLink, signInOperator, API } from './common.mjs';

const RUNS = Number(process.env.TALLY_BENCH_PAGE_RUNS ?? 20);
const org = process.env.TALLY_SCREENSHOT_ORG ?? 'acme';
const browser = await launch();
const ms = { customer: [], operator: [] };
for (let i = 0; i < RUNS; i++) {
  const link = await portalLink(org);
  const context = await browser.newContext({ viewport: DESKTOP });
  const page = await context.newPage();
  const t0 = performance.now();
  await page.goto(link);
  await page.locator('[data-tally="draft_total_cents"]').waitFor();
  await page.locator('[data-tally="traces"]').waitFor();
  ms.customer.push(performance.now() - t0);
  await context.close();
  const admin = await browser.newContext({ viewport: DESKTOP });
  const p = await admin.newPage();
  await signInOperator(p); // signs in, then the list
  const t1 = performance.now();
  await p.goto(`${API}/app/admin`);
  await p.locator('[data-tally="org-row"]').first().waitFor();
  ms.operator.push(performance.now() - t1);
  await admin.close();
}
await browser.close();
const pct = (a, p) => [...a].sort((x, y) => x - y)[Math.round((a.length - 1) * p)];
for (const [what, a] of Object.entries(ms)) {
  console.log(`bench-page: navigation to figures, ${what}'s page: n=${a.length} p50=${pct(a, 0.5).toFixed(0)} ms p95=${pct(a, 0.95).toFixed(0)} ms max=${Math.max(...a).toFixed(0)} ms`);
}
