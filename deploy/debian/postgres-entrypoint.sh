#!/bin/sh
# First start: initdb with POSTGRES_USER / POSTGRES_PASSWORD, password logins over TCP, then
# POSTGRES_DB. Every start: run the command as the postgres user (PostgreSQL refuses root).
set -eu
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ "${1:-}" = postgres ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
        user=${POSTGRES_USER:-postgres}
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
        chown postgres "$pwfile"
        as_postgres initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 > /dev/null
        rm -f "$pwfile"
        echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
        echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
        if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
            echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$user\";" \
                | as_postgres postgres --single -D "$PGDATA" postgres > /dev/null
        fi
        echo "postgres-entrypoint: initialised $PGDATA (user $user, database ${POSTGRES_DB:-postgres})"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
fi
exec "$@"
