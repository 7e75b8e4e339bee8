# Shared by the benchmark scripts (sourced, not run): cleanup by owner and slurmctld RPC
# counters from `sdiag`.

# Array ids of one owner's jobs and locks, for cleanup by id (never by user or name).
owned_arrays() {
  squeue -h -r -t all -o '%F|%k' | awk -F'|' -v tag=";owner=$1;" 'index($2, tag) {print $1}' | sort -u
}

# Cancels one owner's jobs and locks, by id.
cancel_owner() {
  local ids
  ids=$(owned_arrays "$1" | tr '\n' ' ')
  if [ -n "$ids" ]; then scancel $ids 2>/dev/null || true; fi
}

# Sums the `count:` fields of sdiag's per-message-type section (cluster-wide), for lines
# matching $1.
rpcs() {
  sdiag | awk -v pat="$1" '/statistics by message type/ {on=1; next} /statistics by user/ {on=0}
    on && $0 ~ pat { for (i = 1; i <= NF; i++) if ($i ~ /^count:/) { sub("count:", "", $i); n += $i } }
    END { print n + 0 }'
}

# The `count:` of one user in sdiag's per-user section: every RPC that user made, whatever
# else runs on the cluster.
user_rpcs() {
  sdiag | awk -v user="$1" '/statistics by user/ {on=1; next} /Pending RPC/ {on=0}
    on && $1 == user { for (i = 2; i <= NF; i++) if ($i ~ /^count:/) { sub("count:", "", $i); print $i + 0; found = 1 } }
    END { if (!found) print 0 }'
}

# Wall time of one run of a command in ms (3 decimals) on stdout, its output discarded; returns
# the command's exit status. Uses bash's EPOCHREALTIME, so timing forks nothing of its own.
time_once() {
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  "$@" >/dev/null 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }'
  return "$rc"
}

# The median of the numbers on stdin, one a line (the mean of the middle two for an even
# count; `-` for none).
median() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# RPCs that USER made while a command ran once: the difference of sdiag's per-user count read
# before and after (with the command's output discarded). When the script itself runs as USER,
# its own sdiag calls are counted too: subtract what the same reading costs around `true`.
user_rpcs_of() {
  local user=$1 before after
  shift
  before=$(user_rpcs "$user")
  "$@" >/dev/null 2>&1 || true
  after=$(user_rpcs "$user")
  echo $((after - before))
}
