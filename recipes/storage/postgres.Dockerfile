# PostgreSQL from Debian's packages, for Charliecloud or Podman (`container.build`); the same
# server setup as postgres.def, started by /entrypoint (ch-run runs it when the recipe has no
# command). initdb and postgres refuse to run as root, and jobs often run as root: the
# entrypoint then runs the server as the image's `postgres` user - with `setpriv` where root is
# real (Podman as root), else (ch-run as root: a user namespace that maps root only) in a
# nested user namespace mapping `postgres` to the caller, after adding `postgres` to the
# container's own /etc/passwd and /etc/group (ch-run writes a private copy of each).
FROM debian-base
RUN apt-get update && apt-get install -y --no-install-recommends postgresql && rm -rf /var/lib/apt/lists/*
RUN ln -s /usr/lib/postgresql/*/bin/* /usr/local/bin/ \
    && grep '^postgres:' /etc/passwd > /etc/stackctl-postgres.passwd \
    && grep '^postgres:' /etc/group > /etc/stackctl-postgres.group
RUN printf '%s\n' '#!/bin/sh' \
    'set -e' \
    'export PATH="/usr/local/bin:/usr/bin:/bin:${PATH:-}"' \
    'if [ "$(id -u)" = 0 ]; then' \
    '    uid=$(cut -d: -f3 /etc/stackctl-postgres.passwd); gid=$(cut -d: -f4 /etc/stackctl-postgres.passwd)' \
    '    if setpriv --reuid="$uid" --regid="$gid" --clear-groups true 2>/dev/null; then' \
    '        exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "$0" "$@"' \
    '    fi' \
    '    grep -q "^postgres:" /etc/passwd || cat /etc/stackctl-postgres.passwd >> /etc/passwd' \
    '    grep -q "^postgres:" /etc/group || cat /etc/stackctl-postgres.group >> /etc/group' \
    '    exec unshare --user --map-user="$uid" --map-group="$gid" "$0" "$@"' \
    'fi' \
    ': "${POSTGRES_USER:=postgres}" "${POSTGRES_PORT:=5432}"' \
    ': "${POSTGRES_DB:=$POSTGRES_USER}"' \
    'case "${PGDATA:-}" in ""|/var/lib/postgresql/data) PGDATA="/tmp/postgres-$(id -u)/data" ;; esac' \
    'export PGDATA' \
    'if [ ! -s "$PGDATA/PG_VERSION" ]; then' \
    '    if [ -z "${POSTGRES_PASSWORD:-}" ]; then echo "postgres: set POSTGRES_PASSWORD" >&2; exit 1; fi' \
    '    mkdir -p "$PGDATA"' \
    '    chmod 700 "$PGDATA"' \
    '    pwfile="$(mktemp)"' \
    '    printf "%s\n" "$POSTGRES_PASSWORD" > "$pwfile"' \
    '    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256' \
    '    rm -f "$pwfile"' \
    '    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"' \
    '    if [ "$POSTGRES_DB" != postgres ]; then' \
    '        printf "CREATE DATABASE \"%s\";\n" "$POSTGRES_DB" | postgres --single -D "$PGDATA" postgres > /dev/null' \
    '    fi' \
    'fi' \
    'exec postgres -D "$PGDATA" -c listen_addresses="*" -p "$POSTGRES_PORT" -c unix_socket_directories=/tmp "$@"' \
    > /entrypoint && chmod 755 /entrypoint
