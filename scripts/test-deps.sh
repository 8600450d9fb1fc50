#!/usr/bin/env bash
# Installs the Debian packages a few tests need, when they are missing and we
# run as root with apt-get (CI runs `make test` as root on a clean Debian):
#   chromium, chromium-driver  the dashboard's end-to-end test (cmd/tally TestDashboardInChromium)
#   prometheus                 promtool check metrics (httpapi TestMetricsLint, the Chromium test)
# Elsewhere (not root, no apt-get, or TALLY_SKIP_TEST_DEPS=1) it installs
# nothing and those tests skip with a message naming the package.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ]; }
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
have promtool || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "${TALLY_SKIP_TEST_DEPS:-}" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps: ${need[*]} missing and not installed (needs root and apt-get; TALLY_SKIP_TEST_DEPS=1 skips): the tests using them skip" >&2
	exit 0
fi

log=$(mktemp /tmp/tally-test-deps.XXXXXX)
start=$(date +%s)
echo "test-deps: installing ${need[*]} (log: $log)" >&2
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends "${need[@]}" >>"$log" 2>&1; }
# A fresh machine may have no package lists yet: update only if needed.
if ! install; then
	if ! { apt-get update -q >>"$log" 2>&1 && install; }; then
		tail -20 "$log" >&2
		if [ -n "${CI:-}" ]; then
			echo "test-deps: could not install ${need[*]}; in CI the tests that need them must run" >&2
			exit 1
		fi
		echo "test-deps: could not install ${need[*]}: the tests using them skip" >&2
		exit 0
	fi
fi
echo "test-deps: installed ${need[*]} in $(($(date +%s) - start))s" >&2
