-- Tally's database, owned by the role that migrates it (docker-compose runs this after
-- roles.sql on PostgreSQL's first start; scripts/postgres.sh createdb does the same locally).
CREATE DATABASE tally OWNER tally_owner;
