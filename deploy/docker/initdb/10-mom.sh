#!/bin/sh
# PostgreSQL bootstrap for deploy/compose.yaml (run once by the postgres image on an empty volume):
# the same roles and schemas `mom up` makes (services/common/localstack.py, _bootstrap_database),
# with passwords from the environment. One LOGIN role per service owning its schema, mom_analyst,
# the shared kpi schema, and the registry's database.
set -eu
: "${MOM_DB_PASSWORD:?}" "${MOM_ANALYST_PASSWORD:?}" "${MOM_REGISTRY_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v db_password="$MOM_DB_PASSWORD" -v analyst_password="$MOM_ANALYST_PASSWORD" \
  -v registry_password="$MOM_REGISTRY_DB_PASSWORD" <<'SQL'
CREATE ROLE mom_execution LOGIN PASSWORD :'db_password';
CREATE ROLE mom_quality LOGIN PASSWORD :'db_password';
CREATE ROLE mom_maintenance LOGIN PASSWORD :'db_password';
CREATE ROLE mom_inventory LOGIN PASSWORD :'db_password';
CREATE ROLE mom_analyst LOGIN PASSWORD :'analyst_password';
CREATE ROLE mom_registry LOGIN PASSWORD :'registry_password';
CREATE DATABASE registry OWNER mom_registry;
\connect mom
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA execution AUTHORIZATION mom_execution;
CREATE SCHEMA quality AUTHORIZATION mom_quality;
CREATE SCHEMA maintenance AUTHORIZATION mom_maintenance;
CREATE SCHEMA inventory AUTHORIZATION mom_inventory;
ALTER ROLE mom_execution IN DATABASE mom SET search_path = execution;
ALTER ROLE mom_quality IN DATABASE mom SET search_path = quality;
ALTER ROLE mom_maintenance IN DATABASE mom SET search_path = maintenance;
ALTER ROLE mom_inventory IN DATABASE mom SET search_path = inventory;
GRANT USAGE ON SCHEMA execution, quality, maintenance, inventory TO mom_analyst;
CREATE SCHEMA kpi;
GRANT USAGE ON SCHEMA kpi TO mom_analyst;
GRANT USAGE, CREATE ON SCHEMA kpi TO mom_execution, mom_quality, mom_maintenance, mom_inventory;
SQL
