#!/usr/bin/env bash
# bench/sse/run.sh measures docket's job event streams (SSE) over loopback:
# 10,000 concurrent watchers, one per running job, each to see its job's
# final event within 1 s (and the server's peak RSS meanwhile), then the
# store write → client latency of progress events at about 1,000 stored
# updates/s. See bench/sse/README.md.
#
#   bench/sse/run.sh                        # from anywhere in the repository
#   WATCHERS=2000 DURATION=10 bench/sse/run.sh
#   DOCKET_BIN=/path/to/docket bench/sse/run.sh   # use a prebuilt binary
#   bench/sse/run.sh -hold                  # extra flags go to the program
#
# The server gets a fresh temporary data directory and a free loopback port
# (it listens on 127.0.0.1:0 and the script reads the address it logs). Every
# step is bounded by a timeout, and the server is stopped on exit, however
# the script ends.
set -euo pipefail

WATCHERS=${WATCHERS:-10000}       # watchers phase: jobs, one SSE stream each
STEPS=${STEPS:-3}                 # ... progress steps per job
SLEEP=${SLEEP:-10s}               # ... sleep before each step
FANOUT_JOBS=${FANOUT_JOBS:-260}   # fanout phase: jobs reporting progress
FANOUT_PER_JOB=${FANOUT_PER_JOB:-4} # ... SSE streams per job
FANOUT_ALL=${FANOUT_ALL:-2}       # ... GET /v1/events streams
FANOUT_SLEEP=${FANOUT_SLEEP:-1ms} # ... the jobs' sleep between reports
DURATION=${DURATION:-20}          # ... measurement window, seconds

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
for tool in go curl timeout; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 1; }
done

# One file descriptor per stream, on both sides: raise the limit for the
# server and the program (both inherit it), as far as the hard limit allows.
if ! ulimit -n 65536 2>/dev/null; then
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
if (($(ulimit -n) < WATCHERS + 1000)); then
	echo "run.sh: open-file limit $(ulimit -n) is too low for $WATCHERS streams; lower WATCHERS or raise the hard limit" >&2
	exit 1
fi

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/docket-sse-bench.XXXXXX")
PID=

stop_server() {
	stop_pid "$PID"
	PID=
}

cleanup() {
	stop_server
	if [[ ${KEEP:-} == 1 ]]; then echo "run.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "docket SSE benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(uname -sr), $(go env GOVERSION)," \
	"open-file limit $(ulimit -n)"
echo "watchers: $WATCHERS jobs ({\"steps\":$STEPS,\"sleep\":\"$SLEEP\"}), one SSE stream each;" \
	"fanout: $FANOUT_JOBS jobs (sleep $FANOUT_SLEEP), $FANOUT_PER_JOB streams per job, $FANOUT_ALL GET /v1/events streams, ${DURATION} s"
cd "$ROOT"
docket_binary "$WORK"
timeout 300 go build -o "$WORK/sse" ./bench/sse

# A queue named echo without a command runs the demo handler; its
# concurrency lets every job of a phase run at once.
printf 'queues:\n  echo:\n    concurrency: %d\n' $((WATCHERS > FANOUT_JOBS ? WATCHERS : FANOUT_JOBS)) >"$WORK/sse.yaml"

quiet
"$DOCKET" serve --config "$WORK/sse.yaml" --data-dir "$WORK/data" --listen 127.0.0.1:0 --shutdown-grace 5s \
	>"$WORK/server.log" 2>&1 &
PID=$!
URL=
for ((i = 0; i < 150; i++)); do
	URL=$(grep -o -m1 'http://127\.0\.0\.1:[0-9]*' "$WORK/server.log" || true)
	if [[ -n $URL ]] && curl -fs --max-time 1 "$URL/healthz" >/dev/null; then
		break
	fi
	URL=
	kill -0 "$PID" 2>/dev/null || break
	sleep 0.1
done
if [[ -z $URL ]]; then
	echo "run.sh: the server did not become healthy; its log:" >&2
	cat "$WORK/server.log" >&2
	exit 1
fi
echo "server: $URL, pid $PID, data in $WORK/data"
echo

# The program's own summary is printed below, once the server is stopped.
set +e
timeout 900 "$WORK/sse" -url "$URL" -server-pid "$PID" \
	-watchers "$WATCHERS" -steps "$STEPS" -sleep "$SLEEP" \
	-fanout-jobs "$FANOUT_JOBS" -fanout-per-job "$FANOUT_PER_JOB" -fanout-all "$FANOUT_ALL" \
	-fanout-sleep "$FANOUT_SLEEP" -duration "${DURATION}s" -timeout 840s "$@" 2>&1 \
	| tee "$WORK/sse.out" | sed -u '/^== summary$/,$d'
rc=${PIPESTATUS[0]}
set -e
HWM=$(awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$PID/status" 2>/dev/null || true)
stop_server
errors=$(grep -c 'level=ERROR' "$WORK/server.log" || true)

echo
echo "== summary"
sed -n '/^== summary$/,$p' "$WORK/sse.out" | tail -n +2
echo "server: peak RSS over the whole run (VmHWM) ${HWM:-unknown}; ${errors:-0} errors logged"
if ((rc != 0)); then
	NOTES+=("the load program exited with status $rc")
fi
if ((errors > 0)); then
	NOTES+=("the server logged $errors errors: $(grep -m1 'level=ERROR' "$WORK/server.log")")
fi
if ((${#NOTES[@]})); then
	echo "notes:"
	printf '  %s\n' "${NOTES[@]}"
fi
exit "$rc"
