// The api's answers as the page reads them (docs/page.md). Every JSON integer is a bigint here
// (see parseJson in api.ts); the few non-integers (percent_used, ages in seconds) stay numbers and
// are never used for money.

import type { Metric } from './format';

export type Role = 'customer' | 'operator';

export interface Session {
  role: Role;
  /** Whether this session may start Checkout and change the plan (opened with a portal link, a
   * billing key or the admin token; not with a read key). */
  may_change_plan: boolean;
  org_id: string | null;
  expires_at: string;
  csrf_token: string;
}

export type Tier = string;

export interface Usage2 {
  traces: bigint;
  payload_bytes: bigint;
}

export interface Warning {
  metric: Metric;
  level: 'approaching' | 'exceeded';
  percent_used: number | null;
}

export interface Line {
  kind: 'base' | 'included' | 'overage';
  metric: Metric | null;
  quantity: bigint;
  unit_amount_decimal: string;
  amount_cents: bigint;
  description: string;
}

export interface PeriodUsage {
  org_id: string;
  period: { id: string; start: string; end: string; state: string };
  traces: bigint;
  payload_bytes: bigint;
  by_operation: Record<string, Usage2>;
  not_billed: { child_span: bigint; not_success: bigint; duplicate: bigint; late: bigint };
  updated_at: string | null;
  tier: Tier;
  included: Usage2;
  cost: {
    currency: string;
    status: 'draft' | 'final';
    pricing_version: string;
    lines: Line[];
    total_cents: bigint;
  };
  warnings: Warning[];
}

export interface Estimate {
  tier: Tier;
  total_cents: bigint;
  lines: Line[];
}

export interface Projection {
  org_id: string;
  period: string;
  as_of: string;
  elapsed_secs: bigint;
  period_secs: bigint;
  usage: Usage2;
  projected: Usage2;
  projected_cost: { tier: Tier; total_cents: bigint; lines: Line[] };
  estimates: {
    current: Estimate[];
    current_cheapest: Tier;
    projected: Estimate[];
    projected_cheapest: Tier;
  };
}

export interface Band {
  from: bigint;
  up_to: bigint | null;
  unit_amount_decimal: string;
  /** Dollars per `per` units, as written in the pricing file ("2.00"). */
  price: string;
  per: bigint;
}

export interface MetricPrice {
  included: bigint;
  bands: Band[];
}

export interface PricingTier {
  tier: Tier;
  name: string;
  base_fee_cents: bigint;
  features: string[];
  traces: MetricPrice;
  payload_bytes: MetricPrice;
}

export interface Pricing {
  version: string;
  currency: string;
  tiers: PricingTier[];
}

export interface StripeLink {
  customer_id: string;
  subscription_id: string | null;
  status: string | null;
}

export interface Subscription {
  org_id: string;
  tier: Tier;
  period: string;
  features: string[];
  stripe: StripeLink | null;
}

export interface Correction {
  correction_id: string;
  corrected_at: string;
  reason: string;
  replaces_total_cents: bigint;
}

/** One period the pipeline has seen an org in (`GET /v1/orgs/{org_id}/periods`). */
export interface PeriodSummary {
  period: string;
  state: 'open' | 'closed';
  tier: string;
  traces: bigint;
  payload_bytes: bigint;
  late_events: bigint;
}

export interface Invoice {
  org_id: string;
  period: string;
  tier: Tier;
  pricing_version: string;
  currency: string;
  status: 'draft' | 'final';
  usage: Usage2;
  lines: Line[];
  total_cents: bigint;
  finalized_at: string | null;
  correction: Correction | null;
  stripe: { invoice_id: string; status: string | null; total_cents: bigint | null; currency: string | null } | null;
}

export interface DailyRow {
  day: string;
  operation: string;
  traces: bigint;
  payload_bytes: bigint;
}

export interface Daily {
  org_id: string;
  from: string;
  to: string;
  days: DailyRow[];
}

export interface LateEvent {
  event_id: string;
  operation: string;
  ended_at: string;
  arrived_at: string;
  billable: boolean;
  payload_bytes: bigint;
}

export interface LateEvents {
  org_id: string;
  period: string;
  late_events: LateEvent[];
}

export interface OrgRow {
  org_id: string;
  name: string;
  tier: Tier;
  traces: bigint;
  payload_bytes: bigint;
  included: Usage2;
  percent_used: { traces: number | null; payload_bytes: number | null };
  warnings: Warning[];
  draft_total_cents: bigint;
}

export type SortKey = 'org_id' | 'name' | 'tier' | 'traces' | 'payload_bytes' | 'percent_used';

export interface OrgList {
  period: string;
  sort: SortKey;
  order: 'asc' | 'desc';
  total: bigint;
  orgs: OrgRow[];
  next_cursor: string | null;
}

export interface Pipeline {
  stages: { name: string; ready: boolean; reason: string | null; last_commit_age_seconds: number | bigint | null }[];
  /** `topic` and `lag` are null, with `error`, when Kafka did not answer. */
  consumer_lag: { group: string; topic: string | null; lag: bigint | null; error?: string }[];
  last_record_at: string | null;
  late_events: bigint | null;
  rejected_events: bigint | null;
  billing_reporter: {
    failed_rows: bigint | null;
    pending_rows: bigint | null;
    ahead_rows: bigint | null;
    last_success_at: string | null;
  } | null;
}

export interface NewKey {
  org_id: string;
  scope: string;
  key: string;
}

export interface PortalLink {
  url: string;
  expires_at: string;
}

/** The six operations of docs/metering.md, in the api's order (tally_schemas::Operation::ALL). */
export const OPERATIONS = ['llm_call', 'tool_call', 'retrieval', 'embedding', 'prompt_generation', 'response_processing'] as const;
