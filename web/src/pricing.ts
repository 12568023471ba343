// Words for prices, from GET /v1/pricing (pure).

import { formatDollarString, formatGB, formatInt, formatPer, type Metric } from './format';
import type { Line, MetricPrice, Pricing, PricingTier } from './types';

/** "$2.00 per 1,000 traces"; graduated bands: "$1.20 per 1,000 traces up to 5,000,000, …, then $0.80 per 1,000 traces". */
export function overagePrice(metric: Metric, price: MetricPrice): string {
  const bands = price.bands;
  if (bands.length === 0) return 'not billed';
  const one = (b: (typeof bands)[number]) => `${formatDollarString(b.price)} ${formatPer(metric, b.per)}`;
  if (bands.length === 1) return one(bands[0]!);
  return bands
    .map((b, i) => {
      if (b.up_to === null) return `${i === bands.length - 1 ? 'then ' : ''}${one(b)}`;
      return `${one(b)} up to ${amount(metric, b.up_to)}`;
    })
    .join(', ');
}

/** An amount of a metric: "250,000 traces", "25.00 GB". */
export function amount(metric: Metric, n: bigint): string {
  return metric === 'traces' ? `${formatInt(n)} traces` : formatGB(n);
}

export function tierOf(pricing: Pricing, tier: string): PricingTier | undefined {
  return pricing.tiers.find((t) => t.tier === tier);
}

/** The sum of the overage lines of a metric (what is billed beyond the included amount). */
export function overageCents(lines: Line[], metric: Metric): bigint {
  return lines.filter((l) => l.kind === 'overage' && l.metric === metric).reduce((s, l) => s + l.amount_cents, 0n);
}

const FEATURES: Record<string, string> = {
  usage_dashboard: 'Usage dashboard',
  api_access: 'API access',
  rbac: 'Role-based access (RBAC)',
  sso: 'Single sign-on (SSO)',
  audit_logs: 'Audit logs',
  scim: 'SCIM provisioning',
  dedicated_support: 'Dedicated support',
};

export function featureName(feature: string): string {
  return FEATURES[feature] ?? feature.replace(/_/g, ' ');
}

/** Stripe subscription statuses under which Stripe bills (api/src/stripe.rs is_live). */
export function isLive(status: string | null | undefined): boolean {
  return status === 'active' || status === 'trialing' || status === 'past_due';
}
