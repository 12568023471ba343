-- The usage page: sessions of people signed in through the browser, and the single-use portal
-- links that open them. Neither is a read model: they record who may see what, for how long.

-- A browser session. The cookie holds a random id; only its SHA-256 hash is stored. `org_id` is
-- NULL for an operator (admin) session.
CREATE TABLE page_sessions (
    session_hash  text PRIMARY KEY,
    org_id        text REFERENCES orgs (org_id),
    role          text NOT NULL CHECK (role IN ('customer', 'operator')),
    -- How it was opened: 'portal' (a portal link), 'read_key' or 'admin_token'.
    opened_by     text NOT NULL CHECK (opened_by IN ('portal', 'read_key', 'admin_token')),
    -- What it was opened with, so that it ends with it: the read key's hash (revoking the key
    -- ends the session), or a fingerprint of the admin token (rotating the token ends operator
    -- and portal sessions).
    credential    text NOT NULL,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    CHECK ((role = 'operator') = (org_id IS NULL))
);
CREATE INDEX page_sessions_expiry ON page_sessions (expires_at);

-- A portal link handed to an org's customer: spent once, by the first exchange.
CREATE TABLE portal_links (
    link_hash   text PRIMARY KEY,             -- SHA-256 of the link id
    org_id      text NOT NULL REFERENCES orgs (org_id),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz
);
CREATE INDEX portal_links_expiry ON portal_links (expires_at);

-- The operator's list of orgs sorts this period's usage.
CREATE INDEX usage_periods_by_period ON usage_periods (period, org_id);
