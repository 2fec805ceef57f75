#!/usr/bin/env bash
# One-core pass-through comparison: shardgate vs nginx proxy_pass (upstream keep-alive), same
# mock provider, same load. Interim tool until `shardgate-bench` (issue 3) replaces it.
#
#   bench-harness/scripts/compare-nginx.sh [rounds] [seconds] [connections]
#
# Needs: nginx, wrk, taskset (Debian: nginx-light wrk util-linux), and a release build:
#   cargo build --release -p shardgate-engine -p shardgate-bench
# Layout on a 2-core box: gateway or nginx on core 0; mock provider and wrk on core 1.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-10}
CONNS=${3:-64}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$ROOT/target/release
WORK=$(mktemp -d)
MOCK_PORT=19300; GW_PORT=19301; NGINX_PORT=19302
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT

BODY='{"model":"bench","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences, please."}],"temperature":0.2,"max_tokens":64}'
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer sk-client"
wrk.body = '$BODY'
LUA

cat > "$WORK/gw.yaml" <<YAML
server:
  reload: {watch: false}
providers:
  up:
    kind: openai-compatible
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    api_key: sk-upstream
models:
  bench: {target: up/bench}
YAML

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-upstream";
      proxy_buffering off;
    }
  }
}
NGX

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

taskset -c 1 "$BIN/shardgate-mock" --listen 127.0.0.1:$MOCK_PORT --shards 1 --driver epoll 2>"$WORK/mock.log" &
wait_port $MOCK_PORT

run_wrk() { # port label pid
  local before after out rps p50 p99 cpu hz
  hz=$(getconf CLK_TCK)
  before=$(ticks "$3")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$1/v1/chat/completions")
  after=$(ticks "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  cpu=$(python3 -c "print(round(100*($after-$before)/$hz/$SECS))")
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/{print}' | tr '\n' ' ')
  echo "$2 rps=$rps p50=$p50 p99=$p99 cpu=${cpu}% rss_kb=$(rss_kb "$3") $errs"
}

start_gw() { # driver
  SHARDGATE_LOG=warn taskset -c 0 "$BIN/shardgate" serve --config "$WORK/gw.yaml" --listen 127.0.0.1:$GW_PORT --shards 1 --driver "$1" 2>"$WORK/gw.log" &
  GW_PID=$!
  wait_port $GW_PORT
}

echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cpus; wrk -t1 -c$CONNS -d${SECS}s; body ${#BODY} bytes"
# Idle RSS: fresh process, one shard, after start-up settles.
for d in epoll uring; do
  start_gw $d; sleep 1
  echo "idle driver=$d rss_kb=$(rss_kb $GW_PID)"
  kill $GW_PID; wait $GW_PID 2>/dev/null || true
done

for r in $(seq "$ROUNDS"); do
  for d in epoll uring; do
    start_gw $d
    curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/v1/chat/completions" -d "$BODY"
    run_wrk $GW_PORT "round=$r shardgate-$d" $GW_PID
    kill $GW_PID; wait $GW_PID 2>/dev/null || true
  done
  taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" 2>/dev/null &
  NG_PID=$!
  wait_port $NGINX_PORT
  sleep 0.2
  WORKER=$(pgrep -P $NG_PID | head -1)
  run_wrk $NGINX_PORT "round=$r nginx" "${WORKER:-$NG_PID}"
  kill $NG_PID; wait $NG_PID 2>/dev/null || true
done
