#!/usr/bin/env bash
# Benchmark stackctl against the real Slurm test cluster (not a test: it prints figures).
#
# For 10, 100, 1,000 and 10,000 live owned jobs: plan wall time and peak memory, and the
# job-listing RPCs slurmctld received per plan (from sdiag), next to a bare `squeue` listing
# measured in the same run. Then the wall time of an apply that submits 100 replicas against
# a shell loop of 100 `sbatch` calls.
#
# Usage: benches/cluster.sh [RUNS]   (needs `scripts/slurm-dev-cluster up`; RUNS defaults to 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
sinfo -h >/dev/null || { echo "no Slurm cluster at SLURM_CONF=$SLURM_CONF; run scripts/slurm-dev-cluster up" >&2; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/stackctl

work=$(mktemp -d)
owner="bench-$$-$(date +%s)"
owned_arrays() { # this run's own array job ids, for cleanup by id (never by user or name)
  squeue --me -h -r -t all -o '%F|%k' | awk -F'|' -v tag=";owner=$1;" 'index($2, tag) {print $1}' | sort -u
}
cleanup() {
  for o in "$owner" "$owner-apply"; do
    ids=$(owned_arrays "$o" | tr '\n' ' ')
    [ -n "$ids" ] && scancel $ids 2>/dev/null || true
  done
  [ -n "${loop_ids:-}" ] && scancel $loop_ids 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

make_repo() { # DIR OWNER
  mkdir -p "$1/recipes/bench" "$1/stacks"
  printf 'owner: %s\nlog_dir: %s/logs\n' "$2" "$1" > "$1/stackctl.yaml"
  printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' \
    > "$1/recipes/bench/sleeper.yaml"
}
set_replicas() { # DIR N
  printf 'services:\n  svc:\n    recipe: bench/sleeper\n    replicas: %s\n' "$2" > "$1/stacks/bench.yaml"
}

# Sum of the job-listing RPCs slurmctld has counted so far.
listing_rpcs() {
  sdiag | awk '/REQUEST_JOB_INFO |REQUEST_JOB_USER_INFO |REQUEST_JOB_INFO_SINGLE / {
    for (i = 1; i <= NF; i++) if ($i ~ /^count:/) { sub("count:", "", $i); n += $i } } END { print n + 0 }'
}
all_rpcs() {
  sdiag | awk '/statistics by message type/ {on=1; next} /statistics by user/ {on=0}
    on { for (i = 1; i <= NF; i++) if ($i ~ /^count:/) { sub("count:", "", $i); n += $i } } END { print n + 0 }'
}

# Times one run of a command; appends "seconds peak_kib" to the file named by $1.
time_once() {
  local into=$1 t0 t1
  shift
  t0=$(date +%s%N)
  /usr/bin/time -o "$work/time" -f '%M' "$@" >/dev/null 2>&1
  t1=$(date +%s%N)
  echo "$(echo "($t1 - $t0) / 1000000000" | bc -l) $(tail -1 "$work/time")" >> "$into"
}

# Prints "median_seconds peak_mib" of the runs recorded in a file.
summarize() {
  sort -g "$1" | awk '{t[NR] = $1; if ($2 > m) m = $2} END {printf "%.4f %.1f\n", t[int((NR + 1) / 2)], m / 1024}'
}

# Listing RPCs one run of a command costs, measured around a single run.
rpcs_of() {
  local l0 a0 l1 a1
  l0=$(listing_rpcs); a0=$(all_rpcs)
  "$@" >/dev/null 2>&1
  l1=$(listing_rpcs); a1=$(all_rpcs)
  # the two sdiag calls between the readings are REQUEST_STATS_INFO, not job listings
  echo "$((l1 - l0)) $((a1 - a0 - 2))"
}

repo=$work/repo
make_repo "$repo" "$owner"
printf '\nPlan against N live owned jobs (%s interleaved runs each: median wall time, peak RSS; RPCs per run)\n' "$runs"
printf '%8s | %9s %9s %8s %8s | %9s %9s %8s %8s | %6s\n' N plan_s plan_MiB list_rpc all_rpc \
  squeue_s sq_MiB list_rpc all_rpc ratio
for n in 10 100 1000 10000; do
  set_replicas "$repo" "$n"
  "$bin" apply -C "$repo" --auto-approve >/dev/null
  live=$(squeue --me -h -r -t all -o '%k|%T' | grep -c ";owner=$owner;.*|\(PENDING\|RUNNING\)" || true)
  [ "$live" -eq "$n" ] || { echo "expected $n live owned jobs, squeue shows $live" >&2; exit 1; }
  "$bin" plan -C "$repo" --detailed-exitcode >/dev/null || { echo "plan not clean at N=$n" >&2; exit 1; }
  sleep 5 # let slurmctld finish starting the new jobs, so both sides see an idle controller
  listing=(squeue --me --noheader --array --states=all
    --Format 'ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,Comment:|')
  : > "$work/plan.times"; : > "$work/squeue.times"
  for _ in $(seq "$runs"); do # interleaved, so both see the same cluster load
    time_once "$work/plan.times" "$bin" plan -C "$repo"
    time_once "$work/squeue.times" "${listing[@]}"
  done
  read -r pt pm < <(summarize "$work/plan.times")
  read -r st sm < <(summarize "$work/squeue.times")
  read -r pl pa < <(rpcs_of "$bin" plan -C "$repo")
  read -r sl sa < <(rpcs_of "${listing[@]}")
  ratio=$(awk -v a="$pt" -v b="$st" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  printf '%8s | %9s %9s %8s %8s | %9s %9s %8s %8s | %6s\n' "$n" "$pt" "$pm" "$pl" "$pa" \
    "$st" "$sm" "$sl" "$sa" "$ratio"
done
ids=$(owned_arrays "$owner" | tr '\n' ' '); [ -n "$ids" ] && scancel $ids
sleep 2

printf '\nSubmitting 100 replicas\n'
repo2=$work/apply
make_repo "$repo2" "$owner-apply"
set_replicas "$repo2" 100
l0=$(listing_rpcs)
start=$(date +%s.%N)
"$bin" apply -C "$repo2" --auto-approve >/dev/null
apply_s=$(echo "$(date +%s.%N) - $start" | bc -l)
l1=$(listing_rpcs)
ids=$(owned_arrays "$owner-apply" | tr '\n' ' '); [ -n "$ids" ] && scancel $ids
start=$(date +%s.%N)
loop_ids=""
for i in $(seq 100); do
  loop_ids+="$(sbatch --parsable --job-name=bench.loop --comment="bench-loop-$owner" --cpus-per-task=1 --mem=16M \
    --time=60 --output=/dev/null --wrap 'exec sleep 3600') "
done
loop_s=$(echo "$(date +%s.%N) - $start" | bc -l)
scancel $loop_ids; loop_ids=""
printf '  stackctl apply (100 replicas): %.3f s (%s listing RPCs)\n' "$apply_s" "$((l1 - l0))"
printf '  shell loop of 100 sbatch:      %.3f s\n' "$loop_s"
printf '  ratio apply / loop:            %.3f\n' "$(echo "$apply_s / $loop_s" | bc -l)"
