#!/usr/bin/env bash
# bench.sh: the benchmark behind `make bench`.
#
# Builds tally, starts one node on 127.0.0.1 with a fresh data directory, and
# drives it with `tally load`:
#   (a) single durable view POSTs  --mode view  --conns 64
#   (b) reads of those videos      --mode get   --conns 64
#   (c) batch ingest               --mode batch --batch 1000 --conns 4
# then prints a summary table. Each run lasts BENCH_DURATION (default 10s).
# The server is stopped (SIGTERM, then SIGKILL after a deadline) and the temp
# directory deleted on exit, whatever happens. Only 127.0.0.1 is ever targeted.
set -euo pipefail

DURATION="${BENCH_DURATION:-10s}"
READY_DEADLINE=30 # seconds to wait for /readyz
STOP_DEADLINE=20  # seconds to wait for the server to exit after SIGTERM

cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v curl >/dev/null || { echo "bench: curl is required" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tally-bench.XXXXXX")"
SERVER_PID=""
LOAD_PID=""
LOAD_OUT=""

cleanup() {
	local status=$?
	if [[ -n "$LOAD_PID" ]] && kill -0 "$LOAD_PID" 2>/dev/null; then
		kill -TERM "$LOAD_PID" 2>/dev/null || true # it stops at once, reporting what it did
		wait "$LOAD_PID" 2>/dev/null || true
		cat "$LOAD_OUT" 2>/dev/null || true
	fi
	if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		local waited=0
		while kill -0 "$SERVER_PID" 2>/dev/null && ((waited < STOP_DEADLINE * 10)); do
			sleep 0.1
			waited=$((waited + 1))
		done
		if kill -0 "$SERVER_PID" 2>/dev/null; then
			echo "bench: server did not stop within ${STOP_DEADLINE}s; sending SIGKILL" >&2
			kill -KILL "$SERVER_PID" 2>/dev/null || true
		fi
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== building tally"
go build -o "$TMP/tally" ./cmd/tally

# A port is free if nothing accepts a connection on it.
PORT=""
for p in $(seq 18080 18179); do
	if ! (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		PORT=$p
		break
	fi
done
[[ -n "$PORT" ]] || { echo "bench: no free port in 18080-18179" >&2; exit 1; }
BASE="http://127.0.0.1:$PORT"

echo "== starting tally serve on $BASE (data in $TMP/data)"
"$TMP/tally" serve --data "$TMP/data" --http "127.0.0.1:$PORT" >"$TMP/serve.log" 2>&1 &
SERVER_PID=$!

ready=""
for ((i = 0; i < READY_DEADLINE * 10; i++)); do
	if ! kill -0 "$SERVER_PID" 2>/dev/null; then
		echo "bench: server exited before becoming ready; its log:" >&2
		cat "$TMP/serve.log" >&2
		exit 1
	fi
	if curl -fsS -o /dev/null --max-time 1 "$BASE/readyz" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
if [[ -z "$ready" ]]; then
	echo "bench: $BASE/readyz not ready within ${READY_DEADLINE}s; server log:" >&2
	cat "$TMP/serve.log" >&2
	exit 1
fi

failed=0
LABELS=()
# bench LABEL ARGS...: run one load, print it, keep its report line.
bench() {
	local label=$1
	shift
	local out="$TMP/result.${#LABELS[@]}"
	LOAD_OUT=$out
	echo
	echo "== $label: tally load $*"
	# In the background so that a signal to this script is handled at once
	# (bash runs traps only between foreground commands); cleanup stops it.
	"$TMP/tally" load --target "$BASE" --duration "$DURATION" "$@" >"$out" &
	LOAD_PID=$!
	if ! wait "$LOAD_PID"; then
		echo "bench: $label: load reported failures" >&2
		failed=1
	fi
	LOAD_PID=""
	cat "$out"
	LABELS+=("$label")
}

bench "view POST (durable)" --mode view --conns 64 --seed 1
bench "GET" --mode get --conns 64 --seed 2
bench "batch ingest x1000" --mode batch --batch 1000 --conns 4 --seed 3

# field NAME FILE: the value of NAME=... on the report line of FILE.
field() {
	awk -v key="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if (index($i, key "=") == 1) { print substr($i, length(key) + 2); exit } }' "$1"
}

echo
echo "== summary ($DURATION per run, $(nproc 2>/dev/null || echo '?') CPUs, load generator on the same host)"
printf '%-22s %12s %10s %12s %8s\n' "run" "req/s" "p99" "views/s" "errors"
for i in "${!LABELS[@]}"; do
	out="$TMP/result.$i"
	printf '%-22s %12s %10s %12s %8s\n' "${LABELS[$i]}" \
		"$(field "$out" req/s)" "$(field "$out" p99)" "$(field "$out" views/s)" "$(field "$out" errors)"
done

if ((failed)); then
	echo "bench: some runs had failed requests; server log tail:" >&2
	tail -n 20 "$TMP/serve.log" >&2
	exit 1
fi
