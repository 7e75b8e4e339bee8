#!/usr/bin/env bash
# A no-change `plan` against the bare listing that gives one line per replica (not a test: it
# prints figures). Shapes: N live replicas of one service for N in SIZES (default 10 100 1000
# 10000), then SERVICES services of one replica each (default 1000; 0 skips it). For each
# shape the repo is applied once, then RUNS interleaved rounds time the baseline listing (the
# one of benches/cluster.sh) and `stackctl plan`; with BASE=/path/to/another/stackctl that
# binary's plan is timed in the same rounds (e.g. a release build of main), for a before/after.
# Prints median wall times and each plan's ratio to the listing.
#
# Usage: benches/plan.sh [RUNS]   (RUNS defaults to 9; needs `scripts/slurm-dev-cluster up`;
#        BIN defaults to target/release/stackctl, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-9}
sizes=${SIZES:-10 100 1000 10000}
services=${SERVICES:-1000}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
sinfo -h >/dev/null || { echo "no Slurm cluster at SLURM_CONF=$SLURM_CONF; run scripts/slurm-dev-cluster up" >&2; exit 1; }
bin=${BIN:-$PWD/target/release/stackctl}
[ -x "$bin" ] || cargo build --release --quiet
base=${BASE:-}

work=$(mktemp -d)
owner="planbench-$$-$(date +%s)"
trap 'cancel_owner "$owner"; rm -rf "$work"' EXIT
repo=$work/repo
mkdir -p "$repo/recipes/bench" "$repo/stacks"
printf 'owner: %s\nlog_dir: %s/logs\n' "$owner" "$repo" > "$repo/stackctl.yaml"
printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' \
  > "$repo/recipes/bench/sleeper.yaml"

listing=(squeue --me --noheader --array --states=all
  --Format 'ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,Comment:|')

# Runs a command once; prints its wall time in microseconds.
us_once() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1 || true
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}
median_ms() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {printf "%.1f", v[int((NR + 1) / 2)] / 1000}'; }

# Applies the repo as it is, checks the live count and that the plan is clean, then times.
measure() { # LABEL EXPECTED_LIVE
  # A busy controller can time out a pre-check: apply converges, so try again.
  for try in 1 2 3; do
    "$bin" apply -C "$repo" --auto-approve >/dev/null && break
    [ "$try" -lt 3 ] || exit 1
    sleep 5
  done
  local live
  live=$(squeue --me -h -r -t all -o '%k|%T' | grep -c ";owner=$owner;.*|\(PENDING\|RUNNING\)" || true)
  [ "$live" -eq "$2" ] || { echo "expected $2 live owned jobs, squeue shows $live" >&2; exit 1; }
  "$bin" plan -C "$repo" --detailed-exitcode >/dev/null || { echo "plan not clean: $1" >&2; exit 1; }
  sleep 5 # let slurmctld finish starting the new jobs
  local sq="" this="" old=""
  for _ in $(seq "$runs"); do
    sq+="$(us_once "${listing[@]}") "
    [ -n "$base" ] && old+="$(us_once "$base" plan -C "$repo") "
    this+="$(us_once "$bin" plan -C "$repo") "
  done
  local s t b=""
  s=$(median_ms <<<"$sq")
  t=$(median_ms <<<"$this")
  [ -n "$base" ] && b=$(median_ms <<<"$old")
  ratio() { awk -v a="$1" -v b="$s" 'BEGIN { printf "%.2f", a / b }'; }
  if [ -n "$base" ]; then
    printf '%-22s | %9s | %9s %6s | %9s %6s\n' "$1" "$s" "$b" "$(ratio "$b")" "$t" "$(ratio "$t")"
  else
    printf '%-22s | %9s | %9s %6s\n' "$1" "$s" "$t" "$(ratio "$t")"
  fi
}

printf '\nNo-change plan vs the bare listing (median of %s interleaved runs, ms; load %s)\n' \
  "$runs" "$(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$base" ]; then
  printf '%-22s | %9s | %9s %6s | %9s %6s\n' shape squeue base ratio this ratio
else
  printf '%-22s | %9s | %9s %6s\n' shape squeue plan ratio
fi
for n in $sizes; do
  printf 'services:\n  svc:\n    recipe: bench/sleeper\n    replicas: %s\n' "$n" > "$repo/stacks/bench.yaml"
  measure "$n replicas x 1" "$n"
done
if [ "$services" -gt 0 ]; then
  # Cancelled jobs stay listed for MinJobAge (120 s): wait until they are gone, so the listing
  # holds one line per replica of this shape.
  cancel_owner "$owner"
  for _ in $(seq 60); do
    [ -z "$(owned_arrays "$owner")" ] && break
    sleep 5
  done
  {
    printf 'services:\n'
    for i in $(seq "$services"); do printf '  s%s:\n    recipe: bench/sleeper\n' "$i"; done
  } > "$repo/stacks/bench.yaml"
  measure "$services services x 1" "$services"
fi
