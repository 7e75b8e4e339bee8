#!/usr/bin/env bash
# Benchmark one-shot jobs against the real Slurm test cluster (not a test: it prints figures).
#
# The same 100 services (one replica each, a fixed port, no health check: ready once running),
# first alone, then each with one `kind: job` aimed at it, under two owners, in one run:
#   - apply from nothing (wall time, slurmctld RPCs from sdiag), then a second apply (for the
#     jobs repo it submits the jobs whose target runs by then);
#   - plan against the live jobs: median wall time of RUNS interleaved runs and the RPCs of one
#     plan; for the jobs repo also with `cluster.accounting: off` (no sacct), which isolates
#     the one sacct call a pass makes (sacct asks slurmdbd, which sdiag does not count).
# The cluster has 48 CPUs, so about 48 of the 100 services run and the rest pend; the jobs of
# pending targets are held, those of running ones wait for CPUs: the plan weighs 100 job
# lines, their records directories and one sacct either way. Ratios are jobs / services-only.
#
# Usage: [STACKCTL_BIN=…] benches/jobs.sh [RUNS]   (needs `scripts/slurm-dev-cluster up`; RUNS
# defaults to 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
sinfo -h >/dev/null || { echo "no Slurm cluster at SLURM_CONF=$SLURM_CONF; run scripts/slurm-dev-cluster up" >&2; exit 1; }
. benches/lib.sh
# STACKCTL_BIN runs a binary built already (say which in the figures); else a release build.
if [ -n "${STACKCTL_BIN:-}" ]; then
  bin=$STACKCTL_BIN
else
  cargo build --release --quiet
  bin=$PWD/target/release/stackctl
fi
n=100

work=$(mktemp -d)
base="bench-svc-$$-$(date +%s)"
jobs="bench-jobs-$$-$(date +%s)"
cleanup() {
  cancel_owner "$base"
  cancel_owner "$jobs"
  rm -rf "$work"
}
trap cleanup EXIT

make_repo() { # DIR OWNER WITH_JOBS
  mkdir -p "$1/recipes/bench" "$1/stacks"
  printf 'owner: %s\nlog_dir: %s/logs\n' "$2" "$1" >"$1/stackctl.yaml"
  printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\nports: [7000]\n' \
    >"$1/recipes/bench/sleeper.yaml"
  cat >"$1/recipes/bench/probe.yaml" <<'EOF'
name: probe
command: |
  echo '{"ok": 1}' > "$STACKCTL_RESULTS_DIR/results.json"
resources: {cpu: 1, memory: 16M, time_limit: 5}
EOF
  {
    echo "services:"
    for i in $(seq "$n"); do
      printf '  svc%s:\n    recipe: bench/sleeper\n' "$i"
      if [ "$3" = 1 ]; then printf '  job%s:\n    kind: job\n    recipe: bench/probe\n    target: svc%s\n' "$i" "$i"; fi
    done
  } >"$1/stacks/bench.yaml"
}

# "seconds all_rpcs" of one run of a command (the two sdiag calls between the readings are
# REQUEST_STATS_INFO, not the command's).
measure() {
  local a0 a1 t0 t1
  a0=$(rpcs .); t0=$(date +%s%N)
  "$@" >"$work/out" 2>&1 || { echo "failed: $*" >&2; cat "$work/out" >&2; exit 1; }
  t1=$(date +%s%N); a1=$(rpcs .)
  echo "$(echo "($t1 - $t0) / 1000000000" | bc -l) $((a1 - a0 - 2))"
}

# Median seconds of RUNS runs of a command.
median() {
  local t0 t1 i
  : >"$work/times"
  for i in $(seq "$runs"); do
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s%N)
    echo "($t1 - $t0) / 1000000000" | bc -l >>"$work/times"
  done
  sort -g "$work/times" | awk '{t[NR] = $1} END {printf "%.4f\n", t[int((NR + 1) / 2)]}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

declare -A R
for kind in svc jobs; do
  dir=$work/$kind
  if [ $kind = svc ]; then owner=$base; with=0; else owner=$jobs; with=1; fi
  make_repo "$dir" "$owner" "$with"
  read -r R[$kind.apply1_s] R[$kind.apply1_rpc] < <(measure "$bin" apply -C "$dir" --auto-approve)
  sleep 5 # let the services start, so targets are ready
  read -r R[$kind.apply2_s] R[$kind.apply2_rpc] < <(measure "$bin" apply -C "$dir" --auto-approve)
  sleep 5
  R[$kind.plan_s]=$(median "$bin" plan -C "$dir")
  read -r _ R[$kind.plan_rpc] < <(measure "$bin" plan -C "$dir")
  R[$kind.live]=$(squeue --me -h -r -o '%k' | grep -c ";owner=$owner;" || true)
  if [ $kind = jobs ]; then
    R[jobs.submitted]=$(squeue --me -h -r -o '%k' | grep -c ";owner=$owner;stack=bench;svc=job" || true)
    printf 'cluster:\n  accounting: off\n' >>"$dir/stackctl.yaml"
    R[jobs.noacct_plan_s]=$(median "$bin" plan -C "$dir")
    read -r _ R[jobs.noacct_plan_rpc] < <(measure "$bin" plan -C "$dir")
  fi
  cancel_owner "$owner"
  sleep 3
done

acct=$(sacct -n -X -S now >/dev/null 2>&1 && echo on || echo off)
printf '\n%s services, one job aimed at each (jobs repo) vs the services alone; accounting %s; %s runs\n' "$n" "$acct" "$runs"
printf '  live owned jobs after two applies: services-only %s, with jobs %s (%s of them job runs)\n' \
  "${R[svc.live]}" "${R[jobs.live]}" "${R[jobs.submitted]}"
printf '%-34s | %10s %8s | %10s %8s | %6s %6s\n' step svc_s svc_rpc jobs_s jobs_rpc t_x rpc_x
for step in apply1 apply2 plan; do
  case $step in apply1) label="apply from nothing" ;; apply2) label="second apply" ;; plan) label="plan (median of $runs; RPCs of one)" ;; esac
  printf '%-34s | %10.4f %8s | %10.4f %8s | %6s %6s\n' "$label" "${R[svc.${step}_s]}" "${R[svc.${step}_rpc]}" \
    "${R[jobs.${step}_s]}" "${R[jobs.${step}_rpc]}" "$(ratio "${R[jobs.${step}_s]}" "${R[svc.${step}_s]}")" \
    "$(ratio "${R[jobs.${step}_rpc]}" "${R[svc.${step}_rpc]}")"
done
printf '%-34s | %10s %8s | %10.4f %8s | %6s %6s\n' "plan, jobs repo, accounting: off" - - "${R[jobs.noacct_plan_s]}" \
  "${R[jobs.noacct_plan_rpc]}" "$(ratio "${R[jobs.noacct_plan_s]}" "${R[svc.plan_s]}")" \
  "$(ratio "${R[jobs.noacct_plan_rpc]}" "${R[svc.plan_rpc]}")"
