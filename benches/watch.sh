#!/usr/bin/env bash
# Benchmark: what an idle `stackctl watch` costs the cluster and the login node, and how soon
# a pushed commit reaches the cluster, on the real Slurm test cluster. Not a test: it prints
# figures.
#
#   idle:   10 services x 4 replicas, already converged. `watch --interval INTERVAL` runs for
#           DURATION; the baseline, measured in the same run for the same time, is what people
#           do without watch: a loop of `apply --auto-approve` every INTERVAL (cron style).
#           Printed per interval: slurmctld RPCs made by the benchmark's own Slurm user (from
#           sdiag's per-user section, so other jobs on the cluster do not count) and
#           cluster-wide job listings (REQUEST_JOB_[USER_]INFO; exact only when nothing else
#           runs);
#           and CPU seconds per hour of the process and its children; ratio watch/baseline.
#   commit: a commit scaling one service is pushed to a bare remote; time until its new
#           replica is alive in squeue. Baseline: `git pull` + `apply --auto-approve` started
#           at the push (a person or CI reacting at once). Median of PUSHES.
#
# stackctl runs as the user BENCH_USER (default stackctl-bench, created if missing; needs
# root), so its RPCs can be told apart from everyone else's.
#
# Usage: benches/watch.sh   (needs `scripts/slurm-dev-cluster up`)
#   DURATION (seconds per idle run, default 600), INTERVAL (seconds, default 5),
#   PUSHES (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
duration=${DURATION:-600}
interval=${INTERVAL:-5}
pushes=${PUSHES:-5}
user=${BENCH_USER:-stackctl-bench}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
sinfo -h >/dev/null || { echo "no Slurm cluster at SLURM_CONF=$SLURM_CONF; run scripts/slurm-dev-cluster up" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark runs stackctl as the user $user" >&2; exit 1; }
id "$user" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)

work=$(mktemp -d)
chmod 755 "$work"
owners=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for o in "${owners[@]}"; do cancel_owner "$o"; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
install -m 755 target/release/stackctl "$work/stackctl"
bin=$work/stackctl
# Runs a command as the benchmark user, with git's identity set. `exec`, so that in the
# background `$!` is the command itself (for /proc/PID/stat and for kill).
as_user() { (exec_as_user "$@"); }
exec_as_user() {
  exec setpriv --reuid="$user" --regid="$user" --init-groups \
    env HOME="$home" PATH="$PATH" SLURM_CONF="$SLURM_CONF" \
    GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.org \
    GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.org "$@"
}

make_repo() { # DIR OWNER SERVICES R
  mkdir -p "$1/recipes/bench" "$1/stacks"
  printf 'owner: %s\nlog_dir: %s/logs\n' "$2" "$1" > "$1/stackctl.yaml"
  printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' \
    > "$1/recipes/bench/sleeper.yaml"
  write_stack "$1" "$3" "$4"
  chown -R "$user:" "$1"
  owners+=("$2")
}
write_stack() { # DIR SERVICES R: svc1 gets R replicas, the others 4
  {
    echo "services:"
    for i in $(seq "$2"); do
      local r=4
      [ "$i" = 1 ] && r=$3
      printf '  svc%s:\n    recipe: bench/sleeper\n    replicas: %s\n' "$i" "$r"
    done
  } > "$1/stacks/bench.yaml"
}
# CPU seconds (user + system, reaped children included) of a process, from /proc.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"
}

# Job listings as sdiag names them (`squeue --me` sends REQUEST_JOB_USER_INFO).
listing='REQUEST_JOB_INFO |REQUEST_JOB_USER_INFO '
# Runs COMMAND... as the benchmark user for $duration seconds; prints
# "user_rpcs cluster_listings cpu_seconds".
measure_idle() {
  local u0 l0 pid cpu
  u0=$(user_rpcs "$user")
  l0=$(rpcs "$listing")
  exec_as_user "$@" >/dev/null 2>&1 &
  pid=$!
  pids+=("$pid")
  sleep "$duration"
  cpu=$(cpu_seconds "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$(($(user_rpcs "$user") - u0)) $(($(rpcs "$listing") - l0)) $cpu"
}

echo "== idle: 10 services x 4 replicas, interval ${interval}s, ${duration}s per run"
idle=$work/idle
make_repo "$idle" "bench-watch-idle-$$" 10 4
as_user "$bin" -C "$idle" apply --auto-approve >/dev/null
# `setpriv` execs, so the measured pid is the loop's shell (children's CPU included).
read -r base_user base_list base_cpu < <(measure_idle bash -c \
  "while true; do '$bin' -C '$idle' apply --auto-approve; sleep $interval; done")
read -r new_user new_list new_cpu < <(measure_idle "$bin" -C "$idle" watch --local --interval "${interval}s")
intervals=$(awk -v d="$duration" -v i="$interval" 'BEGIN { print d / i }')
awk -v n="$intervals" -v d="$duration" -v bu="$base_user" -v bl="$base_list" -v bc="$base_cpu" \
  -v nu="$new_user" -v nl="$new_list" -v nc="$new_cpu" 'BEGIN {
  printf "%-36s %12s %12s %7s\n", "", "apply loop", "watch", "ratio"
  printf "%-36s %12.2f %12.2f %7.2f\n", "RPCs of the bench user per interval", bu / n, nu / n, nu / bu
  printf "%-36s %12.2f %12.2f %7.2f\n", "job listings per interval (cluster)", bl / n, nl / n, nl / bl
  printf "%-36s %12.1f %12.1f %7.2f\n", "CPU seconds per hour", bc * 3600 / d, nc * 3600 / d, nc / bc
}'
cancel_owner "bench-watch-idle-$$"

echo "== commit to converged: ${pushes} pushes, interval ${interval}s"
src=$work/src
git_dir=$work/git
install -d -o "$user" "$git_dir"
remote=$git_dir/remote.git
checkout=$git_dir/checkout
make_repo "$src" "bench-watch-push-$$" 2 1
printf 'logs/\n' > "$src/.gitignore"
chown -R "$user:" "$src"
as_user git init -q --bare -b main "$remote"
as_user git -C "$src" init -q -b main
as_user git -C "$src" add -A
as_user git -C "$src" commit -qm first
as_user git -C "$src" remote add origin "$remote"
as_user git -C "$src" push -q origin main
as_user git clone -q "$remote" "$checkout"

alive_svc1() { # alive replicas of svc1
  squeue -h -r -o '%T|%k' | awk -F'|' -v tag=";owner=bench-watch-push-$$;stack=bench;svc=svc1;" \
    'index($2, tag) && ($1 == "RUNNING" || $1 == "PENDING") { n++ } END { print n + 0 }'
}
wait_alive() { # START N: prints seconds from START until svc1 has N alive replicas
  until [ "$(alive_svc1)" = "$2" ]; do sleep 0.1; done
  awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", e - s }'
}
push_replicas() { # N
  write_stack "$src" 2 "$1"
  as_user git -C "$src" commit -qam "svc1: $1 replicas"
  as_user git -C "$src" push -q origin main
}

exec_as_user "$bin" -C "$checkout" watch --interval "${interval}s" >/dev/null 2>&1 &
wpid=$!
pids+=("$wpid")
until [ "$(alive_svc1)" = 1 ]; do sleep 0.2; done
watch_times=()
for _ in $(seq "$pushes"); do
  start=$(date +%s.%N)
  push_replicas 2
  watch_times+=("$(wait_alive "$start" 2)")
  push_replicas 1
  until [ "$(alive_svc1)" = 1 ]; do sleep 0.2; done
done
kill -TERM "$wpid"
wait "$wpid" 2>/dev/null || true

manual_times=()
for _ in $(seq "$pushes"); do
  start=$(date +%s.%N)
  push_replicas 2
  as_user git -C "$checkout" pull -q --ff-only
  as_user "$bin" -C "$checkout" apply --auto-approve >/dev/null
  manual_times+=("$(wait_alive "$start" 2)")
  push_replicas 1
  as_user git -C "$checkout" pull -q --ff-only
  as_user "$bin" -C "$checkout" apply --auto-approve >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mw=$(median "${watch_times[@]}")
mm=$(median "${manual_times[@]}")
printf '%-36s %12s %12s %7s\n' "" "pull + apply" "watch" "ratio"
awk -v m="$mm" -v w="$mw" 'BEGIN { printf "%-36s %11.2fs %11.2fs %7.2f\n", "push to replica alive (median)", m, w, w / m }'
echo "watch samples (s): ${watch_times[*]}"
echo "pull + apply samples (s): ${manual_times[*]}"
