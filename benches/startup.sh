#!/usr/bin/env bash
# The fixed start-up cost of commands that fetch nothing over the network (not a test: it prints
# figures): `stackctl --version`, `validate` and `plan` of a small repo (one service, nothing
# live, so plan runs five Slurm commands: the listing, the cluster's facts (three `scontrol`)
# and one `sbatch --test-only`), next to `true` and a bare `squeue --me` listing, measured
# interleaved in the same run. With BASE=path/to/another/stackctl the same commands of that
# binary are measured in the same rounds (e.g. a release build of main), for a before/after.
#
# Load-independent figures come first, from strace when it is installed: files opened per run,
# and whether the system CA bundle is read (it should not be: nothing here uses TLS).
#
# Usage: benches/startup.sh [RUNS]   (RUNS defaults to 21; needs `scripts/slurm-dev-cluster up`
#        for plan; BIN defaults to target/release/stackctl, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-21}
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
bin=${BIN:-$PWD/target/release/stackctl}
[ -x "$bin" ] || cargo build --release --quiet
base=${BASE:-}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
repo=$work/repo
mkdir -p "$repo/recipes/bench" "$repo/stacks"
printf 'owner: startup-bench-%s\nlog_dir: %s/logs\n' "$$" "$repo" > "$repo/stackctl.yaml"
printf 'name: sleeper\ncommand: exec sleep 3600\nresources: {cpu: 1, memory: 16M, time_limit: 60}\n' \
  > "$repo/recipes/bench/sleeper.yaml"
printf 'services:\n  svc:\n    recipe: bench/sleeper\n' > "$repo/stacks/bench.yaml"
(cd "$repo" && git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm init)

bins=("$bin")
[ -n "$base" ] && bins=("$base" "$bin")
cmds=("--version" "validate -C $repo" "plan -C $repo")

if command -v strace >/dev/null; then
  printf '\nFiles opened per run (strace -f -e trace=openat,open; load-independent)\n'
  printf '%-28s %-10s %7s %9s\n' command binary opened ca_bundle
  for c in "${cmds[@]}"; do
    for b in "${bins[@]}"; do
      # shellcheck disable=SC2086
      strace -f -qq -e trace=openat,open -o "$work/trace" "$b" $c >/dev/null 2>&1 || true
      opened=$(grep -c 'open' "$work/trace" || true)
      ca=$(grep -c 'ca-certificates\|/certs/' "$work/trace" || true)
      printf '%-28s %-10s %7s %9s\n' "${c%% -C*}" "$([ "$b" = "$base" ] && echo base || echo this)" "$opened" "$ca"
    done
  done
fi

# Runs a command once; prints its wall time in ms.
ms_once() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1 || true
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}
median() { sort -n | awk '{v[NR] = $1} END {printf "%.1f", v[int((NR + 1) / 2)] / 1000}'; }

printf '\nWall time, median of %s interleaved rounds (ms)\n' "$runs"
declare -A times
labels=("true")
for c in "${cmds[@]}"; do for b in "${bins[@]}"; do labels+=("$b|$c"); done; done
labels+=("squeue")
for _ in $(seq "$runs"); do
  for l in "${labels[@]}"; do
    case $l in
      true) t=$(ms_once true) ;;
      squeue) t=$(ms_once squeue --me --noheader --array --states=all) ;;
      # shellcheck disable=SC2086
      *) t=$(ms_once "${l%%|*}" ${l#*|}) ;;
    esac
    times[$l]+="$t "
  done
done
printf '%-28s %-10s %9s\n' command binary median_ms
for l in "${labels[@]}"; do
  m=$(tr ' ' '\n' <<<"${times[$l]}" | grep . | median)
  case $l in
    true | squeue) printf '%-28s %-10s %9s\n' "$l" - "$m" ;;
    *) b=${l%%|*}; c=${l#*|}
       printf '%-28s %-10s %9s\n' "${c%% -C*}" "$([ "$b" = "$base" ] && echo base || echo this)" "$m" ;;
  esac
done
