// What the page scripts share: the stack's address and admin token (as `make up` leaves them),
// and a headless chromium with the flags this machine needs.
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const API = `http://${process.env.TALLY_API_ADDR ?? '127.0.0.1:8080'}`;
export const ADMIN_TOKEN = (process.env.TALLY_ADMIN_TOKEN || readFileSync(new URL('../../../.tally/admin-token', import.meta.url), 'utf8')).trim();
export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1440, height: 900 };

/** Debian's chromium, headless, without the background requests a closed network refuses. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.TALLY_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

/** A single-use link into `org`'s page. */
export async function portalLink(org) {
  const r = await fetch(`${API}/v1/orgs/${org}/portal-sessions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: '{}',
  });
  if (r.status !== 201) throw new Error(`portal link for ${org}: ${r.status} ${await r.text()}`);
  return (await r.json()).url;
}

/** Signs a page in as the operator, through the sign-in form. */
export async function signInOperator(page) {
  await page.goto(`${API}/app/signin`);
  await page.getByLabel('Read or billing key, or admin token').fill(ADMIN_TOKEN);
  await page.getByRole('button', { name: /sign in/i }).click();
  await page.locator('[data-tally="org-row"]').first().waitFor();
}
