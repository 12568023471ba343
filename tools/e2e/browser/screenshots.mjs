// `make screenshots`: the customer's page (acme, through a portal link) and the operator's page,
// at 390x844 and 1440x900 (and the whole customer's page at 1440 px), into docs/screenshots/, as
// seen from New York. Run against the stack `make demo` filled.
import { mkdirSync } from 'node:fs';
import { DESKTOP, PHONE, launch, portalLink, signInOperator } from './common.mjs';

const out = new URL('../../../docs/screenshots/', import.meta.url).pathname;
mkdirSync(out, { recursive: true });
const org = process.env.TALLY_SCREENSHOT_ORG ?? 'acme';
const browser = await launch();
for (const [name, viewport] of [['phone', PHONE], ['desktop', DESKTOP]]) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, timezoneId: 'America/New_York' });
  const page = await context.newPage();
  await page.goto(await portalLink(org));
  await page.locator('[data-tally="projected_total_cents"]').waitFor();
  await page.locator('[data-tally="history_total"]').waitFor();
  await page.screenshot({ path: `${out}customer-${name}.png`, fullPage: false });
  if (name === 'desktop') await page.screenshot({ path: `${out}customer-${name}-full.png`, fullPage: true });
  await context.close();
  const admin = await browser.newContext({ viewport, deviceScaleFactor: 1, timezoneId: 'America/New_York' });
  const p = await admin.newPage();
  await signInOperator(p);
  await p.getByText('aggregator').first().waitFor();
  await p.screenshot({ path: `${out}operator-${name}.png`, fullPage: false });
  await admin.close();
  console.log(`screenshots: ${name} (${viewport.width}x${viewport.height}) written to docs/screenshots/`);
}
await browser.close();
