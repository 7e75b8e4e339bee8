#!/usr/bin/env bash
# Benchmark: what the apply lock and the pre-checks (cluster facts, `sbatch --test-only`) cost,
# against the path before them (BASE_REF, default: the commit before they landed), measured in
# the same run on the real Slurm test cluster. Not a test: it prints figures.
#
#   no-change: `apply --auto-approve` when the cluster already matches (10 services x 4)
#   submit:    `apply --auto-approve` of 100 replicas (4 services x 25) onto an empty cluster
#
# Each case runs RUNS times, base and new interleaved; it prints median wall time, the ratio
# new/base, and slurmctld RPCs per run from `sdiag` (all message types, and job listings).
#
# Usage: benches/unattended.sh [RUNS]   (needs `scripts/slurm-dev-cluster up`; RUNS default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
runs=${1:-5}
base_ref=${BASE_REF:-5e6c87f}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
sinfo -h >/dev/null || { echo "no Slurm cluster at SLURM_CONF=$SLURM_CONF; run scripts/slurm-dev-cluster up" >&2; exit 1; }

work=$(mktemp -d)
owners=()
cleanup() {
  for o in "${owners[@]}"; do cancel_owner "$o"; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "building $base_ref (base) and the working tree (new)..." >&2
git archive "$base_ref" | (mkdir -p "$work/base-src" && tar -x -C "$work/base-src")
(cd "$work/base-src" && CARGO_TARGET_DIR=$work/base-target cargo build --release --quiet)
cargo build --release --quiet
declare -A bin=([base]=$work/base-target/release/stackctl [new]=$PWD/target/release/stackctl)

make_repo() { # DIR OWNER SERVICES REPLICAS
  mkdir -p "$1/recipes/bench" "$1/stacks"
  printf 'owner: %s\nlog_dir: %s/logs\n' "$2" "$1" > "$1/stackctl.yaml"
  printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' \
    > "$1/recipes/bench/sleeper.yaml"
  {
    echo "services:"
    for i in $(seq "$3"); do printf '  svc%s:\n    recipe: bench/sleeper\n    replicas: %s\n' "$i" "$4"; done
  } > "$1/stacks/bench.yaml"
  owners+=("$2")
}


# Runs a command once; appends "seconds all_rpcs listing_rpcs" to the file named by $1.
measure() {
  local into=$1 t0 t1 a0 l0 a1 l1
  shift
  a0=$(rpcs .); l0=$(rpcs 'REQUEST_JOB_INFO |REQUEST_JOB_USER_INFO ')
  t0=$(date +%s%N)
  "$@" >/dev/null 2>"$work/stderr" || { echo "failed: $*" >&2; cat "$work/stderr" >&2; exit 1; }
  t1=$(date +%s%N)
  a1=$(rpcs .); l1=$(rpcs 'REQUEST_JOB_INFO |REQUEST_JOB_USER_INFO ')
  # the two sdiag calls between the readings are REQUEST_STATS_INFO, not stackctl's
  echo "$(( (t1 - t0) / 1000000 )) $((a1 - a0 - 2)) $((l1 - l0))" >> "$into"
}

# Prints "median_ms median_all_rpcs median_listing_rpcs" of a file written by measure.
median() {
  for col in 1 2 3; do
    cut -d' ' -f"$col" "$1" | sort -n | awk '{v[NR] = $1} END {printf "%s ", v[int((NR + 1) / 2)]}'
  done
  echo
}

report() { # CASE
  read -r bt ba bl < <(median "$work/$1.base")
  read -r nt na nl < <(median "$work/$1.new")
  printf '%-10s | %8s ms %4s rpc %3s list | %8s ms %4s rpc %3s list | %5s\n' "$1" \
    "$bt" "$ba" "$bl" "$nt" "$na" "$nl" "$(awk -v a="$nt" -v b="$bt" 'BEGIN { printf "%.2f", a / b }')"
}

printf '\n%s runs each, interleaved; median wall time and slurmctld RPCs per run\n' "$runs"
printf '%-10s | %-30s | %-30s | %5s\n' case "base ($base_ref)" "new" "ratio"

# No-change apply: each binary on its own converged repo.
for side in base new; do
  make_repo "$work/idle-$side" "bench-idle-$side-$$" 10 4
  "${bin[$side]}" apply -C "$work/idle-$side" --auto-approve >/dev/null
done
sleep 3
: > "$work/no-change.base"; : > "$work/no-change.new"
for _ in $(seq "$runs"); do
  for side in base new; do
    measure "$work/no-change.$side" "${bin[$side]}" apply -C "$work/idle-$side" --auto-approve
  done
done
report no-change
for side in base new; do cancel_owner "bench-idle-$side-$$"; done

# Submitting 100 replicas from empty, a fresh owner per run.
: > "$work/submit.base"; : > "$work/submit.new"
for run in $(seq "$runs"); do
  for side in base new; do
    dir=$work/submit-$side-$run
    make_repo "$dir" "bench-submit-$side-$run-$$" 4 25
    measure "$work/submit.$side" "${bin[$side]}" apply -C "$dir" --auto-approve
    cancel_owner "bench-submit-$side-$run-$$"
  done
done
report submit
