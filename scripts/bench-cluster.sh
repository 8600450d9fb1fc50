#!/usr/bin/env bash
# bench-cluster.sh: the multi-region figures of `make bench` (also `make bench-cluster`).
#
# Builds tally, then on 127.0.0.1 only:
#   (1) ack-to-visibility: `tally cluster --regions 3 --nodes 3` (real tally
#       serve processes), then `tally bench visibility --endpoints <all 9>`:
#       BENCH_PROBES probes (default 200), each one view of a fresh video
#       written to one node (rotating) and polled for on the 8 others every
#       1ms, under a paced background load (BENCH_LOAD_RATE req/s, default
#       1000, mixed 50% GET / 50% view POST over all nodes). Once per
#       --sync-interval in BENCH_SYNC_INTERVALS (default "default 20ms":
#       the nodes' default of 100ms, then 20ms; empty skips the figure).
#   (2) repair after a partition heals: `tally bench repair --keys
#       BENCH_REPAIR_KEYS` (default 1000000; 0 skips it) starts three
#       single-node regions, SIGKILLs one, ingests the keys into another
#       (POST /v1/events, 10,000 per batch), restarts the killed node on its
#       data directory and times until its /v1/status replication.keys holds
#       every key and 100 sampled videos count 1 there.
# then prints a summary table.
#
# Every phase has a time cap. Processes are stopped by the PIDs this script
# started or that tally printed for the nodes it started (SIGTERM, then
# SIGKILL after a deadline; a PID is signalled only while its command line is
# still this run's tally binary), and the temp directory is deleted on exit,
# Ctrl-C included.
set -euo pipefail

PROBES="${BENCH_PROBES:-200}"
LOAD_RATE="${BENCH_LOAD_RATE:-1000}"
SYNC_INTERVALS="${BENCH_SYNC_INTERVALS-default 20ms}"
REPAIR_KEYS="${BENCH_REPAIR_KEYS:-1000000}"
CLUSTER_READY_DEADLINE=120 # seconds for tally cluster to start 9 nodes
VISIBILITY_CAP=240         # seconds for one tally bench visibility run
REPAIR_CAP=1200            # seconds for tally bench repair
STOP_DEADLINE=30           # seconds for a process to exit after SIGTERM

cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v timeout >/dev/null || { echo "bench-cluster: timeout (coreutils) is required" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tally-bench-cluster.XXXXXX")"
BIN="$TMP/tally"
STARTED=() # PIDs of the processes this script started

# ours PID: the process runs this run's tally binary (directly or under timeout).
ours() {
	local cmd
	cmd="$( { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null)" || return 1
	[[ "$cmd" == "$BIN "* || "$cmd" == timeout*" $BIN "* ]]
}

# stop_pid PID: SIGTERM, wait up to STOP_DEADLINE, then SIGKILL.
stop_pid() {
	local pid=$1 waited=0
	ours "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	while ours "$pid" && ((waited < STOP_DEADLINE * 10)); do
		sleep 0.1
		waited=$((waited + 1))
	done
	if ours "$pid"; then
		echo "bench-cluster: pid $pid did not stop within ${STOP_DEADLINE}s; sending SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
}

# node_pids: every node PID tally printed, "(pid N)".
node_pids() {
	cat "$TMP"/*.out 2>/dev/null | sed -n 's/.*(pid \([0-9][0-9]*\)).*/\1/p' || true
}

cleanup() {
	local status=$?
	trap - INT TERM
	local pid
	for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
		stop_pid "${STARTED[$i]}"
		wait "${STARTED[$i]}" 2>/dev/null || true
	done
	# The nodes stop with their parent; any left (the parent was killed) go now.
	for pid in $(node_pids); do
		stop_pid "$pid"
	done
	rm -rf "$TMP"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== building tally"
go build -o "$BIN" ./cmd/tally

failed=0
VIS_LABELS=()
VIS_OUTS=()
VIS_CMDS=()

# visibility LABEL SERVE_FLAGS: a 3x3 cluster, one tally bench visibility run.
visibility() {
	local label=$1 serve_flags=$2 n=${#VIS_LABELS[@]}
	local out="$TMP/cluster-$n.out" log="$TMP/cluster-$n.log" res="$TMP/visibility-$n.res"
	VIS_LABELS+=("$label")
	VIS_OUTS+=("$res")
	VIS_CMDS+=("")
	local args=(cluster --regions 3 --nodes 3 --dir "$TMP/cluster-$n")
	[[ -n "$serve_flags" ]] && args+=(--serve-flags "$serve_flags")
	local shown="tally cluster --regions 3 --nodes 3${serve_flags:+ --serve-flags \"$serve_flags\"}"
	echo
	echo "== ack-to-visibility ($label): $shown"
	# tally cluster picks ports that were free a moment before the nodes bind
	# them; a node that loses that race makes the whole cluster exit. Retry.
	local ready="" i attempt cpid
	for attempt in 1 2 3; do
		rm -rf "$TMP/cluster-$n"
		"$BIN" "${args[@]}" >"$out" 2>"$log" &
		cpid=$!
		STARTED+=("$cpid")
		for ((i = 0; i < CLUSTER_READY_DEADLINE * 10; i++)); do
			if grep -q '^Ctrl-C stops every node' "$out" 2>/dev/null; then
				ready=1
				break
			fi
			kill -0 "$cpid" 2>/dev/null || break
			sleep 0.1
		done
		[[ -n "$ready" ]] && break
		stop_pid "$cpid"
		wait "$cpid" 2>/dev/null || true
		if ((i >= CLUSTER_READY_DEADLINE * 10)); then
			echo "bench-cluster: tally cluster did not start within ${CLUSTER_READY_DEADLINE}s (attempt $attempt); its log:" >&2
		else
			echo "bench-cluster: tally cluster exited during start (attempt $attempt); its log:" >&2
		fi
		tail -n 5 "$log" >&2
	done
	if [[ -z "$ready" ]]; then
		VIS_CMDS[n]="$shown (the cluster never started)"
		failed=1
		return
	fi
	cat "$out"
	local endpoints
	endpoints="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out" | paste -sd, -)"
	local bench=(tally bench visibility --endpoints "<the 9 URLs above>" --probes "$PROBES" --load-rate "$LOAD_RATE" --label "$label")
	echo "== ${bench[*]}"
	# In the background so that a signal to this script is handled at once.
	timeout -k 30 "$VISIBILITY_CAP" "$BIN" bench visibility --endpoints "$endpoints" --probes "$PROBES" \
		--load-rate "$LOAD_RATE" --label "$label" >"$res" &
	local bpid=$!
	STARTED+=("$bpid")
	if ! wait "$bpid"; then
		echo "bench-cluster: visibility ($label) reported failures" >&2
		failed=1
	fi
	cat "$res"
	stop_pid "$cpid"
	wait "$cpid" 2>/dev/null || true
	if grep -q ' stopped$' "$out"; then :; else echo "bench-cluster: tally cluster did not report a clean stop" >&2; fi
	rm -rf "$TMP/cluster-$n"
	VIS_CMDS[n]="$shown; ${bench[*]}"
}

for sync in $SYNC_INTERVALS; do
	if [[ "$sync" == default ]]; then
		visibility "sync-interval=100ms(default)" ""
	else
		visibility "sync-interval=$sync" "--sync-interval $sync"
	fi
done

REPAIR_RES=""
REPAIR_CMD=""
if [[ "$REPAIR_KEYS" != 0 ]]; then
	REPAIR_RES="$TMP/repair.out"
	REPAIR_CMD="tally bench repair --keys $REPAIR_KEYS --batch 10000 --regions 3 --stop kill --timeout 5m"
	echo
	echo "== repair after a partition heals: $REPAIR_CMD"
	timeout -k 60 "$REPAIR_CAP" "$BIN" bench repair --keys "$REPAIR_KEYS" --batch 10000 --regions 3 --stop kill \
		--timeout 5m --dir "$TMP/repair" >"$REPAIR_RES" &
	rpid=$!
	STARTED+=("$rpid")
	if ! wait "$rpid"; then
		echo "bench-cluster: repair reported failures" >&2
		failed=1
	fi
	cat "$REPAIR_RES"
fi

# field FILE PREFIX NAME: the value of NAME=... on the line of FILE starting with PREFIX.
field() {
	awk -v pre="$2" -v key="$3" 'index($0, pre) == 1 { for (i = 1; i <= NF; i++) if (index($i, key "=") == 1) { print substr($i, length(key) + 2); exit } }' "$1" 2>/dev/null || true
}

echo
echo "== multi-region summary ($(nproc 2>/dev/null || echo '?') CPUs shared by every node, the load generator and the prober; 127.0.0.1 only)"
if ((${#VIS_LABELS[@]})); then
	echo
	echo "ack-to-visibility: view acknowledged by one node -> visible on all 8 others; 3 regions x 3 nodes (tally cluster), $PROBES probes"
	printf '%-30s %9s %9s %9s %9s %9s %15s %12s\n' "nodes' sync interval" "p50" "p90" "p99" "max" "complete" "load req/s" "load errors"
	for i in "${!VIS_LABELS[@]}"; do
		f=${VIS_OUTS[$i]}
		if [[ -z "$(field "$f" visibility: probes)" ]]; then
			printf '%-30s %9s\n' "${VIS_LABELS[$i]}" "failed: no result (see above)"
			continue
		fi
		printf '%-30s %9s %9s %9s %9s %9s %15s %12s\n' "${VIS_LABELS[$i]}" \
			"$(field "$f" visibility: p50)" "$(field "$f" visibility: p90)" "$(field "$f" visibility: p99)" \
			"$(field "$f" visibility: max)" "$(field "$f" visibility: complete)/$(field "$f" visibility: probes)" \
			"$(field "$f" visibility: load_req/s)" "$(field "$f" visibility: load_errors)"
	done
	for i in "${!VIS_CMDS[@]}"; do
		echo "  command: ${VIS_CMDS[$i]}"
	done
fi

if [[ -n "$REPAIR_RES" ]]; then
	f=$REPAIR_RES
	echo
	echo "repair after a partition heals: $(field "$f" repair: keys) keys ingested into us-1 while ap-1 was down (SIGKILL), then ap-1 restarted on its data"
	printf '%-58s %s\n' \
		"ingest (POST /v1/events x10000 into us-1)" "$(field "$f" repair: ingest) ($(field "$f" repair: ingest_views/s) views/s)" \
		"live peer eu-1 holds every key (deltas), after ingest" "$(field "$f" repair: live_peer_converged)" \
		"ap-1 down for" "$(field "$f" repair: down_for)" \
		"ap-1 restart: exec -> /readyz 200" "$(field "$f" repair: restart_to_ready)" \
		"ready -> both live nodes list ap-1 as a peer again" "$(field "$f" repair: ready_to_rejoined)" \
		"ready -> ap-1 replication.keys = all keys" "$(field "$f" repair: ready_to_keys)" \
		"ready -> sampled videos count 1 on ap-1" "$(field "$f" repair: ready_to_sample) ($(field "$f" repair: sample_ok) ok)" \
		"ready -> no repair running, nothing behind, both ways" "$(field "$f" repair: ready_to_settled)" \
		"repair traffic to ap-1 (us-1 + eu-1, bytes_sent_total)" "$(field "$f" repair: bytes_to_node) bytes ($(field "$f" repair: MiB_to_node) MiB)" \
		"traffic sent by ap-1's new process" "$(field "$f" repair: bytes_from_node) bytes"
	echo "  command: $REPAIR_CMD"
	echo "  compare: go test -run=NONE -bench=Repair/1000000 -benchtime=1x ./replication/ (two in-process engines, no disk or network)"
fi

if ((failed)); then
	echo "bench-cluster: some runs failed (see above)" >&2
	exit 1
fi
