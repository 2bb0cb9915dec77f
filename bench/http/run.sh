#!/usr/bin/env bash
# bench/http/run.sh measures docket's HTTP API with wrk, client and server on
# the same machine over loopback, next to a bare net/http handler measured in
# the same run as the ceiling. See bench/http/README.md.
#
#   bench/http/run.sh                      # from anywhere in the repository
#   DURATION=10 THREADS=2 CONNS=50 bench/http/run.sh
#   DOCKET_BIN=/path/to/docket bench/http/run.sh   # use a prebuilt binary
#
# Every server gets a fresh temporary data directory and a free loopback port
# (it listens on 127.0.0.1:0 and the script reads the address it logs). Every
# step is bounded by a timeout, and the servers are stopped on exit, however
# the script ends.
set -euo pipefail

DURATION=${DURATION:-10} # seconds per wrk run
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
for tool in go wrk curl jq timeout; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (wrk: apt-get install -y wrk)" >&2; exit 1; }
done

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/docket-http-bench.XXXXXX")
PIDS=()

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	if [[ ${KEEP:-} == 1 ]]; then echo "run.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in the background, logging to $WORK/NAME.log,
# waits (at most 15 s) for the address it listens on and for /healthz, and
# sets URL and PID.
start() {
	local name=$1 i
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	PID=$!
	PIDS+=("$PID")
	URL=
	for ((i = 0; i < 150; i++)); do
		# The address the server listens on, not one it merely names (the
		# gateway logs its upstream's).
		URL=$(grep -o -m1 -E '(url=|listening on )http://127\.0\.0\.1:[0-9]+' "$WORK/$name.log" | grep -o 'http://.*' || true)
		if [[ -n $URL ]] && curl -fs --max-time 1 "$URL/healthz" >/dev/null; then
			return 0
		fi
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "run.sh: $name did not become healthy; its log:" >&2
	cat "$WORK/$name.log" >&2
	exit 1
}

stop() { # stops the server started last
	local p keep=()
	stop_pid "$PID"
	for p in "${PIDS[@]}"; do [[ $p == "$PID" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# counts QUEUE: "stored ran concurrency" of a queue, from GET /v1/queues.
counts() {
	curl -fs --max-time 5 "$URL/v1/queues" | jq -r --arg q "$1" '.queues[] | select(.name == $q) |
		"\(.counts.queued + .counts.running + .counts.succeeded + .counts.failed + .counts.canceled) \(.counts.succeeded + .counts.failed) \(.concurrency)"'
}

# wrk_run NAME URL [LUA]: one wrk run, once the machine is quiet; its output
# goes to $WORK/NAME.wrk and is echoed.
wrk_run() {
	local name=$1 url=$2 lua=${3:-}
	local args=(-t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency --timeout 5s)
	[[ -n $lua ]] && args+=(-s "$lua")
	quiet "$name"
	echo "\$ wrk ${args[*]} $url"
	cpu_snapshot >"$WORK/$name.cpu0"
	timeout $((DURATION + 30)) wrk "${args[@]}" "$url" >"$WORK/$name.wrk"
	cpu_snapshot >"$WORK/$name.cpu1"
	cat "$WORK/$name.wrk"
	awk -v a="$(cat "$WORK/$name.cpu0")" -v b="$(cat "$WORK/$name.cpu1")" -v name="$name" 'BEGIN {
		split(a, x); split(b, y); t = y[1] - x[1]; if (t <= 0) exit
		busy = y[2] - x[2]; srv = y[3] - x[3]; cl = y[4] - x[4]; other = busy - srv - cl
		if (other < 0) other = 0
		printf "CPU during the run, share of the whole machine: server %d%%, wrk %d%%, anything else %d%%, idle %d%%\n",
			100 * srv / t, 100 * cl / t, 100 * other / t, 100 * (t - busy) / t
		printf "%d\n", 100 * other / t > "/dev/stderr"
	}' 2>"$WORK/$name.other"
	local other
	other=$(cat "$WORK/$name.other")
	if ((${other:-0} >= 5)); then
		NOTES+=("$name: other processes took ${other}% of the machine during the run")
	fi
}


# to_ms VALUE: wrk's latency (850.00us, 2.31ms, 1.02s, 1.50m) in ms.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
		if (f < 0) { print "nan"; exit }
		printf "%.3f", n * f
	}'
}

# field NAME WHAT: req/s, p50, p99, total requests, non-2xx or socket errors
# of a finished run.
field() {
	local f=$WORK/$1.wrk
	case $2 in
	rps) awk '/^Requests\/sec:/ {print $2}' "$f" ;;
	p50) awk '$1 == "50%" {print $2}' "$f" ;;
	p99) awk '$1 == "99%" {print $2}' "$f" ;;
	total) awk '/ requests in / {print $1}' "$f" ;;
	non2xx) awk '/Non-2xx or 3xx responses:/ {n = $NF} END {print n + 0}' "$f" ;;
	errors) awk '/Socket errors:/ {sub(/^ *Socket errors: */, ""); print}' "$f" ;;
	esac
}

ROWS=()
# row NAME LABEL BARE-NAME: a line of the summary table.
row() {
	local name=$1 label=$2 bare=$3 rps ratio
	rps=$(field "$name" rps)
	ratio=$(awk -v a="$rps" -v b="$(field "$bare" rps)" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
	ROWS+=("$(printf '%-13s %-46s %9s %9s %9s %7s %7s' "$name" "$label" "$rps" "$(field "$name" p50)" "$(field "$name" p99)" \
		"$(field "$name" non2xx)" "$ratio")")
	local errs
	errs=$(field "$name" errors)
	[[ -z $errs ]] || NOTES+=("$name: socket errors: $errs")
}

# submit_case NAME LABEL QUEUE DOCKET-ARGS...: a fresh server, wrk POSTs to
# QUEUE, then what the store holds afterwards.
submit_case() {
	local name=$1 label=$2 queue=$3 before after stored ran conc wrk2xx
	shift 3
	start "$name" "$DOCKET" serve --data-dir "$WORK/$name.data" --listen 127.0.0.1:0 --shutdown-grace 5s "$@"
	echo
	echo "== $label: $URL"
	before=$(counts "$queue")
	wrk_run "$name" "$URL/v1/queues/$queue/jobs" "$HERE/submit.lua"
	after=$(counts "$queue")
	read -r stored ran conc <<<"$after"
	wrk2xx=$(($(field "$name" total) - $(field "$name" non2xx)))
	echo "store after the run: $stored jobs stored (wrk counted $wrk2xx accepted), $ran finished during the run" \
		"($((ran / DURATION)) jobs/s), queue concurrency as served: $conc (before: $before)"
	stop
	if ((conc == 0)) && [[ $queue == echo ]]; then
		label="$label NOT RUN"
		NOTES+=("$name: docket served the echo queue with concurrency 0: its jobs were stored, not run")
	fi
	if ((stored < wrk2xx)); then
		NOTES+=("$name: the store holds $stored jobs but wrk counted $wrk2xx accepted submits")
	fi
	row "$name" "$label" bare-post
	if ((ran > 0)); then
		NOTES+=("$name: $ran jobs finished during the ${DURATION} s run ($((ran / DURATION))/s); $((stored - ran)) left")
	fi
}

echo "docket HTTP benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(uname -sr), $(go env GOVERSION)," \
	"$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'); wrk: $THREADS threads, $CONNS connections, ${DURATION} s per run"
cd "$ROOT"
docket_binary "$WORK"
timeout 300 go build -o "$WORK/bare" ./bench/http/bare
timeout 300 go build -o "$WORK/proxy" ./bench/http/proxy

# The ceiling: a bare net/http handler, answering GET and POST.
start bare "$WORK/bare" -listen 127.0.0.1:0
echo
echo "== bare net/http handler: $URL"
wrk_run bare-get "$URL/"
sleep 1
wrk_run bare-post "$URL/v1/queues/bench/jobs" "$HERE/submit.lua"
stop
row bare-get "bare handler, GET /" bare-get
row bare-post "bare handler, POST (submit.lua)" bare-post
sleep 1

# Submit, jobs stored only (queue bench, concurrency 0).
submit_case submit-store "submit, store only (concurrency 0)" bench --config "$HERE/submit.yaml"
sleep 1
# Submit to the echo demo queue (no config: concurrency 1), which runs them.
submit_case submit-echo1 "submit, echo demo queue (concurrency 1)" echo
sleep 1
# Submit to the echo queue with concurrency 8, from a config file.
printf 'queues:\n  echo:\n    concurrency: 8\n' >"$WORK/echo8.yaml"
submit_case submit-echo8 "submit, echo, concurrency 8 (config)" echo --config "$WORK/echo8.yaml"
sleep 1

# GET /v1/jobs/{id} on an existing job: a queued one (store only; the
# answer includes its position in the queue) and a finished one (echo).
start get "$DOCKET" serve --data-dir "$WORK/get.data" --listen 127.0.0.1:0 --shutdown-grace 5s --config "$HERE/submit.yaml"
ID=$(curl -fs --max-time 5 -H 'Content-Type: application/json' -d '{"task":"bench","n":42}' "$URL/v1/queues/bench/jobs" | jq -r .id)
echo
echo "== GET /v1/jobs/{id}, queued job: $URL, job $ID ($(curl -fs --max-time 5 "$URL/v1/jobs/$ID" | jq -r .state))"
wrk_run get "$URL/v1/jobs/$ID"
stop
row get "GET /v1/jobs/{id}, queued job" bare-get
sleep 1
start get-done "$DOCKET" serve --data-dir "$WORK/get-done.data" --listen 127.0.0.1:0 --shutdown-grace 5s
ID=$(curl -fs --max-time 15 -H 'Content-Type: application/json' -H 'Prefer: wait=10' -d '{"task":"bench","n":42}' \
	"$URL/v1/queues/echo/jobs" | jq -r .id)
echo
echo "== GET /v1/jobs/{id}, finished job: $URL, job $ID ($(curl -fs --max-time 5 "$URL/v1/jobs/$ID" | jq -r .state))"
wrk_run get-done "$URL/v1/jobs/$ID"
stop
row get-done "GET /v1/jobs/{id}, finished job" bare-get

# The gateway: pass-through next to httputil.ReverseProxy alone, in front of
# the same bare upstream, one request at a time (latency) and 50 at once;
# then asynchronous requests, recorded and answered 202.
start upstream "$WORK/bare" -listen 127.0.0.1:0
UPSTREAM=$URL
UPSTREAM_PID=$PID
start proxy "$WORK/proxy" -listen 127.0.0.1:0 -upstream "$UPSTREAM"
echo
echo "== httputil.ReverseProxy alone: $URL -> $UPSTREAM"
THREADS=1 CONNS=1 wrk_run proxy-seq "$URL/api/items"
sleep 1
wrk_run proxy "$URL/api/items"
stop
row proxy-seq "ReverseProxy alone, GET, 1 connection" bare-get
row proxy "ReverseProxy alone, GET" bare-get
sleep 1
start gateway "$DOCKET" serve --data-dir "$WORK/gateway.data" --listen 127.0.0.1:0 --shutdown-grace 5s \
	--config "$HERE/gateway.yaml" --upstream "$UPSTREAM"
echo
echo "== docket gateway, pass-through: $URL -> $UPSTREAM"
THREADS=1 CONNS=1 wrk_run gateway-seq "$URL/api/items"
sleep 1
wrk_run gateway "$URL/api/items"
sleep 1
echo
echo "== docket gateway, asynchronous requests (X-Async-Request: true), recorded only"
before=$(counts http)
wrk_run gateway-async "$URL/reports" "$HERE/async.lua"
read -r stored _ _ <<<"$(counts http)"
echo "store after the run: $stored requests recorded (before: $before)"
stop
PID=$UPSTREAM_PID
stop
row gateway-seq "gateway pass-through, GET, 1 connection" proxy-seq
row gateway "gateway pass-through, GET" proxy
row gateway-async "gateway async accept (202), POST" bare-post

echo
echo "== summary (req/s; p50, p99 latency as wrk reports them; ratio to the bare handler, same method)"
printf '%-13s %-46s %9s %9s %9s %7s %7s\n' case '' req/s p50 p99 non-2xx "vs bare"
printf '%s\n' "${ROWS[@]}"
check() { # check NAME LABEL MIN-RPS [MAX-P99-MS]
	local rps p99 ok=met
	rps=$(field "$1" rps)
	p99=$(to_ms "$(field "$1" p99)")
	awk -v r="$rps" -v m="$3" 'BEGIN { exit !(r >= m) }' || ok="NOT met"
	if [[ -n ${4:-} ]]; then
		awk -v p="$p99" -v m="$4" 'BEGIN { exit !(p <= m) }' || ok="NOT met"
		echo "target $2 >= $3 req/s, p99 <= $4 ms: $ok ($rps req/s, p99 $p99 ms)"
	else
		echo "target $2 >= $3 req/s: $ok ($rps req/s)"
	fi
}
check submit-store "submit (store only)" 10000 20
check get "GET /v1/jobs/{id} (queued job)" 20000
check get-done "GET /v1/jobs/{id} (finished job)" 20000
check gateway-async "gateway async accept (202)" 10000
p50proxy=$(to_ms "$(field proxy-seq p50)")
p50gw=$(to_ms "$(field gateway-seq p50)")
awk -v a="$p50gw" -v b="$p50proxy" 'BEGIN {
	extra = 100 * (a - b) / b
	printf "target gateway pass-through p50 <= 1.10 x ReverseProxy alone (1 connection): %s (%.3f ms vs %.3f ms, %+.1f%%)\n",
		(a <= 1.10 * b ? "met" : "NOT met"), a, b, extra
}'
if ((${#NOTES[@]})); then
	echo "notes:"
	printf '  %s\n' "${NOTES[@]}"
fi
