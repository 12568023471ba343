-- Prices and invoices. Both are read models written by the projector from tally.usage.v1.

-- The tier that prices each period: the tier in effect now while the period runs, at its end
-- once it has ended.
ALTER TABLE usage_periods ADD COLUMN tier text NOT NULL DEFAULT 'starter'
    CHECK (tier IN ('starter', 'growth', 'business', 'enterprise'));

-- Final invoices, one per (org, period), written once when the period closes and never updated.
-- Drafts are not stored: the api prices the current usage with the same code.
CREATE TABLE invoices (
    org_id           text NOT NULL,
    period           text NOT NULL,               -- YYYY-MM
    tier             text NOT NULL,
    pricing_version  text NOT NULL,
    currency         text NOT NULL,
    traces           bigint NOT NULL,
    payload_bytes    bigint NOT NULL,
    lines            jsonb NOT NULL,              -- [LineItemV1], docs/schemas/invoice.v1.json
    total_cents      bigint NOT NULL,
    finalized_at     timestamptz NOT NULL,        -- the instant the period closed (end + grace)
    projected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, period)
);
