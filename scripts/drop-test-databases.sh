#!/usr/bin/env bash
# Drops the throw-away databases (bmtest_*) that the persistence suites create on the local
# PostgreSQL and MariaDB, so repeated `make test-db` runs do not pile them up.
set -euo pipefail

pg_url="${BOOKMESH_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if command -v psql >/dev/null; then
  psql "$pg_url" -Atqc "select datname from pg_database where datname like 'bmtest\_%'" |
    while read -r name; do
      psql "$pg_url" -qc "drop database if exists \"$name\" with (force)"
    done
fi

if command -v mariadb >/dev/null; then
  mariadb -h 127.0.0.1 -u root -N -e "show databases like 'bmtest\\_%'" |
    while read -r name; do
      mariadb -h 127.0.0.1 -u root -e "drop database if exists \`$name\`"
    done
fi
