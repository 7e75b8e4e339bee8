# Redis from Debian's packages, for Charliecloud or Podman (`container.build`); the same
# server as redis.def, started by /entrypoint (ch-run runs it when the recipe has no command).
FROM debian-base
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools && rm -rf /var/lib/apt/lists/*
RUN printf '%s\n' '#!/bin/sh' \
    ': "${REDIS_PORT:=6379}" "${REDIS_APPENDONLY:=yes}" "${REDIS_DATA_DIR:=/tmp/redis-$(id -u)}"' \
    'mkdir -p "$REDIS_DATA_DIR"' \
    'if [ -n "${REDIS_PASSWORD:-}" ]; then set -- --requirepass "$REDIS_PASSWORD" "$@"; fi' \
    'exec redis-server --bind 0.0.0.0 --protected-mode no --port "$REDIS_PORT" --dir "$REDIS_DATA_DIR" --appendonly "$REDIS_APPENDONLY" "$@"' \
    > /entrypoint && chmod 755 /entrypoint
