-- Tally's PostgreSQL roles, made by a superuser once per cluster (roles belong to the cluster,
-- not to a database): `scripts/postgres.sh` runs this for `make up` and the tests, and
-- docker-compose mounts it into the PostgreSQL container's /docker-entrypoint-initdb.d.
--
--   tally_owner      owns Tally's database and schema; `tally-migrate` and `replay` run as it
--   tally_ingest     ingest
--   tally_projector  the projector
--   tally_api        the api (under row-level security)
--   tally_reporter   the billing reporter
--
-- They are made without passwords: the local cluster trusts them on loopback only. In
-- production give each a password (ALTER ROLE tally_api PASSWORD '...') or certificate, hand
-- each service the URL of its own role, and keep tally_owner's for migrations. Rerunning this
-- file changes nothing that exists. See docs/security.md.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['tally_owner', 'tally_ingest', 'tally_projector', 'tally_api', 'tally_reporter'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE', r);
        END IF;
    END LOOP;
END
$$;
