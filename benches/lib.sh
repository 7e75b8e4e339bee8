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
