# Prometheus from Debian's packages, for Charliecloud or Podman (`container.build`); the same
# setup as prometheus.def, started by /entrypoint (ch-run runs it when the recipe has no command).
FROM debian-base
RUN apt-get update && apt-get install -y --no-install-recommends prometheus && rm -rf /var/lib/apt/lists/*
RUN printf '%s\n' '#!/bin/sh' \
    ': "${PROMETHEUS_PORT:=9090}" "${PROMETHEUS_SCRAPE_INTERVAL:=15s}" "${PROMETHEUS_RETENTION:=15d}"' \
    ': "${PROMETHEUS_DATA_DIR:=/tmp/prometheus-$(id -u)}"' \
    'mkdir -p "$PROMETHEUS_DATA_DIR/data"' \
    'config="${PROMETHEUS_CONFIG:-}"' \
    'if [ -z "$config" ]; then' \
    '    config="$PROMETHEUS_DATA_DIR/prometheus.yml"' \
    '    targets="'"'"'localhost:$PROMETHEUS_PORT'"'"'"' \
    '    for t in $(echo "${PROMETHEUS_SCRAPE_TARGETS:-}" | tr "," " "); do targets="$targets, '"'"'$t'"'"'"; done' \
    '    printf "%s\n" "global:" "  scrape_interval: $PROMETHEUS_SCRAPE_INTERVAL" "scrape_configs:" "  - job_name: stackctl" "    static_configs:" "      - targets: [$targets]" > "$config"' \
    'fi' \
    'exec /usr/bin/prometheus --config.file="$config" --storage.tsdb.path="$PROMETHEUS_DATA_DIR/data" --storage.tsdb.retention.time="$PROMETHEUS_RETENTION" --web.listen-address="0.0.0.0:$PROMETHEUS_PORT" "$@"' \
    > /entrypoint && chmod 755 /entrypoint
