# bench/lib.sh: shell functions shared by the benchmark scripts
# (bench/http/run.sh, bench/sse/run.sh, bench/compare/run.sh, bench/pdf/run.sh); sourced, not run.

# stop_pid PID: SIGTERM, up to 15 s to exit, then SIGKILL.
stop_pid() {
	local pid=$1 i
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "run.sh: server $pid did not stop within 15 s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# busy: how busy the machine's CPUs are (percent) over half a second.
busy() {
	local a b
	read -r -a a </proc/stat
	sleep 0.5
	read -r -a b </proc/stat
	awk -v a="${a[*]}" -v b="${b[*]}" 'BEGIN {
		split(a, x); split(b, y); t = 0
		for (i = 2; i <= 9; i++) t += y[i] - x[i]
		idle = (y[5] - x[5]) + (y[6] - x[6])
		printf "%d", (t > 0 ? 100 * (t - idle) / t : 0)
	}'
}

# quiet [WHAT]: waits (at most QUIET_WAIT s) for the machine to be idle
# before a run, since anything else running takes CPU from client and
# server; if it stays busy, a note goes to NOTES.
QUIET_WAIT=${QUIET_WAIT:-60}
NOTES=()
quiet() {
	local what=${1:-the run} b i
	for ((i = 0; i < QUIET_WAIT * 2; i++)); do
		b=$(busy)
		((b < 15)) && return 0
	done
	echo "run.sh: the machine is ${b}% busy before $what" >&2
	NOTES+=("$what: the machine was ${b}% busy before the run (something else running): run again")
}

# cpu_snapshot [children]: "machine-total machine-busy server this-shell"
# CPU ticks so far: the machine's (all CPUs), the server $PID's (with
# "children", also that of its finished children, such as the tools it
# waited for) and that of this shell's finished children (wrk, tools run by
# hand). Call it in this shell, not in $(...): a subshell would count its
# own children only. Needs $WORK.
cpu_snapshot() {
	local cpu srv=0 fields='$14 + $15'
	[[ ${1:-} == children ]] && fields='$14 + $15 + $16 + $17'
	read -r -a cpu </proc/stat
	[[ -r /proc/$PID/stat ]] && srv=$(awk "{print $fields}" "/proc/$PID/stat")
	times >"$WORK/times"
	awk -v c="${cpu[*]}" -v srv="$srv" -v hz="$(getconf CLK_TCK)" 'NR == 2 {
		split(c, x); t = 0; for (i = 2; i <= 9; i++) t += x[i]
		idle = x[5] + x[6]
		gsub(/[ms]/, " "); ch = ($1 * 60 + $2 + $3 * 60 + $4) * hz
		printf "%d %d %d %d", t, t - idle, srv, ch
	}' "$WORK/times"
}

# docket_binary DIR: sets DOCKET to $DOCKET_BIN when given (a prebuilt
# binary), else builds ./cmd/docket into DIR; run from the repository root.
docket_binary() {
	if [[ -n ${DOCKET_BIN:-} ]]; then
		DOCKET=$DOCKET_BIN
		echo "docket: $DOCKET (prebuilt)"
	else
		DOCKET=$1/docket
		timeout 300 go build -o "$DOCKET" ./cmd/docket
	fi
}
