#!/usr/bin/env bash
# Issue 22's table in one run, against the real Slurm test cluster (not a test: it prints
# figures). Every row: what stackctl took, the baseline measured in the same run, the ratio,
# and the slurmctld RPCs of one run of each side (sdiag's per-user count):
#
#   plan, no changes, one service of 10 / 100 / 1,000 / 10,000 live replicas, and 1,000
#     services x 1 replica    vs the bare listing with one line per replica: `squeue --me
#                                -h -r -t all` with stackctl's own --Format and environment
#                                (SLURM_TIME_FORMAT=%s, TZ=UTC; same user's jobs)
#   apply, 100 and 1,000 new one-replica services, in two shapes
#     (a) free CPUs: every job runs `/bin/true`, so it ends as soon as it starts and CPUs free
#         up as fast as Slurm starts jobs (48 CPUs cannot hold 100 sleeping jobs; the table
#         prints how many were pending/running when each side returned)
#     (b) 48 CPUs: every job sleeps; 48 run and the rest stay pending
#                             vs a shell loop of as many plain `sbatch` calls, same resources
#   apply with no changes     vs plan with no changes (10 replicas; 1,000 services)
#   listings (squeue calls, counted by a PATH wrapper) of an apply that submits 10 services,
#     and of a no-change apply
#   start-up: `--version` and `validate` vs `true` (the difference is the fixed cost)
#   the binary: size with debug info stripped (objcopy --strip-debug, what scripts/dist ships)
#     and as built, whether it carries debug info, TLS libraries it links (ldd), rustls and
#     openssl-sys in the dependency tree (`cargo tree -e normal -i …`)
#   watch idle (WATCH_SECONDS, default 120, interval WATCH_INTERVAL, default 5 s): squeue calls
#     per interval and CPU seconds per hour (of the process and its reaped children, from
#     /proc), vs a cron-style loop of `apply --auto-approve` every interval, run beside it
#
# Times are medians of RUNS rounds in which the sides alternate (stackctl, [before,] baseline).
# BASE=/path/to/another/stackctl adds a "before" column measured in the same rounds (the watch
# row excepted), for a before/after; a before binary whose plan sees changes in a repo the new
# one converged is marked `*` (its "no changes" figure is then not one).
#
# Runs as root: it creates the user BENCH_USER (default stackctl-bench, as benches/watch.sh) if
# missing and re-runs itself as that user, so `squeue --me` lists only the bench's jobs and
# sdiag's per-user count holds only the bench's RPCs, whatever else the shared cluster runs.
# Jobs are cancelled by id only (owner tags, collected sbatch ids). Between rows the cluster is
# drained: after a cancel the bench waits until the user has no pending, running or completing
# job, and before the plan rows and the apply rows it waits until slurmctld has purged the
# user's ended jobs (MinJobAge, 120 s here), because `squeue -t all` lists them and each plan or
# apply lists them again. The watch window runs during the first of those waits.
# A run that fails (e.g. slurmctld timing out under load) does not end the bench: its time stays
# in the median, its row is marked `!` and a note names it.
#
# Usage: [BASE=…] [BIN=…] benches/cluster.sh [RUNS]   (RUNS defaults to $RUNS or 5; needs
#        `scripts/slurm-dev-cluster up`; BIN defaults to a release build of this tree)
#   PLAN_SIZES (default "10 100 1000 10000"), SERVICES (default 1000), APPLY_SIZES (default
#   "100 1000"), STARTUP_RUNS (default 21), WATCH_SECONDS, WATCH_INTERVAL; PURGE=no skips the
#   waits for the purge (a quick try of the script: its figures then include ended jobs)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
runs=${1:-${RUNS:-5}}
user=${BENCH_USER:-stackctl-bench}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
# stackctl's own listing (src/slurm/cli.rs SQUEUE_FORMAT): the baseline lists what plan lists.
squeue_format='ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,NodeList:|,StartTime:|,EndTime:|,exit_code:|,SubmitTime:|,Comment:|'

# --- As root: the user, the binaries, the facts about them; then again as the user. --------
if [ -z "${CLUSTER_BENCH_WORK:-}" ]; then
  sinfo -h >/dev/null || { echo "no Slurm cluster at SLURM_CONF=$SLURM_CONF; run scripts/slurm-dev-cluster up" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "run as root: the benchmark runs as the user $user" >&2; exit 1; }
  id "$user" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$user"
  if [ -n "${BIN:-}" ]; then
    bin=$BIN
  else
    echo "building the release binary..." >&2
    cargo build --release --quiet
    bin=$PWD/target/release/stackctl
  fi
  work=$(mktemp -d /tmp/stackctl-bench-cluster.XXXXXX)
  install -m 755 "$bin" "$work/stackctl"
  [ -z "${BASE:-}" ] || install -m 755 "$BASE" "$work/base"
  # The binary row: size (of the file as built, debug info included), debug info, TLS.
  facts() { # BINARY
    local size debug tls
    size=$(stat -c %s "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }')
    debug=$(readelf -S "$1" 2>/dev/null | grep -q '\.debug_info' && echo "debug info" || echo "no debug info")
    tls=$(ldd "$1" | awk '/libssl|libcrypto|libgnutls|libmbedtls|libnss3/ { sub(/\..*/, "", $1); printf "%s%s", sep, $1; sep = "+" }')
    # What scripts/dist ships: the same binary with its debug info moved out (objcopy).
    stripped="? MB"
    if command -v objcopy >/dev/null && objcopy --strip-debug "$1" "$work/stripped.tmp" 2>/dev/null; then
      stripped=$(stat -c %s "$work/stripped.tmp" | awk '{ printf "%.1f MB", $1 / 1e6 }')
    fi
    rm -f "$work/stripped.tmp"
    echo "$size|$debug|${tls:-none}|$stripped"
  }
  facts "$work/stackctl" > "$work/facts.new"
  [ -z "${BASE:-}" ] || facts "$work/base" > "$work/facts.base"
  in_tree() { cargo tree --offline -q -e normal -i "$1" >/dev/null 2>&1 && echo "$1" || echo "no $1"; }
  if cargo tree --offline -q -e normal >/dev/null 2>&1; then
    echo "$(in_tree rustls), $(in_tree openssl-sys)" > "$work/facts.tree"
  else
    echo "cargo tree failed" > "$work/facts.tree"
  fi
  git log -1 --format='%h %s' > "$work/commit" 2>/dev/null || echo unknown > "$work/commit"
  [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo "(uncommitted changes)" >> "$work/commit"
  chown -R "$user:" "$work"
  echo "running as $user (work dir $work)..." >&2
  home=$(getent passwd "$user" | cut -d: -f6)
  exec setpriv --reuid="$user" --regid="$user" --init-groups \
    env HOME="$home" USER="$user" LOGNAME="$user" CLUSTER_BENCH_WORK="$work" bash "$PWD/benches/cluster.sh" "$runs"
fi

# --- As the bench user. -------------------------------------------------------------------
work=$CLUSTER_BENCH_WORK
[ "$(id -un)" = "$user" ] || { echo "expected to run as $user" >&2; exit 1; }
plan_sizes=${PLAN_SIZES:-10 100 1000 10000}
services=${SERVICES:-1000}
apply_sizes=${APPLY_SIZES:-100 1000}
startup_runs=${STARTUP_RUNS:-21}
watch_seconds=${WATCH_SECONDS:-120}
watch_interval=${WATCH_INTERVAL:-5}
declare -A binof=([new]=$work/stackctl)
sides=(new)
if [ -x "$work/base" ]; then binof[base]=$work/base; sides=(new base); fi
run_id="bench-$$-$(date +%s)"
owners=()
pids=()
loop_ids=$work/loop.ids
: > "$loop_ids"
started=$SECONDS

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for o in "${owners[@]}"; do cancel_owner "$o"; done
  cancel_loop
  cd / && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

log() { printf '[%s +%4ss] %s\n' "$(date -u +%T)" "$((SECONDS - started))" "$*" >&2; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

# Cancels the sbatch loop's jobs, by their collected ids.
cancel_loop() {
  if [ -s "$loop_ids" ]; then cut -d';' -f1 "$loop_ids" | xargs -r -n 500 scancel 2>/dev/null || true; fi
  : > "$loop_ids"
}

# A repo of SERVICES services of REPLICAS replicas each, running COMMAND.
make_repo() { # DIR OWNER SERVICES REPLICAS COMMAND
  mkdir -p "$1/recipes/bench" "$1/stacks"
  printf 'owner: %s\nlog_dir: %s/logs\n' "$2" "$1" > "$1/stackctl.yaml"
  printf 'name: job\ncommand: %s\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' "$5" \
    > "$1/recipes/bench/job.yaml"
  set_stack "$1" "$3" "$4"
  owners+=("$2")
}
set_stack() { # DIR SERVICES REPLICAS
  {
    echo "services:"
    for i in $(seq "$2"); do printf '  svc%s:\n    recipe: bench/job\n    replicas: %s\n' "$i" "$3"; done
  } > "$1/stacks/bench.yaml"
}

# Jobs of the bench user (array tasks one by one) in the given states.
user_jobs() { squeue --me -h -r -t "$1" -o %i | wc -l; }

# Waits until the bench user has no pending, running or completing job (after a cancel).
drain() {
  local t0=$SECONDS
  while [ "$(user_jobs PD,R,CG,CF,S,RQ)" != 0 ]; do
    ((SECONDS - t0 < 300)) || die "jobs of $user still alive 300 s after their cancel"
    sleep 1
  done
}

# Waits until slurmctld has purged the bench user's ended jobs (at most KEEP may stay listed).
purge() { # KEEP
  local t0=$SECONDS limit left
  if [ "${PURGE:-yes}" = no ]; then log "not waiting for the purge (PURGE=no)"; return; fi
  limit=$(($(scontrol show config | awk '$1 == "MinJobAge" { print $3 }') + 300))
  while left=$(user_jobs all) && [ "$left" -gt "$1" ]; do
    ((SECONDS - t0 < limit)) || die "$left ended jobs of $user still listed after ${limit}s"
    sleep 5
  done
  log "purged (waited $((SECONDS - t0)) s)"
}

# The bare listing, run as stackctl runs it: unix-second times, TZ=UTC (squeue re-reads the
# zone file for every time it prints when TZ is unset), so the baseline is the cheapest listing
# of the same lines. A function: the variables cost no extra process.
bare_listing() {
  SLURM_TIME_FORMAT=%s TZ=UTC squeue --me --noheader --array --states=all --Format "$squeue_format"
}
listing=(bare_listing)

# RPCs an sdiag reading costs when this user makes it (subtracted from every count below).
rpc_overhead=$( (for _ in 1 2 3; do user_rpcs_of "$user" true; done) | median)
rpcs_of() { echo $(($(user_rpcs_of "$user" "$@") - rpc_overhead)); }

# --- The table. ----------------------------------------------------------------------------
rows=()
notes=()
base_mark=
base_changed=0
# Appends a row: WHAT NEW NEW_RPC BASE BASE_RPC BASELINE BASELINE_RPC RATIO BASE_RATIO GOAL
row() { local IFS='|'; rows+=("$*"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
ms() { [ "$1" = - ] && echo - || awk -v v="$1" 'BEGIN { printf "%.1f ms", v }'; }
secs() { [ "$1" = - ] && echo - || awk -v v="$1" 'BEGIN { printf "%.2f s", v / 1000 }'; }
med() { median < "$work/$1"; }
# Times one run into FILE; a failed run (e.g. slurmctld timing out under load) is kept, counted
# and named in the notes, and its row is marked `!`, instead of ending the whole run.
failures=0
loop_failed=0
timed() { # FILE COMMAND...
  local into=$1
  shift
  time_once "$@" >> "$into" || { failures=$((failures + 1)); notes+=("! failed: ${*/#$work\//}"); }
}
mark() { [ "$failures" = "$1" ] && echo "" || echo "!"; } # FAILURES_BEFORE

# Plan clean for every binary? Prints nothing; marks a before binary that sees changes.
plan_clean() { # DIR
  "${binof[new]}" plan -C "$1" --detailed-exitcode >/dev/null 2>&1 || die "plan of $1 is not clean after apply"
  base_mark=
  if [ -n "${binof[base]:-}" ]; then
    "${binof[base]}" plan -C "$1" --detailed-exitcode >/dev/null 2>&1 || { base_mark='*'; base_changed=1; }
  fi
}

# Plan vs the bare listing, RUNS rounds; then RPCs of one run each. Row label $2.
plan_row() { # DIR LABEL
  local dir=$1 side lines f0=$failures
  plan_clean "$dir"
  sleep 3 # let slurmctld finish starting what the apply submitted
  for f in plan.new plan.base squeue; do : > "$work/$f"; done
  for _ in $(seq "$runs"); do
    for side in "${sides[@]}"; do timed "$work/plan.$side" "${binof[$side]}" plan -C "$dir"; done
    timed "$work/squeue" "${listing[@]}"
  done
  local new base=- sq nr br=- sr
  new=$(med plan.new); sq=$(med squeue)
  nr=$(rpcs_of "${binof[new]}" plan -C "$dir")
  sr=$(rpcs_of "${listing[@]}")
  if [ -n "${binof[base]:-}" ]; then base=$(med plan.base); br=$(rpcs_of "${binof[base]}" plan -C "$dir"); fi
  lines=$("${listing[@]}" | wc -l)
  row "$2" "$(ms "$new")$(mark "$f0")" "$nr" "$(ms "$base")$base_mark" "$br" "squeue -r, $lines lines: $(ms "$sq")" "$sr" \
    "$(ratio "$new" "$sq")" "$(ratio "$base" "$sq")" "<= 1.2"
  log "$2: plan $(ms "$new"), squeue $(ms "$sq") ($lines lines)"
}

# No-change apply vs no-change plan, RUNS rounds (the plan of the same binary is the baseline).
noop_apply_row() { # DIR LABEL
  local dir=$1 side f0=$failures
  for f in apply.new apply.base plan.new plan.base; do : > "$work/$f"; done
  for _ in $(seq "$runs"); do
    for side in "${sides[@]}"; do
      [ "$side" = base ] && [ -n "$base_mark" ] && continue
      timed "$work/apply.$side" "${binof[$side]}" apply -C "$dir" --auto-approve
      timed "$work/plan.$side" "${binof[$side]}" plan -C "$dir"
    done
  done
  local a p ar pr ba=- bar=- bratio=-
  a=$(med apply.new); p=$(med plan.new)
  ar=$(rpcs_of "${binof[new]}" apply -C "$dir" --auto-approve)
  pr=$(rpcs_of "${binof[new]}" plan -C "$dir")
  if [ -n "${binof[base]:-}" ] && [ -z "$base_mark" ]; then
    ba=$(med apply.base); bar=$(rpcs_of "${binof[base]}" apply -C "$dir" --auto-approve)
    bratio=$(ratio "$ba" "$(med plan.base)")
  fi
  row "$2" "$(ms "$a")$(mark "$f0")" "$ar" "$(ms "$ba")$base_mark" "$bar" "its plan: $(ms "$p")" "$pr" "$(ratio "$a" "$p")" "$bratio" "<= 1.1"
  log "$2: apply $(ms "$a"), plan $(ms "$p")"
}

# A PATH directory whose Slurm commands log their name to FILE before running the real one.
wrapper_dir() { # DIR FILE
  mkdir -p "$1"
  local c
  for c in squeue sbatch scancel scontrol sacct sinfo; do
    printf '#!/bin/sh\necho %s >> %s\nexec %s "$@"\n' "$c" "$2" "$(command -v "$c")" > "$1/$c"
    chmod 755 "$1/$c"
  done
}
# "squeue_calls all_slurm_calls" of one run of a command under the wrapper.
count_calls() {
  local log=$work/calls.log
  : > "$log"
  PATH="$work/wrap:$PATH" "$@" >/dev/null 2>&1 || die "failed under the wrapper: $*"
  echo "$(grep -c '^squeue$' "$log" || true) $(wc -l < "$log")"
}

# ---------------------------------------------------------------------------------------------
log "RUNS=$runs; $(uptime | sed 's/.*load/load/')"
left=$(user_jobs all)
if [ "$left" != 0 ]; then log "waiting for $left listed jobs of $user to be purged"; drain; purge 0; fi
wrapper_dir "$work/wrap" "$work/calls.log"

# Start-up: --version and validate vs true.
log "start-up (${startup_runs} rounds)"
make_repo "$work/small" "$run_id-small" 1 1 'exec sleep 3600'
for f in true version.new version.base validate.new validate.base; do : > "$work/$f"; done
for _ in $(seq "$startup_runs"); do
  time_once /bin/true >> "$work/true"
  for side in "${sides[@]}"; do
    time_once "${binof[$side]}" --version >> "$work/version.$side"
    time_once "${binof[$side]}" validate -C "$work/small" >> "$work/validate.$side"
  done
done
t=$(med true)
above() { [ "$1" = - ] && echo - || awk -v a="$1" -v b="$t" 'BEGIN { printf "+%.1f ms", a - b }'; }
for c in version validate; do
  n=$(med "$c.new"); b=-
  [ -n "${binof[base]:-}" ] && b=$(med "$c.base")
  args=(--version); label="--version"
  [ $c = validate ] && args=(validate -C "$work/small") && label="validate, 1 service"
  nr=$(rpcs_of "${binof[new]}" "${args[@]}"); br=-
  [ "$b" = - ] || br=$(rpcs_of "${binof[base]}" "${args[@]}")
  row "start-up: $label (median of $startup_runs)" "$(ms "$n")" "$nr" "$(ms "$b")" "$br" \
    "/bin/true: $(ms "$t")" "$(rpcs_of /bin/true)" "$(above "$n")" "$(above "$b")" "<= +5 ms"
done

# The binary.
IFS='|' read -r nsize ndebug ntls nstrip < "$work/facts.new"
bsize=- bdebug= btls=- bstrip=
[ -f "$work/facts.base" ] && IFS='|' read -r bsize bdebug btls bstrip < "$work/facts.base"
row "binary: debug info stripped (as scripts/dist ships it); as built" "$nstrip; $nsize, $ndebug" - \
  "${bstrip:+$bstrip; }$bsize${bdebug:+, $bdebug}" - - - - - "<= 20 MB"
row "TLS: libraries linked (ldd); crates in the tree (cargo tree -i)" "$ntls; $(cat "$work/facts.tree")" - "$btls" - - - - - "one TLS stack"

# Listings of an apply that submits, and of a no-change apply.
log "listings per apply (PATH wrapper)"
for side in "${sides[@]}"; do
  make_repo "$work/calls-$side" "$run_id-calls-$side" 10 1 'exec sleep 3600'
  read -r sq_sub all_sub < <(count_calls "${binof[$side]}" apply -C "$work/calls-$side" --auto-approve)
  read -r sq_noop all_noop < <(count_calls "${binof[$side]}" apply -C "$work/calls-$side" --auto-approve)
  declare "calls_$side=$sq_sub|$all_sub|$sq_noop|$all_noop"
  cancel_owner "$run_id-calls-$side"
done
IFS='|' read -r a b c d <<<"$calls_new"
bsub=- bnoop=-
if [ -n "${calls_base:-}" ]; then IFS='|' read -r e f g h <<<"$calls_base"; bsub="$e ($f)"; bnoop="$g ($h)"; fi
row "squeue calls (all Slurm calls): apply submitting 10 services" "$a ($b)" - "$bsub" - - - - - "<= 2"
row "squeue calls (all Slurm calls): no-change apply" "$c ($d)" - "$bnoop" - - - - - "1"
drain

# 1,000 services x 1 replica: plan, and no-change apply vs plan.
log "plan, $services services x 1 replica: applying"
svc_dir=$work/services
make_repo "$svc_dir" "$run_id-services" "$services" 1 'exec sleep 3600'
t=$(time_once "${binof[new]}" apply -C "$svc_dir" --auto-approve) || die "apply of $services services failed"
log "applied $services services in $(secs "$t")"
plan_row "$svc_dir" "plan, $services services x 1 replica, no changes"
noop_apply_row "$svc_dir" "apply vs plan, no changes, $services services x 1"
cancel_owner "$run_id-services"
drain

# Watch idle, during the purge of those jobs: watch and a cron-style apply loop side by side,
# each on its own converged repo (1 service x 2 replicas), each with its own wrapper log.
log "watch idle: ${watch_seconds}s at ${watch_interval}s (while the purge runs)"
listed_at_watch=$(user_jobs all)
for w in watch loop; do
  make_repo "$work/$w" "$run_id-$w" 1 2 'exec sleep 3600'
  "${binof[new]}" apply -C "$work/$w" --auto-approve >/dev/null || die "apply of the $w repo failed"
  wrapper_dir "$work/wrap-$w" "$work/$w.calls"
  : > "$work/$w.calls"
done
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"; }
PATH="$work/wrap-watch:$PATH" "${binof[new]}" -C "$work/watch" watch --local --interval "${watch_interval}s" >/dev/null 2>&1 &
wpid=$!
pids+=("$wpid")
PATH="$work/wrap-loop:$PATH" bash -c "while true; do '${binof[new]}' -C '$work/loop' apply --auto-approve; sleep $watch_interval; done" >/dev/null 2>&1 &
lpid=$!
pids+=("$lpid")
sleep "$watch_seconds"
wcpu=$(cpu_seconds "$wpid"); lcpu=$(cpu_seconds "$lpid")
kill "$wpid" "$lpid" 2>/dev/null || true
wait "$wpid" "$lpid" 2>/dev/null || true
intervals=$(awk -v d="$watch_seconds" -v i="$watch_interval" 'BEGIN { print d / i }')
per() { awk -v n="$1" -v i="$intervals" 'BEGIN { printf "%.2f", n / i }'; }
wsq=$(grep -c '^squeue$' "$work/watch.calls" || true); lsq=$(grep -c '^squeue$' "$work/loop.calls" || true)
wall=$(wc -l < "$work/watch.calls"); lall=$(wc -l < "$work/loop.calls")
row "watch idle: squeue calls per ${watch_interval}s interval (all Slurm calls)" "$(per "$wsq") ($(per "$wall"))" - - - \
  "apply loop: $(per "$lsq") ($(per "$lall"))" - "$(ratio "$wsq" "$lsq")" - "1"
row "watch idle: CPU seconds per hour (${watch_seconds}s window)" \
  "$(awk -v c="$wcpu" -v d="$watch_seconds" 'BEGIN { printf "%.1f", c * 3600 / d }')" - - - \
  "apply loop: $(awk -v c="$lcpu" -v d="$watch_seconds" 'BEGIN { printf "%.1f", c * 3600 / d }')" - \
  "$(ratio "$wcpu" "$lcpu")" - "< 5"
notes+=("watch: ran while $listed_at_watch ended jobs of the bench user were still listed (purge after the services row)")
cancel_owner "$run_id-watch"; cancel_owner "$run_id-loop"
drain
# The services' jobs gone; the watch's 4 ended jobs, cancelled just now, may stay listed.
purge 8

# Plan at 10 / 100 / 1,000 / 10,000 live replicas of one service (scaled up in place).
rep_dir=$work/replicas
make_repo "$rep_dir" "$run_id-replicas" 1 10 'exec sleep 3600'
first=1
for n in $plan_sizes; do
  log "plan, $n live replicas: applying"
  set_stack "$rep_dir" 1 "$n"
  "${binof[new]}" apply -C "$rep_dir" --auto-approve >/dev/null || die "apply of $n replicas failed"
  live=$(squeue --me -h -r -t PD,R -o '%k' | grep -c ";owner=$run_id-replicas;" || true)
  [ "$live" -eq "$n" ] || die "expected $n live replicas, squeue shows $live"
  plan_row "$rep_dir" "plan, $n live replicas of one service, no changes"
  if [ "$first" = 1 ]; then noop_apply_row "$rep_dir" "apply vs plan, no changes, $n replicas"; first=0; fi
done
cancel_owner "$run_id-replicas"
drain
log "waiting for the replicas' purge before the apply rows"
purge 0

# Apply N new services vs a loop of N sbatch, shapes (a) and (b), RUNS interleaved rounds.
apply_row() { # N SHAPE
  local n=$1 shape=$2 cmd wrap r side dir owner t u st f0=$failures
  if [ "$shape" = a ]; then cmd=/bin/true; else cmd='exec sleep 3600'; fi
  for f in new base loop; do : > "$work/apply.$f"; : > "$work/rpc.$f"; : > "$work/state.$f"; done
  for r in $(seq "$runs"); do
    for side in "${sides[@]}" loop; do
      log "apply $n ($shape), round $r: $side"
      if [ "$side" = loop ]; then
        u=$(user_rpcs "$user")
        t0=$EPOCHREALTIME
        for _ in $(seq "$n"); do
          sbatch --parsable --job-name=bench.loop --comment="$run_id-loop" --cpus-per-task=1 --mem=16M \
            --time=60 --output=/dev/null --wrap "$cmd" >> "$loop_ids" 2>"$work/err" || loop_failed=$((loop_failed + 1))
        done
        t1=$EPOCHREALTIME
        if [ "$loop_failed" != 0 ]; then
          failures=$((failures + 1))
          notes+=("! apply $n ($shape), round $r, loop: $loop_failed sbatch failed, e.g. $(tail -1 "$work/err")")
          loop_failed=0
        fi
      else
        dir=$work/apply-$n-$shape-$side-$r
        owner=$run_id-a$n$shape-$side-$r
        make_repo "$dir" "$owner" "$n" 1 "$cmd"
        u=$(user_rpcs "$user")
        t0=$EPOCHREALTIME
        if ! "${binof[$side]}" apply -C "$dir" --auto-approve >/dev/null 2>"$work/err"; then
          t1=$EPOCHREALTIME
          failures=$((failures + 1))
          notes+=("! apply $n ($shape), round $r, $side failed with $(grep -c '^error' "$work/err" || true) errors, e.g. $(grep -m1 '^error' "$work/err" || tail -1 "$work/err")")
          tail -3 "$work/err" >&2
        fi
        t1=${t1:-$EPOCHREALTIME}
      fi
      st="$(user_jobs PD)/$(user_jobs R,CG,CF)"
      echo $(($(user_rpcs "$user") - u - rpc_overhead)) >> "$work/rpc.$side"
      awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }' >> "$work/apply.$side"
      unset t1
      echo "$st" >> "$work/state.$side"
      if [ "$side" = loop ]; then cancel_loop; else cancel_owner "$owner"; fi
      drain
    done
  done
  local new base=- lp label
  new=$(med apply.new); lp=$(med apply.loop)
  [ -n "${binof[base]:-}" ] && base=$(med apply.base)
  if [ "$shape" = a ]; then label="free CPUs, jobs end at once"; else label="48 CPUs, most stay pending"; fi
  row "apply, $n new services ($shape: $label)" "$(secs "$new")$(mark "$f0")" "$(med rpc.new)" "$(secs "$base")" \
    "$([ "$base" = - ] && echo - || med rpc.base)" "loop of $n sbatch: $(secs "$lp")" "$(med rpc.loop)" \
    "$(ratio "$new" "$lp")" "$(ratio "$base" "$lp")" "<= 1.0"
  notes+=("apply $n ($shape): pending/running when each side returned: stackctl $(paste -sd' ' "$work/state.new"); loop $(paste -sd' ' "$work/state.loop")$([ "$base" = - ] || echo "; before $(paste -sd' ' "$work/state.base")")")
  log "apply $n ($shape): stackctl $(secs "$new"), loop $(secs "$lp")"
}
for n in $apply_sizes; do
  for shape in a b; do apply_row "$n" "$shape"; done
done

# --- Print. ---------------------------------------------------------------------------------
printf '\nIssue 22 table: %s; RUNS=%s interleaved rounds, medians; %s\n' "$(date -u '+%F %H:%M UTC')" "$runs" \
  "$(uptime | sed 's/.*load/load/')"
printf 'stackctl: %s' "$(cat "$work/commit")"
[ -n "${binof[base]:-}" ] && printf '; before: BASE=%s' "$BASE"
printf '\nRPCs: slurmctld RPCs of one run, from sdiag'"'"'s count for the user %s (nothing else runs as it)\n\n' "$user"
if [ -n "${binof[base]:-}" ]; then
  printf '| what | stackctl | RPCs | before | RPCs | baseline | RPCs | ratio | before ratio | goal |\n'
  printf '|---|---|---|---|---|---|---|---|---|---|\n'
  for r in "${rows[@]}"; do IFS='|' read -r w n nr b br bl blr ra bra g <<<"$r"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$w" "$n" "$nr" "$b" "$br" "$bl" "$blr" "$ra" "$bra" "$g"; done
else
  printf '| what | stackctl | RPCs | baseline | RPCs | ratio | goal |\n'
  printf '|---|---|---|---|---|---|---|\n'
  for r in "${rows[@]}"; do IFS='|' read -r w n nr _ _ bl blr ra _ g <<<"$r"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$w" "$n" "$nr" "$bl" "$blr" "$ra" "$g"; done
fi
printf '\n'
for note in "${notes[@]}"; do printf -- '- %s\n' "$note"; done
[ "$failures" = 0 ] || printf -- '- !: %s run(s) failed (above); their times are in the medians\n' "$failures"
[ "$base_changed" = 0 ] || printf -- '- *: the before binary sees changes in this repo, so its figure is not a no-change one\n'
log "done in $((SECONDS - started)) s"
