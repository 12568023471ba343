-- Stripe: which Stripe customer and subscription each org is, what Stripe has accepted of each
-- org's usage, the Stripe events received, and Stripe's invoices. None of these is a read model
-- of the log: they record what happened between Tally and Stripe.

-- An org linked to a Stripe customer (by Checkout, `checkout.session.completed`). Only linked
-- orgs are reported to Stripe.
CREATE TABLE stripe_customers (
    org_id               text PRIMARY KEY,
    customer_id          text NOT NULL UNIQUE,
    subscription_id      text,
    subscription_status  text,
    -- Usage of periods ending after this instant is reported (the period the org subscribed in
    -- and every later one).
    linked_at            timestamptz NOT NULL,
    -- Stripe's `created` of the newest event applied to this link: Stripe does not deliver in
    -- order, and an older event must not undo a newer one.
    event_created        timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The reporter's ledger: per (org, period, metric), the cumulative total Stripe has accepted.
-- A meter event is written here as `pending_*` before it is sent and moved into `reported` once
-- Stripe accepts it, so a reporter that dies in between sends exactly the same event again
-- (same identifier, same Idempotency-Key, same timestamp), which Stripe refuses to count twice.
CREATE TABLE stripe_meter_ledger (
    org_id              text NOT NULL,
    period              text NOT NULL,              -- YYYY-MM
    metric              text NOT NULL CHECK (metric IN ('traces', 'payload_bytes')),
    customer_id         text NOT NULL,
    reported            bigint NOT NULL DEFAULT 0 CHECK (reported >= 0),
    pending_total       bigint CHECK (pending_total > reported),
    pending_identifier  text,
    pending_timestamp   bigint,                     -- unix seconds, inside the period
    pending_since       timestamptz,                -- when the pending event was first planned
    -- Set when Stripe refused the pending event for good: the row is not reported again until
    -- an operator runs `billing-reporter retry-failed`.
    failed_at           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, period, metric),
    CHECK ((pending_total IS NULL) = (pending_identifier IS NULL)),
    CHECK ((pending_total IS NULL) = (pending_timestamp IS NULL)),
    CHECK ((pending_total IS NULL) = (pending_since IS NULL))
);

-- Every final refusal of a meter event, kept for `billing-reporter status` and for support.
CREATE TABLE stripe_report_failures (
    id           bigserial PRIMARY KEY,
    org_id       text NOT NULL,
    period       text NOT NULL,
    metric       text NOT NULL,
    identifier   text NOT NULL,
    total        bigint NOT NULL,                   -- the cumulative total the event would reach
    value        bigint NOT NULL,                   -- what the event carried
    status       integer,                           -- Stripe's HTTP status; NULL for a local refusal
    code         text,
    message      text NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);

-- Stripe events received on the webhook, once each (Stripe delivers at least once). The api
-- stores the event before answering and processes it after; `processed_at` stays NULL until
-- then, so an event whose processing was interrupted is finished later.
CREATE TABLE stripe_webhook_events (
    event_id      text PRIMARY KEY,
    type          text NOT NULL,
    created       timestamptz NOT NULL,             -- Stripe's `created`
    payload       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    outcome       text,
    -- Failed processing attempts; the sweeper leaves an event alone after 50 (an operator looks
    -- at `last_error`).
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);

CREATE INDEX stripe_webhook_events_unprocessed ON stripe_webhook_events (received_at) WHERE processed_at IS NULL;

-- Stripe's invoice for an org's period, next to Tally's final invoice (which is never changed).
CREATE TABLE stripe_invoices (
    org_id         text NOT NULL,
    period         text NOT NULL,                   -- YYYY-MM of the invoice's period start (UTC)
    invoice_id     text NOT NULL UNIQUE,
    status         text NOT NULL,
    total_cents    bigint NOT NULL,
    currency       text NOT NULL,
    event_created  timestamptz NOT NULL,            -- the newest event applied, to ignore older ones
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, period)
);
