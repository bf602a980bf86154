#!/usr/bin/env bash
# Gate throughput through real nginx, side by side in one run (docs/PERFORMANCE.md):
#   ceiling: wrk -> nginx answering 200 itself (the proxy's own ceiling)
#   proxied: wrk -> nginx -> backend (no gate; kept-alive upstream, as the template)
#   authnull: wrk -> nginx -> auth_request answered 200 by nginx itself -> backend
#            (nginx's own cost of asking an auth server, with an instant one)
#   gated:   wrk -> nginx -> /gate/auth (mailpush) -> backend, from docs/gate/nginx.conf
#            as shipped (both upstreams kept alive)
# The four are measured in alternating rounds with the same wrk script (same
# requests, 10,000 registered devices). Needs nginx, wrk, and the mailpush binary
# (go build -o "$DIR/mailpush" ./cmd/mailpush). Usage: bash docs/gate/perf.sh [connections] [seconds] [rounds]
# AUDIT=deny|off changes gate.audit (default all). PROFILE=1 takes a CPU
# profile of mailpush during the first gated measurement ($DIR/gated.pprof;
# go tool pprof -top $DIR/mailpush $DIR/gated.pprof).
set -euo pipefail
CONNS=${1:-4}; SECS=${2:-10}; ROUNDS=${3:-3}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${DIR:-/tmp/gate-perf}
mkdir -p "$DIR" && cd "$DIR"
rm -rf data nginx && mkdir -p data nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
P_CEIL=18181 P_PROX=18182 P_GATE=18183 P_BACK=18184 P_MP=18185 P_PPROF=18186 P_NULL=18187

cat > mailpush.yaml <<YAML
listen: 127.0.0.1:$P_MP
database: {path: $DIR/data/m.db}
keyDir: $DIR/data/keys
log: {level: info}
debug: {pprofListen: "127.0.0.1:$P_PPROF"}
gate: {tenant: acme, proxy: nginx, audit: ${AUDIT:-all}, minProtocolVersion: "14.0"}
YAML
./mailpush tenant add acme --config mailpush.yaml >/dev/null
python3 -c "print('deviceId,user,deviceType,state'); [print(f'DEV{i:05d},perf@example.com,iPhone,' + ('compliant' if i%10 else 'blocked')) for i in range(10000)]" > devices.csv
./mailpush gate import devices.csv --tenant acme --config mailpush.yaml 2>/dev/null
ADMIN=$(./mailpush token add --tenant acme --scope admin --config mailpush.yaml | tail -1)
./mailpush serve --config mailpush.yaml 2> serve.log &
MP=$!

GATED=$(sed -e "s|\${MAILPUSH}|127.0.0.1:$P_MP|g; s|\${EXCHANGE_SCHEME}|http|g; s|\${EXCHANGE_HOST}|127.0.0.1:$P_BACK|g; s|\${LISTEN}|127.0.0.1:$P_GATE|g" "$REPO/docs/gate/nginx.conf")
USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
cat > nginx/nginx.conf <<NGINX
$USER_LINE
daemon off;
worker_processes auto;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $DIR/nginx/body; proxy_temp_path $DIR/nginx/proxy;
    fastcgi_temp_path $DIR/nginx/fcgi; uwsgi_temp_path $DIR/nginx/uwsgi; scgi_temp_path $DIR/nginx/scgi;
    server { listen 127.0.0.1:$P_CEIL; location / { return 200 "exchange says hi"; } }
    server { listen 127.0.0.1:$P_BACK; location / { return 200 "exchange says hi"; } }
    upstream backend_direct { server 127.0.0.1:$P_BACK; keepalive 64; }
    server {
        listen 127.0.0.1:$P_PROX;
        location /Microsoft-Server-ActiveSync { proxy_pass http://backend_direct; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; }
    }
    server {
        listen 127.0.0.1:$P_NULL;
        location /Microsoft-Server-ActiveSync { auth_request /null-auth; proxy_pass http://backend_direct; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; }
        location = /null-auth { internal; proxy_pass http://backend_direct/null-auth; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass_request_body off; proxy_set_header Content-Length ""; proxy_set_header X-Original-URI \$request_uri; }
    }
$GATED
}
NGINX
"$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" &
NG=$!
trap 'kill $NG $MP 2>/dev/null; wait $NG $MP 2>/dev/null || true' EXIT
for p in $P_CEIL $P_NULL $P_GATE $P_MP; do
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done

cat > varied.lua <<'LUA'
-- 10,000 registered devices in turn (9 in 10 compliant, 1 in 10 blocked): a
-- compliant device's request passes (200), a blocked one's is refused (403).
counter = 0
request = function()
  counter = counter + 1
  local uri = string.format("/Microsoft-Server-ActiveSync?Cmd=Ping&User=perf%%40example.com&DeviceId=DEV%05d&DeviceType=iPhone", counter % 10000)
  return wrk.format("POST", uri, {["Authorization"] = "Basic cGVyZkBleGFtcGxlLmNvbTpTZWNyZXQ=", ["User-Agent"] = "Apple-iPhone/1",
    ["MS-ASProtocolVersion"] = "16.1", ["Content-Type"] = "application/vnd.ms-sync.wbxml"}, "\3\1j\0")
end
LUA
# us converts wrk's latency (850.00us, 1.20ms, 2.00s) to microseconds.
us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /s$/) print n*1000000; else print n }'; }
echo "audit ${AUDIT:-all}; nproc $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c$CONNS -d${SECS}s --latency"
for r in $(seq "$ROUNDS"); do
  for v in ceiling:$P_CEIL proxied:$P_PROX authnull:$P_NULL gated:$P_GATE; do
    name=${v%%:*}; port=${v##*:}
    prof=""
    if [ -n "${PROFILE:-}" ] && [ "$name" = gated ] && [ "$r" = 1 ]; then
      curl -s -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$P_PPROF/debug/pprof/profile?seconds=$((SECS > 2 ? SECS - 1 : 1))" -o gated.pprof &
      prof=$!
    fi
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s varied.lua "http://127.0.0.1:$port")
    [ -n "$prof" ] && wait "$prof"
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    echo "round $r $name: $rps req/s, p50 $p50, p99 $p99, non-2xx ${non2xx:-0}, load $(cut -d' ' -f1 /proc/loadavg)"
    eval "rps_$name=$rps p99_$name=$(us "$p99")"
  done
  awk -v r="$r" -v c="$rps_ceiling" -v p="$rps_proxied" -v n="$rps_authnull" -v g="$rps_gated" -v pp="$p99_proxied" -v pn="$p99_authnull" -v pg="$p99_gated" 'BEGIN {
    printf "round %s: gated/ceiling %.0f %%, gated/proxied %.0f %%, gated/authnull %.0f %%, authnull/ceiling %.0f %%; p99 added by the gate %.2f ms (gated - proxied), %.2f ms (gated - authnull)\n",
      r, 100*g/c, 100*g/p, 100*g/n, 100*n/c, (pg-pp)/1000, (pg-pn)/1000 }'
done
kill $MP; wait $MP 2>/dev/null || true
grep -o 'gate stopped.*' serve.log || true
