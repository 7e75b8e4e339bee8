#!/usr/bin/env bash
# Benchmark the three ways stackctl reaches Slurm against the real test cluster (not a test: it
# prints figures): the local CLI, the CLI over SSH and slurmrestd.
#
# For 10, 1,000 and 10,000 live owned jobs (sizes from SIZES), each backend plans the same
# repo; the baseline is a bare `squeue --me` listing by the same user, measured in the same
# run. Printed per size and backend: median plan wall time of RUNS interleaved runs, the ratio
# to the baseline, the slurmctld RPCs of one plan (sdiag's per-user count, so other users'
# traffic does not count) and, for REST, slurmrestd's peak resident memory during a plan.
#
# Every job belongs to the SSH test user (`stackctl-ssh`, see scripts/slurm-dev-cluster), so all
# three list the same jobs: the local CLI runs as that user (runuser), SSH logs in as it, REST
# acts as it with a token minted for it.
#
# Usage: benches/backends.sh [RUNS]   (RUNS defaults to 5; SIZES="10 1000 10000")
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
sizes=${SIZES:-10 1000 10000}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
source benches/lib.sh
user=stackctl-ssh
ssh_dir=/etc/stackctl-dev-slurm/ssh
rest_url=http://127.0.0.1:16820
id "$user" >/dev/null || { echo "no user $user: run scripts/slurm-dev-cluster up" >&2; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/stackctl

work=$(mktemp -d /tmp/stackctl-bench-backends.XXXXXX)
chmod 0755 "$work"
owner="bench-backends-$$-$(date +%s)"
cleanup() { cancel_owner "$owner"; rm -rf "$work"; }
trap cleanup EXIT

# One repo per backend, all with the same owner, stacks and recipes.
for backend in cli ssh rest; do
  repo=$work/$backend
  mkdir -p "$repo/recipes/bench" "$repo/stacks"
  printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' \
    > "$repo/recipes/bench/sleeper.yaml"
done
logs=/var/lib/stackctl-dev-slurm/ssh-home/bench-logs
install -d -o "$user" "$logs"
printf 'owner: %s\nlog_dir: %s\n' "$owner" "$logs" > "$work/cli/stackctl.yaml"
printf 'owner: %s\nlog_dir: %s\ncluster:\n  ssh:\n    host: 127.0.0.1\n    port: 16922\n    user: %s\n    identity_file: %s/client_ed25519\n    known_hosts_file: %s/known_hosts\n    env: {SLURM_CONF: %s}\n' \
  "$owner" "$logs" "$user" "$ssh_dir" "$ssh_dir" "$SLURM_CONF" > "$work/ssh/stackctl.yaml"
printf 'owner: %s\nlog_dir: %s\ncluster:\n  backend: rest\n  url: %s\n  user: %s\n' \
  "$owner" "$logs" "$rest_url" "$user" > "$work/rest/stackctl.yaml"
set_replicas() {
  for backend in cli ssh rest; do
    printf 'services:\n  svc:\n    recipe: bench/sleeper\n    replicas: %s\n' "$1" > "$work/$backend/stacks/bench.yaml"
  done
}

jwt=$(scontrol token username="$user" lifespan=7200 | cut -d= -f2)
as_user() { runuser -u "$user" -- env SLURM_CONF="$SLURM_CONF" HOME=/var/lib/stackctl-dev-slurm/ssh-home "$@"; }
plan_cli() { as_user "$bin" plan -C "$work/cli"; }
plan_ssh() { "$bin" plan -C "$work/ssh"; }
plan_rest() { SLURM_JWT=$jwt "$bin" plan -C "$work/rest"; }
baseline() { as_user squeue --me --noheader --array --states=all --Format 'ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,StartTime:|,EndTime:|,exit_code:|,Comment:|'; }

# Seconds of one run.
seconds() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1
  t1=$(date +%s%N)
  echo "($t1 - $t0) / 1000000000" | bc -l
}
median() { sort -g | awk '{t[NR] = $1} END {printf "%.4f", t[int((NR + 1) / 2)]}'; }
# slurmctld RPCs by the user around one run (the two sdiag reads are root's, not counted).
rpcs_of() {
  local before after
  before=$(user_rpcs "$user")
  "$@" >/dev/null 2>&1
  after=$(user_rpcs "$user")
  echo $((after - before))
}
# slurmrestd's peak RSS (MiB) while one run lasts, sampled every 20 ms.
rest_peak_mib() {
  local pid peak=0 rss
  pid=$(pgrep -f 'slurmrestd .*16820' | head -1)
  "$@" >/dev/null 2>&1 &
  local run=$!
  while kill -0 "$run" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    ((rss > peak)) && peak=$rss
    sleep 0.02
  done
  wait "$run" || true
  echo "scale=1; $peak / 1024" | bc
}

printf 'Plan wall time by backend; baseline: bare squeue --me by the same user (%s interleaved runs, median)\n' "$runs"
printf '%7s | %-8s %9s %7s %6s %12s\n' N backend median_s ratio rpcs restd_MiB
for n in $sizes; do
  set_replicas "$n"
  plan_ssh >/dev/null 2>&1 || true
  "$bin" apply -C "$work/ssh" --auto-approve >/dev/null
  live=$(squeue -u "$user" -h -r -t all -o '%k|%T' | grep -c ";owner=$owner;.*|\(PENDING\|RUNNING\)" || true)
  [ "$live" -eq "$n" ] || { echo "expected $n live owned jobs, squeue shows $live" >&2; exit 1; }
  sleep 5
  : > "$work/base.t"; : > "$work/cli.t"; : > "$work/ssh.t"; : > "$work/rest.t"
  for _ in $(seq "$runs"); do
    seconds baseline >> "$work/base.t"
    seconds plan_cli >> "$work/cli.t"
    seconds plan_ssh >> "$work/ssh.t"
    seconds plan_rest >> "$work/rest.t"
  done
  base=$(median < "$work/base.t")
  printf '%7s | %-8s %9s %7s %6s %12s\n' "$n" squeue "$base" 1.00 "$(rpcs_of baseline)" -
  for backend in cli ssh rest; do
    t=$(median < "$work/$backend.t")
    ratio=$(awk -v a="$t" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
    peak=-
    [ "$backend" = rest ] && peak=$(rest_peak_mib plan_rest)
    printf '%7s | %-8s %9s %7s %6s %12s\n' "$n" "$backend" "$t" "$ratio" "$(rpcs_of "plan_$backend")" "$peak"
  done
done
