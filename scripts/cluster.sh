#!/usr/bin/env bash
# Run a 3-node Marconi cluster on this machine, on 127.0.0.1:8881-8883.
#
#   scripts/cluster.sh start [DIR]   start nodes a, b and c (state in DIR,
#                                    default ./cluster-run)
#   scripts/cluster.sh stop [DIR]    stop them
#   scripts/cluster.sh status [DIR]  show each node's /v2/health
#
# Environment: TWISTD (default: twistd), BASE_PORT (default 8881),
# HOST (default 127.0.0.1).
set -euo pipefail

command=${1:-start}
dir=${2:-./cluster-run}
twistd=${TWISTD:-twistd}
base=${BASE_PORT:-8881}
host=${HOST:-127.0.0.1}
names=(a b c)

nodes=()
for i in "${!names[@]}"; do
    nodes+=(--cluster-node "${names[$i]}=http://$host:$((base + i))")
done

case "$command" in
start)
    mkdir -p "$dir"
    if [ ! -s "$dir/secret" ]; then
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secret")
    fi
    for i in "${!names[@]}"; do
        name=${names[$i]}
        # shellcheck disable=SC2086
        $twistd --pidfile "$dir/$name.pid" --logfile "$dir/$name.log" \
            marconi \
            --listen "tcp:$((base + i)):interface=$host" \
            --storage "sqlite:$dir/$name.sqlite3" \
            --node-name "$name" "${nodes[@]}" \
            --cluster-secret-file "$dir/secret"
        echo "node $name: http://$host:$((base + i)) (log $dir/$name.log)"
    done
    ;;
stop)
    for name in "${names[@]}"; do
        if [ -s "$dir/$name.pid" ]; then
            kill "$(cat "$dir/$name.pid")" && echo "stopped $name" || true
        fi
    done
    ;;
status)
    for i in "${!names[@]}"; do
        echo "== ${names[$i]}"
        curl -s "http://$host:$((base + i))/v2/health" || echo "(not answering)"
        echo
    done
    ;;
*)
    echo "usage: $0 start|stop|status [DIR]" >&2
    exit 2
    ;;
esac
