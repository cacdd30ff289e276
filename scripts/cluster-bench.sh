#!/usr/bin/env bash
# Forwarded against local requests on a 3-node cluster started with
# scripts/cluster.sh: every run goes to node a (127.0.0.1:$BASE_PORT); the
# "local" queue is owned by a, the "forwarded" one by b.
#
#   scripts/cluster-bench.sh [SECONDS] [CONNECTIONS]
#
# Needs wrk (apt-get install -y wrk) and a cluster on ports BASE_PORT.. .
# The queue names are those the ring gives for project "bench" with nodes
# a, b and c (bench11 on a, bench2 on b).
set -euo pipefail
seconds=${1:-10}
connections=${2:-16}
base=${BASE_PORT:-8881}
url="http://127.0.0.1:$base"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"messages": [{"body": {"n": 1}, "ttl": 300}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Client-ID"] = "6f8a0b6e-3c4d-4f1a-9b2e-2d0c7a1e5f10"
wrk.headers["X-Project-ID"] = "bench"
LUA
cat >"$work/get.lua" <<'LUA'
wrk.headers["Client-ID"] = "6f8a0b6e-3c4d-4f1a-9b2e-2d0c7a1e5f10"
wrk.headers["X-Project-ID"] = "bench"
LUA

for queue in bench11 bench2; do
    curl -s -o /dev/null -X PUT -H "Client-ID: x" -H "X-Project-ID: bench" \
        "$url/v2/queues/$queue"
done

run() {
    local label=$1 script=$2 path=$3
    echo "== $label: $path"
    wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$work/$script" "$url$path" |
        grep -E "Requests/sec|Latency|50%|99%|Non-2xx"
}
run "stats, local" get.lua /v2/queues/bench11/stats
run "stats, forwarded" get.lua /v2/queues/bench2/stats
run "post 1 message, local" post.lua /v2/queues/bench11/messages
run "post 1 message, forwarded" post.lua /v2/queues/bench2/messages
