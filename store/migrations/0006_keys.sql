-- Keys that do only what they are for (docs/security.md).
--
-- Scopes:
--   read     an org's dashboards: reads that org;
--   billing  reads that org, and may start Checkout and change its plan;
--   ingest   an org's own services: sends events for that org only;
--   service  the company's own emitters: sends events for the orgs listed in api_key_orgs, or
--            for every org when all_orgs (an explicit choice of the admin). No org of its own.
-- Each key has a public id (`key_id`, safe to show and log), a name, when it was last used, and
-- an expiry, set when a rotation gives the old key a grace period.

ALTER TABLE api_keys ADD COLUMN key_id text;
-- Keys made before this migration get an id from their hash; the hash of a 256-bit random key
-- tells nothing about the key.
UPDATE api_keys SET key_id = 'key_' || substr(key_hash, 1, 24);
ALTER TABLE api_keys ALTER COLUMN key_id SET NOT NULL;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_key_id_unique UNIQUE (key_id);

ALTER TABLE api_keys ADD COLUMN name text NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
ALTER TABLE api_keys ADD COLUMN all_orgs boolean NOT NULL DEFAULT false;
-- The key a rotation replaced this one with.
ALTER TABLE api_keys ADD COLUMN replaced_by text REFERENCES api_keys (key_id);

ALTER TABLE api_keys ALTER COLUMN org_id DROP NOT NULL;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;

-- Ingest keys used to send for any org. So that no emitter stops being metered on upgrade, each
-- becomes what it was in effect: a service key for all orgs, named after the org it was made
-- for. An operator narrows or replaces them (docs/security.md, "Upgrading").
UPDATE api_keys
   SET scope = 'service', all_orgs = true,
       name = 'ingest key of ' || org_id || ', for all orgs (made before keys had scopes)',
       org_id = NULL
 WHERE scope = 'ingest';

ALTER TABLE api_keys ADD CONSTRAINT api_keys_scope_check
    CHECK (scope IN ('read', 'billing', 'ingest', 'service'));
ALTER TABLE api_keys ADD CONSTRAINT api_keys_owner_check
    CHECK ((scope = 'service') = (org_id IS NULL));
ALTER TABLE api_keys ADD CONSTRAINT api_keys_all_orgs_check
    CHECK (NOT all_orgs OR scope = 'service');
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at);

-- The orgs a service key without all_orgs may send for.
CREATE TABLE api_key_orgs (
    key_id  text NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    org_id  text NOT NULL REFERENCES orgs (org_id),
    PRIMARY KEY (key_id, org_id)
);

-- What "a key that works" means, in one place: not revoked, not past a rotation's grace period.
CREATE VIEW live_api_keys AS
    SELECT * FROM api_keys
     WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now());

-- Sessions opened with a billing key may change the plan; those opened with a read key may not.
ALTER TABLE page_sessions DROP CONSTRAINT page_sessions_opened_by_check;
ALTER TABLE page_sessions ADD CONSTRAINT page_sessions_opened_by_check
    CHECK (opened_by IN ('portal', 'read_key', 'billing_key', 'admin_token'));
