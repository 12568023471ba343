-- Checkout Sessions Tally created, recorded when Stripe answers the creation. A completed
-- session is acted on only if Tally created it, for the org it names: a session made elsewhere
-- in the Stripe account, or one whose client_reference_id or metadata was changed, links
-- nothing (docs/security.md).
CREATE TABLE checkout_sessions (
    session_id    text PRIMARY KEY,
    org_id        text NOT NULL REFERENCES orgs (org_id),
    tier          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
CREATE INDEX checkout_sessions_by_org ON checkout_sessions (org_id, created_at);
