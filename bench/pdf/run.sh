#!/usr/bin/env bash
# bench/pdf/run.sh measures docket's PDF queues on a real document against
# the same tools run by hand: what docket adds to pdftoppm and tesseract,
# and whether its scheduling of pages and documents keeps the cores as
# busy as the best hand-made parallelism. See bench/pdf/README.md.
#
#   bench/pdf/run.sh                       # from anywhere in the repository
#   ROUNDS=1 DOCS=4 bench/pdf/run.sh       # quicker
#   PDF=/path/to/scan.pdf DPI=200 bench/pdf/run.sh
#   DOCKET_BIN=/path/to/docket bench/pdf/run.sh   # use a prebuilt binary
#
# docket runs as `docket serve --app pdf` on a fresh temporary data
# directory and a free loopback port; documents go through its HTTP API.
# Every step is bounded by a timeout, and the server is stopped on exit,
# however the script ends.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-3}                            # each measurement this many times; medians reported
DOCS=${DOCS:-8}                                # documents submitted at once in the throughput cases
DPI=${DPI:-150}                                # docket's default
PDF=${PDF:-$ROOT/internal/pdfapp/testdata/regal-17pages.pdf}
NCPU=$(nproc) # before OMP_THREAD_LIMIT is set below: nproc obeys it
P=${P:-$NCPU}                                  # parallelism by hand (docket: its slots, one per core)
CASES=${CASES:-render1 ocr1 render8 ocr8}

for tool in go curl jq pdfinfo pdftoppm tesseract xargs timeout; do
	command -v "$tool" >/dev/null || {
		echo "run.sh: $tool not found (scripts/install-pdf-tools.sh installs the PDF tools)" >&2
		exit 1
	}
done
[[ -r $PDF ]] || { echo "run.sh: cannot read $PDF" >&2; exit 1; }

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/docket-pdf-bench.XXXXXX")
PID=
cleanup() {
	stop_pid "$PID"
	if [[ ${KEEP:-} == 1 ]]; then echo "run.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PAGES=$(pdfinfo "$PDF" | awk '/^Pages:/ {n = $2} END {print n + 0}')
((PAGES > 0)) || { echo "run.sh: pdfinfo found no pages in $PDF" >&2; exit 1; }
export OMP_THREAD_LIMIT=1 # tesseract by hand as docket runs it: one thread, parallel pages

echo "docket PDF benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $NCPU cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr), $(go env GOVERSION)"
echo "$(pdftoppm -v 2>&1 | head -1), $(tesseract --version 2>&1 | head -1); document $(basename "$PDF"): $PAGES pages, $(stat -c %s "$PDF") bytes;" \
	"$DPI DPI; by hand: $P processes at once; $ROUNDS rounds, $DOCS documents in the throughput cases"
cd "$ROOT"
docket_binary "$WORK"

"$DOCKET" serve --app pdf --data-dir "$WORK/data" --listen 127.0.0.1:0 --shutdown-grace 5s >"$WORK/server.log" 2>&1 &
PID=$!
URL=
for ((i = 0; i < 150; i++)); do
	URL=$(grep -o -m1 'http://127\.0\.0\.1:[0-9]*' "$WORK/server.log" || true)
	if [[ -n $URL ]] && curl -fs --max-time 1 "$URL/healthz" >/dev/null; then break; fi
	URL=
	kill -0 "$PID" 2>/dev/null || break
	sleep 0.1
done
if [[ -z $URL ]]; then
	echo "run.sh: the server did not become healthy; its log:" >&2
	cat "$WORK/server.log" >&2
	exit 1
fi
grep -m1 'PDF app: tools found' "$WORK/server.log" | sed 's/^.*msg=/server: /'
echo "server: $URL, pid $PID, data in $WORK/data"

# --- docket, through the HTTP API

# submit QUEUE: submits the document, prints the job id.
submit() {
	curl -fsS --max-time 60 -X POST "$URL/v1/queues/$1/jobs?label=dpi:$DPI" -H 'Content-Type: application/pdf' \
		--data-binary "@$PDF" | jq -r .id
}

# docket_run QUEUE N: N documents submitted at once, until all are done.
# The end is seen on one stream of the finished jobs' events (GET
# /v1/events?state=...), opened before the submits: a long poll per job
# would wake the client (a curl and a jq) at every page of every job, and
# take CPU from the tools.
docket_run() {
	local queue=$1 n=$2 i pids=() p cpid rc=0
	rm -f "$WORK/events" "$WORK/ids"
	mkfifo "$WORK/events"
	: >"$WORK/ids"
	curl -sN --max-time 1800 "$URL/v1/events?queue=$queue&state=succeeded,failed,canceled" >"$WORK/events" &
	cpid=$!
	exec 3<"$WORK/events"
	for ((i = 0; i < n; i++)); do
		submit "$queue" >"$WORK/id.$i" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p"; done
	for ((i = 0; i < n; i++)); do cat "$WORK/id.$i"; done >"$WORK/ids"
	# Each data line is a job that ended; ours are in the ids file.
	awk -v n="$n" -v idfile="$WORK/ids" '
		BEGIN { while ((getline id < idfile) > 0) if (id != "") ours[id] = 1 }
		/^data: / {
			if (!match($0, /"id":"[^"]*"/)) next
			id = substr($0, RSTART + 6, RLENGTH - 7)
			if (!(id in ours) || (id in done)) next
			done[id] = 1; count++
			if ($0 !~ /"state":"succeeded"/) { print "run.sh: job " id " did not succeed: " $0 > "/dev/stderr"; exit 1 }
			if (count == n) exit 0
		}
		END { if (count < n) exit 1 }' <&3 || rc=$?
	exec 3<&-
	kill "$cpid" 2>/dev/null || true
	wait "$cpid" 2>/dev/null || true
	((rc == 0)) || { echo "run.sh: docket: the jobs did not all succeed" >&2; return 1; }
	# The pages are there: one image per page.
	while read -r i; do
		local got
		got=$(curl -fsS "$URL/v1/jobs/$i" | jq -r .artifacts)
		((got == PAGES)) || { echo "run.sh: job $i has $got images, want $PAGES" >&2; return 1; }
	done <"$WORK/ids"
}

# --- by hand: the same programs with the same options

# hand_ranges: pdftoppm on P contiguous page ranges at once.
hand_ranges() {
	local out=$1 per f l pids=() p
	pdfinfo "$PDF" >/dev/null
	per=$(((PAGES + P - 1) / P))
	for ((f = 1; f <= PAGES; f += per)); do
		l=$((f + per - 1 > PAGES ? PAGES : f + per - 1))
		pdftoppm -r "$DPI" -png -f "$f" -l "$l" "$PDF" "$out/p" &
		pids+=($!)
	done
	# Not a bare wait: the server is a child of this shell too.
	for p in "${pids[@]}"; do wait "$p"; done
	check_out "$out" "$PAGES"
}

# hand_pages: one pdftoppm per page, P at once.
hand_pages() {
	local out=$1
	pdfinfo "$PDF" >/dev/null
	seq 1 "$PAGES" | xargs -P "$P" -I{} pdftoppm -r "$DPI" -png -f {} -l {} "$PDF" "$out/p"
	check_out "$out" "$PAGES"
}

# hand_ocr_serial: the commands docket runs for pdf.ocr, one after the
# other: pdfinfo, pdftoppm on the whole document, tesseract on each page.
hand_ocr_serial() {
	local out=$1 img
	pdfinfo "$PDF" >/dev/null
	pdftoppm -r "$DPI" -png "$PDF" "$out/p"
	for img in "$out"/p-*.png; do
		tesseract "$img" stdout -l eng --dpi "$DPI" >"${img%.png}.txt" 2>/dev/null
	done
	check_out "$out" "$PAGES" ocr
}

# page_job DIR PAGE [ocr]: one page of a document, rendered (and read).
export PDF DPI
page_job() {
	pdftoppm -r "$DPI" -png -f "$2" -l "$2" -singlefile "$PDF" "$1/p-$2"
	if [[ ${3:-} == ocr ]]; then
		tesseract "$1/p-$2.png" stdout -l eng --dpi "$DPI" >"$1/p-$2.txt" 2>/dev/null
	fi
}
export -f page_job

# hand_many OUT N [ocr]: N documents, every page of every one a task, P
# tasks at once: the cores stay busy to the last page.
hand_many() {
	local out=$1 n=$2 mode=${3:-} d p
	for ((d = 0; d < n; d++)); do
		mkdir -p "$out/$d"
		pdfinfo "$PDF" >/dev/null
		# No trailing blank: xargs -L would join the next line to it.
		for ((p = 1; p <= PAGES; p++)); do echo "$out/$d $p${mode:+ $mode}"; done
	done | xargs -P "$P" -L1 bash -c 'page_job "$@"' _
	check_out "$out" $((n * PAGES)) "$mode"
}

# check_out DIR N [ocr]: the work by hand made N images (and texts).
check_out() {
	local got
	got=$(find "$1" -name '*.png' | wc -l)
	((got == $2)) || { echo "run.sh: by hand: $got images in $1, want $2" >&2; return 1; }
	if [[ ${3:-} == ocr ]]; then
		got=$(find "$1" -name '*.txt' | wc -l)
		((got == $2)) || { echo "run.sh: by hand: $got texts in $1, want $2" >&2; return 1; }
	fi
}

# --- measuring

RESULTS=$WORK/results
: >"$RESULTS"


# measure NAME ROUND CMD...: runs CMD (in this shell, so that its CPU is
# counted) and records in $WORK/pair its wall seconds, the CPU seconds of
# the work, and the share of the machine that other processes took
# meanwhile.
measure() {
	local name=$1 round=$2 t0 t1 c0 c1
	shift 2
	cpu_snapshot children >"$WORK/cpu0"
	t0=$(date +%s.%N)
	"$@"
	t1=$(date +%s.%N)
	cpu_snapshot children >"$WORK/cpu1"
	c0=$(cat "$WORK/cpu0")
	c1=$(cat "$WORK/cpu1")
	awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" -v name="$name" -v round="$round" 'BEGIN {
		split(a, x); split(b, y); tot = y[1] - x[1]; busy = y[2] - x[2]
		ours = (y[3] - x[3]) + (y[4] - x[4]); other = busy - ours; if (other < 0) other = 0
		printf "%s %d %.3f %.2f %d\n", name, round, t1 - t0, ours / hz, (tot > 0 ? 100 * other / tot : 0)
	}' | tee -a "$WORK/pair" | awk '{printf "  %-22s round %d: %8.2f s wall, %7.2f s CPU, others %d%% of the machine\n", $1, $2, $3, $4, $5}'
}

fresh() { rm -rf "$WORK/out" && mkdir -p "$WORK/out"; }

# run_case CASE ROUND ORDER: docket and by hand, one after the other in
# ORDER. When other processes took NOISE% or more of the machine during
# one of them, both are run again (up to RETRIES times): figures taken
# while something else ran are not comparable.
NOISE=${NOISE:-5}
RETRIES=${RETRIES:-2}
run_case() {
	local c=$1 r=$2 order=$3 side try
	for ((try = 0; try <= RETRIES; try++)); do
		: >"$WORK/pair"
		for side in $order; do
			fresh
			case $c.$side in
			render1.docket) measure render1-docket "$r" docket_run pdf.render 1 ;;
			render1.hand)
				measure render1-hand-ranges "$r" hand_ranges "$WORK/out"
				fresh
				measure render1-hand-pages "$r" hand_pages "$WORK/out"
				;;
			ocr1.docket) measure ocr1-docket "$r" docket_run pdf.ocr 1 ;;
			ocr1.hand)
				measure ocr1-hand-serial "$r" hand_ocr_serial "$WORK/out"
				fresh
				measure ocr1-hand-pages "$r" hand_many "$WORK/out" 1 ocr
				;;
			render8.docket) measure render"$DOCS"-docket "$r" docket_run pdf.render "$DOCS" ;;
			render8.hand) measure render"$DOCS"-hand-pages "$r" hand_many "$WORK/out" "$DOCS" ;;
			ocr8.docket) measure ocr"$DOCS"-docket "$r" docket_run pdf.ocr "$DOCS" ;;
			ocr8.hand) measure ocr"$DOCS"-hand-pages "$r" hand_many "$WORK/out" "$DOCS" ocr ;;
			esac
		done
		if ! awk -v lim="$NOISE" '$5 >= lim {bad = 1} END {exit bad}' "$WORK/pair"; then
			if ((try < RETRIES)); then
				echo "  ($c, round $r: other processes took ${NOISE}% or more of the machine: measuring again)"
				RETRIED=$((RETRIED + 1))
				quiet "$c, round $r, again"
				continue
			fi
		fi
		break
	done
	cat "$WORK/pair" >>"$RESULTS"
}
RETRIED=0

# A warm-up, so that the first measured run does not pay for cold caches.
fresh
docket_run pdf.render 1 >/dev/null
hand_pages "$WORK/out" >/dev/null

for ((r = 1; r <= ROUNDS; r++)); do
	# docket first in odd rounds, by hand first in even ones, so that a
	# drift in the machine's load hits both.
	order="docket hand"
	((r % 2 == 0)) && order="hand docket"
	quiet "round $r"
	echo "== round $r ($order; load average $(cut -d' ' -f1-3 /proc/loadavg))"
	for c in $CASES; do run_case "$c" "$r" "$order"; done
done

stop_pid "$PID"
PID=
errors=$(grep -c 'level=ERROR' "$WORK/server.log" || true)

# median NAME FIELD: the median of a measurement over the rounds, with the
# lowest and highest: "median min max".
median() {
	awk -v n="$1" -v f="$2" '$1 == n {print $f}' "$RESULTS" | sort -g | awk '{v[NR] = $1} END {
		if (NR == 0) { print "- - -"; exit }
		m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%.2f %.2f %.2f", m, v[1], v[NR]
	}'
}

echo
echo "== summary: medians of $ROUNDS rounds (lowest-highest), seconds of wall time"
printf '%-24s %22s %10s %8s\n' measurement "wall s (min-max)" "CPU s" "others"
for name in $(awk '{print $1}' "$RESULTS" | awk '!seen[$0]++'); do
	read -r m lo hi <<<"$(median "$name" 3)"
	read -r cpu _ _ <<<"$(median "$name" 4)"
	read -r oth _ _ <<<"$(median "$name" 5)"
	printf '%-24s %8s (%s-%s) %10s %7.0f%%\n' "$name" "$m" "$lo" "$hi" "$cpu" "$oth"
done

ratio() { # ratio A B: median(A) / median(B)
	awk -v a="$(median "$1" 3 | cut -d' ' -f1)" -v b="$(median "$2" 3 | cut -d' ' -f1)" 'BEGIN { if (b > 0 && a != "-") printf "%.3f", a / b; else print "-" }'
}
best() { # best A B: the name with the lower median
	awk -v a="$(median "$1" 3 | cut -d' ' -f1)" -v b="$(median "$2" 3 | cut -d' ' -f1)" -v an="$1" -v bn="$2" 'BEGIN { print (a + 0 <= b + 0 ? an : bn) }'
}
verdict() { # verdict VALUE OP LIMIT
	awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { if (v == "-") print "not measured"; else if (op == "<=" ? v <= l : v >= l) print "met"; else print "NOT met" }'
}

# rounds A B...: per round, A's time over the best of the others' in the
# same round ("1.012 0.987 ..."): a pair measured back to back shares the
# machine's state, which drifts from round to round.
rounds() {
	local a=$1
	shift
	awk -v a="$a" -v bs="$*" 'BEGIN { n = split(bs, b, " "); for (i = 1; i <= n; i++) isb[b[i]] = 1 }
		$1 == a { t[$2] = $3 }
		($1 in isb) { if (!($2 in best) || $3 < best[$2]) best[$2] = $3 }
		END { for (r = 1; r in t || r in best; r++) if ((r in t) && (r in best)) printf "%.3f ", t[r] / best[r] }' "$RESULTS"
}
med() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END { if (NR) printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; else print "-" }'; }
inv() { awk -v x="$1" 'BEGIN { if (x == "-" || x == 0) print "-"; else printf "%.3f", 1 / x }'; }

echo
echo "== targets (ratios of medians; in brackets, the ratio of each round's pair and their median)"
if [[ " $CASES " == *" render1 "* ]]; then
	b=$(best render1-hand-ranges render1-hand-pages)
	x=$(ratio render1-docket "$b")
	per=$(rounds render1-docket render1-hand-ranges render1-hand-pages)
	printf 'pdf.render, one document: docket / by hand (%s) = %s: overhead %s%% (target <= 3%%): %s [rounds, docket / the better by hand: %smedian %s: %s]\n' \
		"$b" "$x" "$(awk -v x="$x" 'BEGIN { printf "%+.1f", 100 * (x - 1) }')" "$(verdict "$x" "<=" 1.03)" \
		"$per" "$(med <<<"$per")" "$(verdict "$(med <<<"$per")" "<=" 1.03)"
fi
if [[ " $CASES " == *" ocr1 "* ]]; then
	printf 'pdf.ocr, one document: docket / the same commands one after the other = %s; docket / by hand, %d pages at once = %s [rounds: %s]\n' \
		"$(ratio ocr1-docket ocr1-hand-serial)" "$P" "$(ratio ocr1-docket ocr1-hand-pages)" "$(rounds ocr1-docket ocr1-hand-pages)"
fi
for q in render ocr; do
	[[ " $CASES " == *" ${q}8 "* ]] || continue
	x=$(ratio "$q$DOCS-hand-pages" "$q$DOCS-docket")
	per=$(rounds "$q$DOCS-docket" "$q$DOCS-hand-pages")
	per=$(for v in $per; do printf '%s ' "$(inv "$v")"; done)
	printf 'pdf.%s, %d documents at once: throughput docket / by hand = %s (target >= 0.97): %s [rounds: %smedian %s: %s]\n' \
		"$q" "$DOCS" "$x" "$(verdict "$x" ">=" 0.97)" "$per" "$(med <<<"$per")" "$(verdict "$(med <<<"$per")" ">=" 0.97)"
done
echo "server: ${errors:-0} errors logged; $RETRIED measurements taken again because the machine was busy"
for name in $(awk -v lim="$NOISE" '$5 >= lim {print $1 " (round " $2 ", " $5 "%)"}' "$RESULTS" | tr ' ' '_'); do
	NOTES+=("${name//_/ }: other processes took ${NOISE}% or more of the machine during the run")
done
if ((${#NOTES[@]})); then
	echo "notes:"
	printf '  %s\n' "${NOTES[@]}"
fi
