-- Tally's PostgreSQL roles and the wall between orgs.
--
-- The role that runs the migrations owns the schema (`tally_owner` in `make up`, docker-compose
-- and the tests; `tally-migrate` runs as it). Each service connects as a role of its own, which
-- may touch only the tables the service needs and cannot change the schema:
--   tally_ingest     reads orgs and keys, records when a key was last used
--   tally_projector  writes the usage read models and the offsets they came from
--   tally_reporter   reads usage and invoices, keeps the Stripe meter ledger
--   tally_api        everything the api serves, under row-level security: a transaction sees
--                    the rows of the org it set (`tally.org_id`), or every org's when it set
--                    `tally.all_orgs` (admin-token requests, Stripe webhooks, authentication by a
--                    key's hash); a query that forgets its org filter still sees one org only.
-- The roles are made here when missing (that needs CREATEROLE) or beforehand by an operator
-- (deploy/postgres/roles.sql). None of them may be a superuser or bypass row-level security.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['tally_ingest', 'tally_projector', 'tally_api', 'tally_reporter'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE', r);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'PostgreSQL role % is missing and % may not create roles: run deploy/postgres/roles.sql as a superuser, then migrate again', r, current_user;
            END;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r AND (rolsuper OR rolbypassrls)) THEN
            RAISE EXCEPTION 'PostgreSQL role % is a superuser or bypasses row-level security: ALTER ROLE % NOSUPERUSER NOBYPASSRLS', r, r;
        END IF;
    END LOOP;
END
$$;

-- The migrations' own table: every service checks on start that the schema is the one it needs.
GRANT SELECT ON _sqlx_migrations TO tally_ingest, tally_projector, tally_api, tally_reporter;

-- Whether a row of `org` is visible to the api's transaction.
CREATE FUNCTION tally_org_visible(org text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT org = current_setting('tally.org_id', true)
              OR current_setting('tally.all_orgs', true) = 'on' $$;

-- Row-level security and grants of one table keyed by `org_id`. `readers` and `writers` are the
-- service roles that see every org's rows (the stages work across orgs); the api goes through
-- the wall with `api_rights`. `replay rebuild` calls this for the tables it swaps in.
CREATE FUNCTION tally_secure(tbl regclass, api_rights text, readers text[], writers text[])
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS tally_api_one_org ON %s', tbl);
    EXECUTE format('DROP POLICY IF EXISTS tally_stages ON %s', tbl);
    IF api_rights IS NOT NULL THEN
        EXECUTE format('GRANT %s ON %s TO tally_api', api_rights, tbl);
        EXECUTE format('CREATE POLICY tally_api_one_org ON %s TO tally_api
                            USING (tally_org_visible(org_id)) WITH CHECK (tally_org_visible(org_id))', tbl);
    END IF;
    FOREACH r IN ARRAY readers LOOP
        EXECUTE format('GRANT SELECT ON %s TO %I', tbl, r);
    END LOOP;
    FOREACH r IN ARRAY writers LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', tbl, r);
    END LOOP;
    IF cardinality(readers) + cardinality(writers) > 0 THEN
        EXECUTE format('CREATE POLICY tally_stages ON %s TO %s USING (true) WITH CHECK (true)',
                       tbl, (SELECT string_agg(quote_ident(x), ', ') FROM unnest(readers || writers) x));
    END IF;
END
$$;

-- The read models, written by the projector (and by `replay rebuild`, as the owner, which
-- builds them in a schema of its own and calls this for it before swapping them in).
CREATE FUNCTION tally_secure_read_models(schema text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    none text[] := ARRAY[]::text[];
BEGIN
    PERFORM tally_secure(format('%I.usage_periods', schema)::regclass, 'SELECT', ARRAY['tally_reporter'], ARRAY['tally_projector']);
    PERFORM tally_secure(format('%I.usage_by_operation', schema)::regclass, 'SELECT', none, ARRAY['tally_projector']);
    PERFORM tally_secure(format('%I.usage_daily', schema)::regclass, 'SELECT', none, ARRAY['tally_projector']);
    PERFORM tally_secure(format('%I.late_events', schema)::regclass, 'SELECT', none, ARRAY['tally_projector']);
    PERFORM tally_secure(format('%I.invoices', schema)::regclass, 'SELECT', ARRAY['tally_reporter'], ARRAY['tally_projector']);
    PERFORM tally_secure(format('%I.invoice_corrections', schema)::regclass, 'SELECT', ARRAY['tally_reporter'], ARRAY['tally_projector']);
    -- Not keyed by org: where the projector is in the log (the api shows it in /v1/pipeline).
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.projector_offsets TO tally_projector', schema);
    EXECUTE format('GRANT SELECT ON %I.projector_offsets TO tally_api', schema);
END
$$;
SELECT tally_secure_read_models('public');

-- Orgs and keys: the api manages them, ingest loads them.
SELECT tally_secure('orgs', 'SELECT, INSERT, UPDATE', ARRAY['tally_ingest', 'tally_reporter'], ARRAY[]::text[]);
SELECT tally_secure('api_keys', 'SELECT, INSERT, UPDATE', ARRAY['tally_ingest'], ARRAY[]::text[]);
GRANT UPDATE (last_used_at) ON api_keys TO tally_ingest;
SELECT tally_secure('api_key_orgs', 'SELECT, INSERT, DELETE', ARRAY['tally_ingest'], ARRAY[]::text[]);
-- A view reads with its owner's rights unless told otherwise; this one reads with the caller's,
-- so that the api's wall holds through it.
ALTER VIEW live_api_keys SET (security_invoker = true);
GRANT SELECT ON live_api_keys TO tally_api, tally_ingest;

-- The page's sessions and links, and Checkout.
SELECT tally_secure('page_sessions', 'SELECT, INSERT, DELETE', ARRAY[]::text[], ARRAY[]::text[]);
SELECT tally_secure('portal_links', 'SELECT, INSERT, UPDATE, DELETE', ARRAY[]::text[], ARRAY[]::text[]);
SELECT tally_secure('checkout_sessions', 'SELECT, INSERT, UPDATE', ARRAY[]::text[], ARRAY[]::text[]);

-- Stripe: the api keeps customers, invoices and webhook events; the reporter its meter ledger.
SELECT tally_secure('stripe_customers', 'SELECT, INSERT, UPDATE', ARRAY['tally_reporter'], ARRAY[]::text[]);
SELECT tally_secure('stripe_invoices', 'SELECT, INSERT, UPDATE', ARRAY[]::text[], ARRAY[]::text[]);
SELECT tally_secure('stripe_meter_ledger', 'SELECT', ARRAY[]::text[], ARRAY['tally_reporter']);
SELECT tally_secure('stripe_report_failures', NULL, ARRAY[]::text[], ARRAY['tally_reporter']);
GRANT USAGE ON SEQUENCE stripe_report_failures_id_seq TO tally_reporter;
-- Webhook events name no org until they are processed; only the api touches them.
GRANT SELECT, INSERT, UPDATE ON stripe_webhook_events TO tally_api;
