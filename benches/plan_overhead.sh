#!/usr/bin/env bash
# Splits a no-change `plan` into the lifetime of its `squeue` child and the rest of stackctl's
# (not a test: it prints figures). Less dependent on slurmctld's latency than wall time: "outside
# squeue" is stackctl's exec to exit minus squeue's exec to exit, from
# `strace -f --seccomp-bpf -e trace=execve,exit_group -ttt` (which slows each traced process start
# a little, the same for every binary). Runs are interleaved across the binaries; medians.
#
# Usage: benches/plan_overhead.sh RUNS REPO BIN...   (REPO: a repo already applied, so its plan
#        has no changes; BIN: stackctl binaries to compare, e.g. a before and an after build)
set -euo pipefail
command -v strace >/dev/null || { echo "needs strace" >&2; exit 1; }
runs=$1; repo=$2; shift 2
trace=$(mktemp)
trap 'rm -f "$trace"' EXIT
export SLURM_CONF=${SLURM_CONF:-/etc/stackctl-dev-slurm/slurm.conf}
declare -A tot sq ov
for _ in $(seq $runs); do
  for b in "$@"; do
    strace -f -qq --seccomp-bpf -e trace=execve,exit_group -ttt -o "$trace" "$b" plan -C "$repo" >/dev/null 2>&1
    read t s < <(awk '
      /execve\(/ && !/ENOENT/ && !/resumed/ { if (!(start)) start=$2; if ($0 ~ /squeue/) { sqpid=$1; sqs=$2 } }
      /execve resumed/ { }
      /exit_group/ { if ($1==sqpid) sqe=$2; last=$2 }
      /\+\+\+ exited/ { last=$2 }
      END { printf "%.3f %.3f\n", (last-start)*1000, (sqe-sqs)*1000 }' "$trace")
    tot[$b]+="$t "; sq[$b]+="$s "; ov[$b]+="$(awk -v a=$t -v b=$s 'BEGIN{printf "%.3f", a-b}') "
  done
done
med() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {printf "%.1f", v[int((NR+1)/2)]}'; }
for b in "$@"; do
  printf '%-22s total %7s ms  squeue %7s ms  outside squeue %6s ms\n' "$(basename $b)" "$(med <<<"${tot[$b]}")" "$(med <<<"${sq[$b]}")" "$(med <<<"${ov[$b]}")"
done
