#!/usr/bin/env bash
# Benchmark: what an idle `stackctl watch` costs the cluster and the login node, and how soon
# a pushed commit reaches the cluster, on the real Slurm test cluster. Not a test (sdiag counts
# are cluster-wide: run it alone, never beside the test suite). It prints figures.
#
#   idle:   10 services x 4 replicas, already converged. `watch --interval INTERVAL` runs for
#           DURATION; the baseline, measured in the same run for the same time, is what people
#           do without watch: a loop of `apply --auto-approve` every INTERVAL (cron style).
#           Printed: slurmctld RPCs per interval from sdiag (job listings, and all types), and
#           CPU seconds per hour of the process and its children; ratio watch/baseline.
#   commit: a commit scaling one service is pushed to a bare remote; time until its new
#           replica is alive in squeue. Baseline: `git pull` + `apply --auto-approve` started
#           at the push (a person or CI reacting at once). Median of PUSHES.
#
# Usage: benches/watch.sh   (needs `scripts/slurm-dev-cluster up`)
#   DURATION (seconds per idle run, default 600), INTERVAL (seconds, default 5),
#   PUSHES (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-600}
interval=${INTERVAL:-5}
pushes=${PUSHES:-5}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
sinfo -h >/dev/null || { echo "no Slurm cluster at SLURM_CONF=$SLURM_CONF; run scripts/slurm-dev-cluster up" >&2; exit 1; }
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.org
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.org

work=$(mktemp -d)
owners=()
pids=()
owned_arrays() { # array ids of one owner's jobs and locks, for cleanup by id (never by user or name)
  squeue --me -h -r -t all -o '%F|%k' | awk -F'|' -v tag=";owner=$1;" 'index($2, tag) {print $1}' | sort -u
}
cancel_owner() {
  local ids
  ids=$(owned_arrays "$1" | tr '\n' ' ')
  if [ -n "$ids" ]; then scancel $ids 2>/dev/null || true; fi
}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for o in "${owners[@]}"; do cancel_owner "$o"; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
bin=$PWD/target/release/stackctl

make_repo() { # DIR OWNER SERVICES REPLICAS
  mkdir -p "$1/recipes/bench" "$1/stacks"
  printf 'owner: %s\nlog_dir: %s/logs\n' "$2" "$1" > "$1/stackctl.yaml"
  printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' \
    > "$1/recipes/bench/sleeper.yaml"
  write_stack "$1" "$3" "$4"
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

# Sums the `count:` fields of sdiag's per-message-type section, for lines matching $1.
rpcs() {
  sdiag | awk -v pat="$1" '/statistics by message type/ {on=1; next} /statistics by user/ {on=0}
    on && $0 ~ pat { for (i = 1; i <= NF; i++) if ($i ~ /^count:/) { sub("count:", "", $i); n += $i } }
    END { print n + 0 }'
}
# CPU seconds (user + system, children included) of a process, from /proc before it exits.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"
}

# Runs COMMAND... for $duration seconds in the background; prints "listings total cpu".
measure_idle() {
  local l0 t0 pid cpu
  l0=$(rpcs REQUEST_JOB_INFO)
  t0=$(rpcs .)
  "$@" >/dev/null 2>&1 &
  pid=$!
  pids+=("$pid")
  sleep "$duration"
  cpu=$(cpu_seconds "$pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$(($(rpcs REQUEST_JOB_INFO) - l0)) $(($(rpcs .) - t0)) $cpu"
}

echo "== idle: 10 services x 4 replicas, interval ${interval}s, ${duration}s per run"
idle=$work/idle
make_repo "$idle" "bench-watch-idle-$$" 10 4
"$bin" -C "$idle" apply --auto-approve >/dev/null
cron_loop() { while true; do "$bin" -C "$idle" apply --auto-approve; sleep "$interval"; done; }
read -r base_list base_all base_cpu < <(measure_idle bash -c "$(declare -f cron_loop); bin=$bin idle=$idle interval=$interval; cron_loop")
read -r new_list new_all new_cpu < <(measure_idle "$bin" -C "$idle" watch --local --interval "${interval}s")
intervals=$(awk -v d="$duration" -v i="$interval" 'BEGIN { print d / i }')
awk -v n="$intervals" -v d="$duration" -v bl="$base_list" -v ba="$base_all" -v bc="$base_cpu" \
  -v nl="$new_list" -v na="$new_all" -v nc="$new_cpu" 'BEGIN {
  printf "%-28s %14s %14s %8s\n", "", "apply loop", "watch", "ratio"
  printf "%-28s %14.2f %14.2f %8.2f\n", "job listings per interval", bl / n, nl / n, (nl / n) / (bl / n)
  printf "%-28s %14.2f %14.2f %8.2f\n", "all slurmctld RPCs/interval", ba / n, na / n, (na / n) / (ba / n)
  printf "%-28s %14.1f %14.1f %8.2f\n", "CPU seconds per hour", bc * 3600 / d, nc * 3600 / d, nc / bc
}'
cancel_owner "bench-watch-idle-$$"

echo "== commit to converged: ${pushes} pushes, interval ${interval}s"
remote=$work/remote.git
src=$work/src
checkout=$work/checkout
git init -q --bare "$remote"
make_repo "$src" "bench-watch-push-$$" 2 1
git -C "$src" init -q -b main
printf 'logs/\n' > "$src/.gitignore"
git -C "$src" add -A
git -C "$src" commit -qm first
git -C "$src" remote add origin "$remote"
git -C "$src" push -q origin main
git clone -q "$remote" "$checkout"

alive_svc1() { # alive replicas of svc1
  squeue --me -h -r -o '%T|%k' | awk -F'|' -v tag=";owner=bench-watch-push-$$;stack=bench;svc=svc1;" \
    'index($2, tag) && ($1 == "RUNNING" || $1 == "PENDING") { n++ } END { print n + 0 }'
}
wait_alive() { # N: seconds from now until svc1 has N alive replicas
  local start=$1 want=$2
  until [ "$(alive_svc1)" = "$want" ]; do sleep 0.1; done
  awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", e - s }'
}
push_replicas() { # N
  write_stack "$src" 2 "$1"
  git -C "$src" commit -qam "svc1: $1 replicas"
  git -C "$src" push -q origin main
}

"$bin" -C "$checkout" watch --interval "${interval}s" >/dev/null 2>&1 &
wpid=$!
pids+=("$wpid")
until [ "$(alive_svc1)" = 1 ]; do sleep 0.2; done
watch_times=()
for i in $(seq "$pushes"); do
  start=$(date +%s.%N)
  push_replicas 2
  watch_times+=("$(wait_alive "$start" 2)")
  push_replicas 1
  until [ "$(alive_svc1)" = 1 ]; do sleep 0.2; done
done
kill "$wpid"
wait "$wpid" 2>/dev/null || true

manual_times=()
for i in $(seq "$pushes"); do
  start=$(date +%s.%N)
  push_replicas 2
  git -C "$checkout" pull -q --ff-only
  "$bin" -C "$checkout" apply --auto-approve >/dev/null
  manual_times+=("$(wait_alive "$start" 2)")
  push_replicas 1
  git -C "$checkout" pull -q --ff-only
  "$bin" -C "$checkout" apply --auto-approve >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mw=$(median "${watch_times[@]}")
mm=$(median "${manual_times[@]}")
printf '%-28s %14s %14s %8s\n' "" "pull + apply" "watch" "ratio"
awk -v m="$mm" -v w="$mw" 'BEGIN { printf "%-28s %13.2fs %13.2fs %8.2f\n", "push to replica alive (med)", m, w, w / m }'
echo "watch samples: ${watch_times[*]}"
echo "pull + apply samples: ${manual_times[*]}"
