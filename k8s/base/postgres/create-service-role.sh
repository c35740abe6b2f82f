#!/bin/sh
# Runs once, when a service's PostgreSQL volume is first initialised (the image runs every
# script in /docker-entrypoint-initdb.d): the service's own role, not a superuser, owning its
# own database and nothing else. The service connects as that role; the superuser's password
# is only for operators.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=service_user="$SERVICE_USER" \
  --set=service_password="$SERVICE_PASSWORD" \
  --set=service_database="$SERVICE_DATABASE" <<'SQL'
CREATE ROLE :"service_user" LOGIN PASSWORD :'service_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE :"service_database" OWNER :"service_user";
REVOKE ALL ON DATABASE :"service_database" FROM PUBLIC;
SQL
