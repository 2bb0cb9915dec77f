#!/usr/bin/env bash
# bench/compare/run.sh measures docket and River side by side on the same
# PostgreSQL server, in one process and one run: drain, concurrent inserts
# while working, idle latency; the systems alternate round by round. See
# bench/compare/README.md.
#
#   bench/compare/run.sh                          # from anywhere in the repository
#   PG_URL=postgres://user@host:5432/db bench/compare/run.sh
#   bench/compare/run.sh -rounds 5 -jobs 100000   # extra flags go to the program
#
# Every step is bounded by a timeout. The program creates a schema of its
# own for every measurement and drops it after; the server is not changed
# otherwise (it runs CHECKPOINT between measurements, see -checkpoint).
set -euo pipefail

PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
RUN_TIMEOUT=${RUN_TIMEOUT:-3000} # seconds for the whole measurement

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for tool in go timeout psql; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 1; }
done

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/docket-compare.XXXXXX")
cleanup() {
	if [[ ${KEEP:-} == 1 ]]; then echo "run.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! timeout 15 psql "$PG_URL" -Atqc 'SELECT 1' >/dev/null; then
	echo "run.sh: PostgreSQL at ${PG_URL%%\?*} does not answer (set PG_URL)" >&2
	exit 1
fi

echo "docket/River comparison: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores" \
	"($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ {print $2}') GiB," \
	"$(uname -sr), $(go env GOVERSION)"
echo "PostgreSQL: $(timeout 15 psql "$PG_URL" -Atqc 'SELECT version()')"
echo "PostgreSQL settings: $(timeout 15 psql "$PG_URL" -Atqc "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
	FROM pg_settings WHERE name IN ('autovacuum', 'fsync', 'max_connections', 'shared_buffers', 'synchronous_commit', 'wal_level', 'work_mem')")"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

cd "$HERE"
timeout 300 go build -o "$WORK/compare" .

quiet "the comparison"
set +e
timeout "$RUN_TIMEOUT" "$WORK/compare" -url "$PG_URL" -timeout "$((RUN_TIMEOUT - 60))s" "$@"
rc=$?
set -e
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((rc != 0)); then
	NOTES+=("the program exited with status $rc")
fi
if ((${#NOTES[@]})); then
	echo "notes:"
	printf '  %s\n' "${NOTES[@]}"
fi
exit "$rc"
