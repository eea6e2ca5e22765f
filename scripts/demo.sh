#!/usr/bin/env bash
# make demo: a bootstrap node and two peers on loopback. Peer B runs as a
# daemon; peer A is `antnode connect`, which asks the bootstrap to introduce
# it to B, opens an authenticated QUIC connection and sends 8 MiB that B
# verifies by SHA-256. Prints the attempt phase by phase. Then a real use:
# B exposes a local HTTP server to A (--expose web=... --allow A), A runs
# `antnode forward` and fetches a file through it, and the SHA-256 of the
# body must equal the served file's. Exits 0 only if both checks pass.
set -euo pipefail
BIN=${BIN:-./bin/antnode}
HTTPFILE=${HTTPFILE:-./bin/httpfile}
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

boot_id=$("$BIN" id --key "$dir/bootstrap.key")
peer_b=$("$BIN" id --key "$dir/peer-b.key")
peer_a=$("$BIN" id --key "$dir/peer-a.key")
# A plain HTTP server on loopback, serving 8 MiB of random bytes: the
# service B exposes.
"$HTTPFILE" serve --size 8388608 >"$dir/web.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  grep -q '^serving' "$dir/web.out" 2>/dev/null && break
  sleep 0.1
done
web_url=$(awk '/^serving/ {print $2}' "$dir/web.out")
web_sha=$(awk '/^serving/ {print $4}' "$dir/web.out")
[ -n "$web_url" ] || { echo "HTTP server did not start"; cat "$dir/web.out"; exit 1; }
web_addr=${web_url#http://}; web_addr=${web_addr%/file}
# The bootstrap picks a free port and prints "bootstrap ID listening on ADDR".
"$BIN" --bootstrap --listen 127.0.0.1:0 --key "$dir/bootstrap.key" --metrics-addr 127.0.0.1:0 >"$dir/bootstrap.out" 2>"$dir/bootstrap.log" &
pids+=($!)
for _ in $(seq 1 50); do
  grep -q 'listening on' "$dir/bootstrap.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(awk '/listening on/ {print $NF}' "$dir/bootstrap.out")
[ -n "$addr" ] || { echo "bootstrap did not start"; cat "$dir/bootstrap.log"; exit 1; }
port=${addr##*:}
echo "== bootstrap $boot_id on 127.0.0.1:$port"
echo "== peer B $peer_b (daemon, exposing web=$web_addr to peer A only)"
"$BIN" --listen 127.0.0.1:0 --bootstrap-nodes "$boot_id@127.0.0.1:$port" --key "$dir/peer-b.key" --metrics-addr 127.0.0.1:0 \
  --expose "web=$web_addr" --allow "$peer_a" >"$dir/peer-b.out" 2>"$dir/peer-b.log" &
pids+=($!)

# Wait (bounded) until B has registered with the bootstrap.
for _ in $(seq 1 50); do
  grep -q 'bootstrap up' "$dir/peer-b.log" 2>/dev/null && break
  sleep 0.1
done
grep -q 'bootstrap up' "$dir/peer-b.log" || { echo "peer B did not register"; cat "$dir/peer-b.log"; exit 1; }

echo "== peer A: antnode connect $peer_b --send 8MiB"
status=0
"$BIN" connect "$peer_b" --bootstrap-nodes "$boot_id@127.0.0.1:$port" --send 8MiB --timeout 15s || status=$?
echo
echo "== a second attempt (a fresh connect, 1 MiB verified) as JSON"
"$BIN" connect "$peer_b" --bootstrap-nodes "$boot_id@127.0.0.1:$port" --send 1MiB --json --timeout 15s || status=$?
echo
echo "== peer B's log of the attempts (addresses sanitised)"
grep -E 'attempt (started|succeeded|failed)|throughput' "$dir/peer-b.log" | sed 's/^/  /' || true

# http_get HOST:PORT PATH: a plain HTTP GET with bash alone (no curl needed).
http_get() {
  local host=${1%:*} p=${1##*:}
  exec 3<>"/dev/tcp/$host/$p"
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}
maddr=$(awk '/metrics on/ {sub("http://", "", $NF); sub("/metrics", "", $NF); print $NF}' "$dir/peer-b.out")
if [ -n "$maddr" ]; then
  echo
  echo "== peer B's monitoring: seed metrics from http://$maddr/metrics"
  http_get "$maddr" /metrics | grep -E '^(nat_attempts_total|nat_results_total|connection_latency_ms_count|connection_throughput_mbps_sum|antnode_connections)' | sed 's/^/  /' || true
  echo "== peer B's last attempt from http://$maddr/api/v1/attempts?limit=1"
  http_get "$maddr" '/api/v1/attempts?limit=1' | grep -E '"(id|role|outcome|path|phase|duration_ms)"' | head -20 | sed 's/^/  /' || true
fi
echo
echo "== peer A: antnode forward $peer_b web --local 127.0.0.1:0 (its own key, which B allows)"
"$BIN" forward "$peer_b" web --local 127.0.0.1:0 --bootstrap-nodes "$boot_id@127.0.0.1:$port" --key "$dir/peer-a.key" \
  --timeout 15s >"$dir/forward.out" 2>"$dir/forward.log" &
pids+=($!)
for _ in $(seq 1 150); do
  grep -q '^forwarding' "$dir/forward.out" 2>/dev/null && break
  sleep 0.1
done
if grep -q '^forwarding' "$dir/forward.out"; then
  sed 's/^/  /' "$dir/forward.out"
  local_addr=$(awk '/^forwarding/ {print $2}' "$dir/forward.out")
  echo "== GET http://$local_addr/file through the forward (the file is B's, 8 MiB)"
  got=$("$HTTPFILE" get "http://$local_addr/file" 2>&1) || true
  echo "  $got"
  echo "  served sha256 $web_sha"
  if [ "${got##* }" = "$web_sha" ]; then
    echo "  SHA-256 matches: the body crossed the peer connection intact"
  else
    echo "  SHA-256 MISMATCH"; status=1
  fi
else
  echo "  forward did not become ready"; cat "$dir/forward.log"; status=1
fi
if [ -n "$maddr" ]; then
  echo "== peer B's services from http://$maddr/api/v1/services"
  http_get "$maddr" /api/v1/services | grep -A12 '"service": "web"' | grep -E '"(service|target|allow|accepted|active|bytes_in|bytes_out)"' | sed 's/^ */  /' || true
fi

if [ "$status" -ne 0 ]; then
  echo "demo FAILED"; echo "--- bootstrap log"; cat "$dir/bootstrap.log"; echo "--- peer B log"; cat "$dir/peer-b.log"
  exit "$status"
fi
echo "demo OK"
