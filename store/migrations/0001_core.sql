-- Tally's core schema. The registry (orgs, keys) is written by the api; everything else is a
-- read model written by the projector from tally.usage.v1 and can be rebuilt from the log.

CREATE TABLE orgs (
    org_id      text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys, stored as SHA-256 hashes. `read` keys read their own org; `ingest` keys send events
-- for any org (they belong to emitting services).
CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES orgs (org_id),
    scope       text NOT NULL CHECK (scope IN ('read', 'ingest')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Cumulative usage per (org, period), as of `version` of tally.usage.v1.
CREATE TABLE usage_periods (
    org_id                  text NOT NULL,
    period                  text NOT NULL,            -- YYYY-MM
    version                 bigint NOT NULL,
    state                   text NOT NULL CHECK (state IN ('open', 'closed')),
    traces                  bigint NOT NULL,
    payload_bytes           bigint NOT NULL,
    not_billed_child_span   bigint NOT NULL,
    not_billed_not_success  bigint NOT NULL,
    not_billed_duplicate    bigint NOT NULL,
    not_billed_late         bigint NOT NULL,
    updated_at              timestamptz NOT NULL,     -- log time of the newest change
    closed_at               timestamptz,
    projected_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, period)
);

CREATE TABLE usage_by_operation (
    org_id         text NOT NULL,
    period         text NOT NULL,
    operation      text NOT NULL,
    traces         bigint NOT NULL,
    payload_bytes  bigint NOT NULL,
    PRIMARY KEY (org_id, period, operation)
);

-- Billable usage per UTC day (of ended_at) and operation.
CREATE TABLE usage_daily (
    org_id         text NOT NULL,
    day            date NOT NULL,
    operation      text NOT NULL,
    traces         bigint NOT NULL,
    payload_bytes  bigint NOT NULL,
    PRIMARY KEY (org_id, day, operation)
);

-- Events that arrived after their period closed: never billed, always visible.
CREATE TABLE late_events (
    org_id         text NOT NULL,
    period         text NOT NULL,
    event_id       text NOT NULL,
    operation      text NOT NULL,
    ended_at       timestamptz NOT NULL,
    arrived_at     timestamptz NOT NULL,
    billable       boolean NOT NULL,
    payload_bytes  bigint NOT NULL,
    PRIMARY KEY (org_id, period, event_id)
);

-- The projector's position in tally.usage.v1, written in the same transaction as the rows above:
-- the source of truth it resumes from (Kafka's committed offsets are only a hint).
CREATE TABLE projector_offsets (
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
