#!/usr/bin/env bash
# Benchmark the three ways stackctl reaches Slurm against the real test cluster (not a test: it
# prints figures): the local CLI, the CLI over SSH and slurmrestd.
#
# For each size N (SIZES, default 10, 1,000 and 10,000) and each cluster shape (SHAPE), each
# backend plans the same repo; the baseline is a bare `squeue --me` listing by the same user,
# measured in the same run. Printed per shape, size and backend: median plan wall time of RUNS
# interleaved runs, the ratio to the baseline, the slurmctld RPCs of one plan (sdiag's per-user
# count, so other users' traffic does not count, but the e2e suites' traffic as the same user
# does) and, for REST, slurmrestd's resident memory idle and at its peak over one plan (on a
# slurmrestd of the bench's own, started fresh for that plan: see rest_peak_mib) and the size of
# the listing it answers.
#
# Shapes (SHAPE=array|separate|both, default both, array first):
# - array: the N jobs are stackctl's own, one service with N replicas. stackctl submits them as
#   ONE job array, mostly pending and not split into tasks, and slurmctld and slurmrestd hold and
#   return such an array as one record: the cheapest listing there is, which flatters REST.
# - separate: a busy cluster where most jobs are not stackctl's. The owned stack stays small
#   (10 replicas) and N separate foreign jobs sit next to it, submitted as the SAME user (so
#   `squeue --me`, the CLI and SSH listings and the REST listing all carry them) with a plain,
#   non-stackctl comment: N job records that every backend has to read and throw away. They are
#   submitted with `sbatch --hold` so they never run and never take CPUs from other tests;
#   a held pending job is listed like any other. The foreign jobs grow with the sizes (only
#   the missing ones are submitted: `sbatch --parsable` in parallel batches, ~7 ms a job here;
#   a job array would not do, it is one record) and are cancelled by their collected job ids
#   only, never by user or name: the e2e suites (tests/e2e/ssh.rs, tests/e2e/rest.rs) share this user.
#   This shape is what the issue's figure is about (10,000 jobs: 2–3 s and 35 MB per REST
#   listing); many stackctl-owned services would cost the listing the same per record, but
#   their plan would also grow with them, and the point here is the listing.
#
# Every job belongs to the SSH test user (`stackctl-ssh`, see scripts/slurm-dev-cluster), so all
# three list the same jobs: the local CLI runs as that user (runuser), SSH logs in as it, REST
# acts as it with a token minted for it. Each shape has its own owner; everything submitted is
# cancelled by id on exit (trap). Cancelled jobs stay listed for MinJobAge (300 s here, and a
# cancelled pending array as one line per task under `--array`), so with SHAPE=both the array
# shape's jobs are cancelled and purged (a wait of about MinJobAge) before the separate shape
# runs, and a second run should wait as long after the first.
#
# Usage: benches/backends.sh [RUNS]   (RUNS defaults to 5; SIZES="10 1000 10000";
#        SHAPE=array|separate|both)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
sizes=${SIZES:-10 1000 10000}
shape=${SHAPE:-both}
case $shape in
  array) shapes=array ;;
  separate) shapes=separate ;;
  both) shapes="array separate" ;;
  *) echo "SHAPE must be array, separate or both, not $shape" >&2; exit 2 ;;
esac
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
source benches/lib.sh
user=stackctl-ssh
ssh_dir=/etc/stackctl-dev-slurm/ssh
rest_url=http://127.0.0.1:16820
# The bench's own slurmrestd, started fresh for each memory measurement (rest_peak_mib).
own_rest_addr=127.0.0.1:16830
home=/var/lib/stackctl-dev-slurm/ssh-home
# The owned stack's replicas in the separate shape.
owned_separate=10
# Parallel sbatch processes submitting the foreign jobs.
submitters=4
id "$user" >/dev/null || { echo "no user $user: run scripts/slurm-dev-cluster up" >&2; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/stackctl

work=$(mktemp -d /tmp/stackctl-bench-backends.XXXXXX)
chmod 0755 "$work"
run_id="bench-backends-$$-$(date +%s)"
foreign_ids=$work/foreign.ids
: > "$foreign_ids"
# Cancels the foreign jobs by their ids.
cancel_foreign() {
  if [ -s "$foreign_ids" ]; then xargs -r -n 1000 scancel < "$foreign_ids" 2>/dev/null || true; fi
  : > "$foreign_ids"
}
cleanup() {
  cancel_owner "$run_id-array"
  cancel_owner "$run_id-separate"
  cancel_foreign
  pkill -f "slurmrestd .*$own_rest_addr" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# One repo per backend, all with the same owner, stacks and recipes.
for backend in cli ssh rest; do
  repo=$work/$backend
  mkdir -p "$repo/recipes/bench" "$repo/stacks"
  printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' \
    > "$repo/recipes/bench/sleeper.yaml"
done
logs=$home/bench-logs
install -d -o "$user" "$logs"
# Points the three repos at one owner.
set_owner() {
  printf 'owner: %s\nlog_dir: %s\n' "$1" "$logs" > "$work/cli/stackctl.yaml"
  printf 'owner: %s\nlog_dir: %s\ncluster:\n  ssh:\n    host: 127.0.0.1\n    port: 16922\n    user: %s\n    identity_file: %s/client_ed25519\n    known_hosts_file: %s/known_hosts\n    env: {SLURM_CONF: %s}\n' \
    "$1" "$logs" "$user" "$ssh_dir" "$ssh_dir" "$SLURM_CONF" > "$work/ssh/stackctl.yaml"
  printf 'owner: %s\nlog_dir: %s\ncluster:\n  backend: rest\n  url: %s\n  user: %s\n' \
    "$1" "$logs" "$rest_url" "$user" > "$work/rest/stackctl.yaml"
}
set_replicas() {
  for backend in cli ssh rest; do
    printf 'services:\n  svc:\n    recipe: bench/sleeper\n    replicas: %s\n' "$1" > "$work/$backend/stacks/bench.yaml"
  done
}

jwt=$(scontrol token username="$user" lifespan=7200 | cut -d= -f2)
as_user() { runuser -u "$user" -- env SLURM_CONF="$SLURM_CONF" HOME="$home" "$@"; }
plan_cli() { as_user "$bin" plan -C "$work/cli"; }
plan_ssh() { "$bin" plan -C "$work/ssh"; }
plan_rest() { SLURM_JWT=$jwt "$bin" plan -C "$work/rest"; }
baseline() { as_user squeue --me --noheader --array --states=all --Format 'ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,StartTime:|,EndTime:|,exit_code:|,Comment:|'; }

# Applies $2 replicas for owner $1 and checks that squeue shows them all live.
apply_owned() {
  set_owner "$1"
  set_replicas "$2"
  plan_ssh >/dev/null 2>&1 || true
  "$bin" apply -C "$work/ssh" --auto-approve >/dev/null
  local live
  live=$(squeue -u "$user" -h -r -t all -o '%k|%T' | grep -c ";owner=$1;.*|\(PENDING\|RUNNING\)" || true)
  [ "$live" -eq "$2" ] || { echo "expected $2 live jobs of $1, squeue shows $live" >&2; exit 1; }
}
# Tops the held foreign jobs up to $1, by parallel sbatch; their ids go to $foreign_ids.
foreign_up_to() {
  local have need live
  have=$(wc -l < "$foreign_ids")
  need=$(($1 - have))
  if ((need > 0)); then
    # -I{}: one sbatch per line of seq, the line itself unused.
    seq "$need" | xargs -P "$submitters" -I{} runuser -u "$user" -- env SLURM_CONF="$SLURM_CONF" sbatch --parsable --hold \
        --job-name=bench-foreign --comment=bench-foreign-job --chdir="$home" --output=/dev/null \
        --time=1 --cpus-per-task=1 --mem=16M --wrap='sleep 1' \
      | cut -d';' -f1 >> "$foreign_ids"
  fi
  live=$(squeue -h -t PENDING -o '%i' -j "$(paste -sd, "$foreign_ids")" | wc -l)
  [ "$live" -eq "$1" ] || { echo "expected $1 held foreign jobs, squeue shows $live" >&2; exit 1; }
}

# Waits until slurmctld has purged owner $1's ended jobs (MinJobAge after they ended), so the
# next shape's listings do not carry them: `--array` prints a cancelled pending array as one line
# per task until then.
wait_purged() {
  local limit t0=$SECONDS
  limit=$(($(scontrol show config | awk '$1 == "MinJobAge" {print $3}') + 180))
  while [ -n "$(owned_arrays "$1")" ]; do
    ((SECONDS - t0 < limit)) || { echo "jobs of $1 still listed after ${limit}s" >&2; exit 1; }
    sleep 10
  done
}

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
# slurmrestd's peak resident memory (MiB) over one REST plan, on a slurmrestd of the bench's own,
# started fresh for it on $own_rest_addr and stopped after: slurmrestd keeps what it once
# allocated, so the shared one's high-water mark says what the busiest listing so far cost, not
# this one. Started as the dev cluster starts its own (scripts/slurm-dev-cluster): as the
# `slurm` user, JWT auth, v0.0.38. Prints "idle/peak": VmHWM before and after the plan.
rest_peak_mib() {
  local pid idle peak i
  setsid setpriv --reuid=slurm --regid=slurm --init-groups \
    env SLURM_JWT=daemon SLURM_CONF="$SLURM_CONF" \
    /usr/sbin/slurmrestd -f "$SLURM_CONF" -a rest_auth/jwt -s openapi/v0.0.38 "$own_rest_addr" \
    </dev/null >/dev/null 2>&1 &
  for i in $(seq 100); do
    curl -s -o /dev/null "http://$own_rest_addr/openapi/v3" && break
    sleep 0.1
  done
  pid=$(pgrep -f "slurmrestd .*$own_rest_addr" | head -1)
  [ -n "$pid" ] || { echo "the bench's own slurmrestd did not start" >&2; exit 1; }
  idle=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  sed "s#$rest_url#http://$own_rest_addr#" "$work/rest/stackctl.yaml" > "$work/rest-own.yaml"
  cp -r "$work/rest" "$work/rest-own"
  mv "$work/rest-own.yaml" "$work/rest-own/stackctl.yaml"
  SLURM_JWT=$jwt "$bin" plan -C "$work/rest-own" >/dev/null 2>&1 || true
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -rf "$work/rest-own"
  awk -v a="$idle" -v b="$peak" 'BEGIN { printf "%.1f/%.1f", a / 1024, b / 1024 }'
}
# The size (MiB) of one GET /slurm/v0.0.38/jobs answer, the listing the REST plan reads.
rest_body_mib() {
  curl -sf -H "X-SLURM-USER-NAME: $user" -H "X-SLURM-USER-TOKEN: $jwt" "$rest_url/slurm/v0.0.38/jobs" \
    | wc -c | awk '{printf "%.1f", $1 / 1048576}'
}
row() { printf '%-8s %7s | %-8s %9s %7s %6s %20s %9s\n' "$@"; }

# Times the four listings RUNS times, interleaved, and prints one row each for shape $1, size $2.
measure() {
  sleep 5
  : > "$work/base.t"; : > "$work/cli.t"; : > "$work/ssh.t"; : > "$work/rest.t"
  for _ in $(seq "$runs"); do
    seconds baseline >> "$work/base.t"
    seconds plan_cli >> "$work/cli.t"
    seconds plan_ssh >> "$work/ssh.t"
    seconds plan_rest >> "$work/rest.t"
  done
  local base t ratio peak body backend
  base=$(median < "$work/base.t")
  row "$1" "$2" squeue "$base" 1.00 "$(rpcs_of baseline)" - -
  for backend in cli ssh rest; do
    t=$(median < "$work/$backend.t")
    ratio=$(awk -v a="$t" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
    peak=- body=-
    if [ "$backend" = rest ]; then
      peak=$(rest_peak_mib)
      body=$(rest_body_mib)
    fi
    row "$1" "$2" "$backend" "$t" "$ratio" "$(rpcs_of "plan_$backend")" "$peak" "$body"
  done
}

printf 'Plan wall time by backend; baseline: bare squeue --me by the same user (%s interleaved runs, median)\n' "$runs"
printf 'array: N owned replicas (one job array); separate: %s owned replicas + N held foreign jobs of the same user\n' "$owned_separate"
row shape N backend median_s ratio rpcs restd_idle/peak_MiB body_MiB
for s in $shapes; do
  for n in $sizes; do
    if [ "$s" = array ]; then
      apply_owned "$run_id-array" "$n"
    else
      apply_owned "$run_id-separate" "$owned_separate"
      foreign_up_to "$n"
    fi
    measure "$s" "$n"
  done
  # The array shape's jobs are gone before the separate shape runs.
  if [ "$s" = array ] && [ "$shape" = both ]; then
    cancel_owner "$run_id-array"
    wait_purged "$run_id-array"
  fi
done
