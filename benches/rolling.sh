#!/usr/bin/env bash
# Benchmark: wall time of a rolling replace against a recreate of the same service, in the same
# run on the real Slurm test cluster. Not a test: it prints figures.
#
# Each side has its own owner and a service of REPLICAS (default 10) HTTP replicas with a
# health check. Both start with `apply --wait`; then an env change is applied with
# `apply --auto-approve --wait`, timed from the apply until every replica runs the new spec and
# is ready. `rolling` uses `update: {strategy: rolling, max_surge: MAX_SURGE (default 2),
# max_unavailable: 0, min_healthy_time: 5s}`; `recreate` uses `update: {strategy: recreate}`
# (every replica down until its successor is ready). The two run one after the other (not
# concurrently, so they do not compete for CPUs). Prints wall time, the ratio rolling/recreate
# and slurmctld RPCs (all message types, and job listings) from `sdiag` for each.
#
# On this machine a job's script starts ~60 s after it turns RUNNING: a rolling replace takes
# about REPLICAS / MAX_SURGE of those delays, a recreate about one.
#
# Usage: [STACKCTL_BIN=path] benches/rolling.sh [REPLICAS] [MAX_SURGE]   (needs the dev cluster up)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
replicas=${1:-10}
surge=${2:-2}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
sinfo -h >/dev/null || { echo "no Slurm cluster at SLURM_CONF=$SLURM_CONF" >&2; exit 1; }

work=$(mktemp -d)
owners=()
cleanup() {
  for o in "${owners[@]}"; do cancel_owner "$o"; done
  rm -rf "$work"
}
trap cleanup EXIT

# STACKCTL_BIN: a binary already built (wall time here is Slurm's, not stackctl's).
if [ -n "${STACKCTL_BIN:-}" ]; then
  bin=$STACKCTL_BIN
else
  cargo build --release --quiet
  bin=$PWD/target/release/stackctl
fi

make_repo() { # DIR OWNER UPDATE VERSION
  mkdir -p "$1/recipes/bench" "$1/stacks"
  printf 'owner: %s\nlog_dir: %s/logs\n' "$2" "$1" > "$1/stackctl.yaml"
  printf '%s\n' 'name: web' 'command: exec python3 -m http.server "$PORT"' \
    'resources: {cpu: 1, memory: 128M, time_limit: 60}' 'ports: [auto]' \
    'health:' '  http: {path: /}' '  interval: 1s' '  start_period: 300s' \
    > "$1/recipes/bench/web.yaml"
  printf 'services:\n  web:\n    recipe: bench/web\n    replicas: %s\n    environment: {V: "%s"}\n    update: %s\n' \
    "$replicas" "$4" "$3" > "$1/stacks/bench.yaml"
}

declare -A update=(
  [rolling]="{strategy: rolling, max_surge: $surge, max_unavailable: 0, min_healthy_time: 5s}"
  [recreate]="{strategy: recreate}"
)
declare -A result
for side in recreate rolling; do
  dir=$work/$side
  owner=bench-rolling-$side-$$
  owners+=("$owner")
  make_repo "$dir" "$owner" "${update[$side]}" 1
  echo "$side: starting $replicas replicas..." >&2
  "$bin" -C "$dir" apply --auto-approve --wait=20m >/dev/null
  make_repo "$dir" "$owner" "${update[$side]}" 2
  a0=$(rpcs .); l0=$(rpcs 'REQUEST_JOB_INFO |REQUEST_JOB_USER_INFO ')
  t0=$(date +%s%N)
  "$bin" -C "$dir" apply --auto-approve --wait=60m >/dev/null 2>"$work/$side.err" \
    || { echo "$side failed:" >&2; cat "$work/$side.err" >&2; exit 1; }
  t1=$(date +%s%N)
  a1=$(rpcs .); l1=$(rpcs 'REQUEST_JOB_INFO |REQUEST_JOB_USER_INFO ')
  result[$side]="$(( (t1 - t0) / 1000 )) $((a1 - a0 - 2)) $((l1 - l0))"
  cancel_owner "$owner"
done

read -r rt ra rl <<<"${result[recreate]}"
read -r nt na nl <<<"${result[rolling]}"
printf '\n%s replicas, env change applied with --wait (rolling max_surge %s)\n' "$replicas" "$surge"
printf '%-9s | %8s ms | %6s rpc | %5s list\n' recreate "$((rt / 1000))" "$ra" "$rl"
printf '%-9s | %8s ms | %6s rpc | %5s list\n' rolling "$((nt / 1000))" "$na" "$nl"
printf 'ratio rolling/recreate: %s\n' "$(awk -v a="$nt" -v b="$rt" 'BEGIN { printf "%.2f", a / b }')"
