-- Invoice corrections, a read model written by the projector from tally.corrections.v1
-- (`replay correct`). The stored invoice (`invoices`) is never changed: the invoice in effect for
-- (org, period) is its newest correction (highest log_offset; all of an org's corrections are in
-- one partition), or the stored invoice when there is none.
CREATE TABLE invoice_corrections (
    org_id                text NOT NULL,
    period                text NOT NULL,               -- YYYY-MM
    correction_id         text NOT NULL,
    log_partition         integer NOT NULL,
    log_offset            bigint NOT NULL,             -- orders an org's corrections
    corrected_at          timestamptz NOT NULL,        -- the correction record's log time
    reason                text NOT NULL,
    tier                  text NOT NULL,               -- the corrected invoice, as in `invoices`
    pricing_version       text NOT NULL,
    currency              text NOT NULL,
    traces                bigint NOT NULL,
    payload_bytes         bigint NOT NULL,
    lines                 jsonb NOT NULL,
    total_cents           bigint NOT NULL,
    finalized_at          timestamptz NOT NULL,
    replaces_traces       bigint NOT NULL,             -- what was in effect before
    replaces_payload_bytes bigint NOT NULL,
    replaces_total_cents  bigint NOT NULL,
    projected_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, period, correction_id)
);
CREATE INDEX invoice_corrections_newest ON invoice_corrections (org_id, period, log_offset DESC);
