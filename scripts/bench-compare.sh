#!/usr/bin/env bash
# bench-compare.sh: the benchmark behind `make bench-compare` (issue 9).
#
# tally against the seeds' Redis design, side by side on this machine:
#   - redis-server (the Debian package redis-server, installed here with
#     apt-get if missing and we are root) with appendonly yes and appendfsync
#     always, the seeds' SISMEMBER/INCR/SADD dedup script loaded and called
#     with EVALSHA through go-redis (a pipeline of EVALSHA per batch);
#   - a durable tally serve (fsync before every answer, the default);
#   - a bare echo server with fixed answers: the ceiling of tally's HTTP path;
#   - the same echo server logging each single view as one raw event through
#     tally's group committer to Badger (fsync per group commit) before it
#     answers: the ceiling of a durable view on echo and Badger;
#   - the same echo server appending each single view to a zeroed file, one
#     fdatasync per group commit, nothing else: the floor of a durable view
#     on echo, however it is stored.
# All on 127.0.0.1, driven one after the other by the same closed-loop
# generator (`tally bench compare`) with the same connections and mixes, for
# BENCH_DURATION each (default 10s). BENCH_COMPARE_FLAGS adds flags (see
# `tally bench compare -h`). It prints a table and the ratios of tally to
# each, and of the durable ceiling to Redis. Every process it starts is stopped by PID on exit.
set -euo pipefail

DURATION="${BENCH_DURATION:-10s}"
EXTRA="${BENCH_COMPARE_FLAGS:-}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v redis-server >/dev/null; then
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
		echo "bench-compare: redis-server is not installed, and this is not root with apt-get to install it." >&2
		echo "bench-compare: install the Debian package redis-server (apt-get install redis-server) and run again." >&2
		exit 1
	fi
	echo "== redis-server not found: installing the Debian package redis-server"
	if ! apt-get update -qq || ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; then
		echo "bench-compare: apt-get could not install redis-server (see above); install the Debian package redis-server and run again." >&2
		exit 1
	fi
	if ! command -v redis-server >/dev/null; then
		echo "bench-compare: the package redis-server installed, but no redis-server is on PATH ($PATH)." >&2
		exit 1
	fi
fi
echo "== $(redis-server --version)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/tally-bench-compare.XXXXXX")"
RUN_PID=""
cleanup() {
	local status=$?
	if [[ -n "$RUN_PID" ]] && kill -0 "$RUN_PID" 2>/dev/null; then
		kill -TERM "$RUN_PID" 2>/dev/null || true # it stops its servers itself
		wait "$RUN_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== building tally"
go build -o "$TMP/tally" ./cmd/tally

echo "== load on this machine before the runs: $(uptime)"
# In the background, so that a signal to this script is handled at once.
# shellcheck disable=SC2086 # EXTRA is a list of flags
"$TMP/tally" bench compare --duration "$DURATION" --dir "$TMP/compare" $EXTRA &
RUN_PID=$!
wait "$RUN_PID"
RUN_PID=""
