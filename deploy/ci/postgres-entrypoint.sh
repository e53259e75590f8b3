#!/bin/sh
# Like the official image's entrypoint, in small: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB.
# The server is the one major installed (PG_MAJOR, set by postgres.Dockerfile, names it).
set -eu
if [ -n "${PG_MAJOR:-}" ]; then
  bin="/usr/lib/postgresql/$PG_MAJOR/bin"
else
  set -- /usr/lib/postgresql/*/bin/postgres
  [ "$#" -eq 1 ] || { echo "postgres-entrypoint: expected one PostgreSQL server, found: $*" >&2; exit 1; }
  bin="${1%/postgres}"
fi
[ -x "$bin/postgres" ] || { echo "postgres-entrypoint: no server in $bin" >&2; exit 1; }
data=/var/lib/postgresql/data
mkdir -p "$data" && chown postgres:postgres "$data" && chmod 700 "$data"
if [ ! -s "$data/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile && chown postgres /tmp/pwfile
  runuser -u postgres -- "$bin/initdb" -D "$data" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f /tmp/pwfile
  echo "CREATE DATABASE \"$POSTGRES_DB\";" | runuser -u postgres -- "$bin/postgres" --single -D "$data" postgres >/dev/null
fi
exec runuser -u postgres -- "$bin/postgres" -D "$data" -c listen_addresses=127.0.0.1 -c "port=${PGPORT:-5432}" \
  -c unix_socket_directories=/tmp
