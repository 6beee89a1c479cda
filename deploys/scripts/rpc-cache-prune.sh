#!/bin/sh
# Written by halo-provision (deploys/rpc_worker.py); do not edit: the next run replaces it.
# Keep the llama.cpp RPC tensor cache (ggml-rpc-server -c) at most MAX bytes: remove the least
# recently used files (oldest access time first) until the rest fits. halo-rpc@.service runs it
# before each start and after each stop. MAX 0 empties the cache (the cache is turned off);
# MAX auto is a tenth of the file system that holds DIR.
#
#   rpc-cache-prune /var/lib/halo-rpc/rpc 53687091200
set -eu
dir=$1
max=$2
[ -d "$dir" ] || exit 0
if [ "$max" = auto ]; then
    max=$(( $(df --output=size -B1 "$dir" | tail -n 1) / 10 ))
fi
total=$(du -sb "$dir" | cut -f1)
[ "$total" -gt "$max" ] || exit 0
before=$total
find "$dir" -type f -printf '%A@ %s %p\n' | sort -n | {
    while read -r _ size path; do
        [ "$total" -gt "$max" ] || break
        rm -f -- "$path" && total=$(( total - size ))
    done
    echo "rpc-cache-prune: $dir was $before bytes, now $total (at most $max)"
}
