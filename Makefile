# tally — see README.md. Every target works on a fresh machine with only Go.
GO ?= go
HTTP ?= :8080
DATA ?= ./data

.PHONY: run build test vet test-deps test-dashboard bench bench-go bench-cluster bench-compare bench-scale fuzz sim sim-swarm clean

## run: one node on embedded Badger, HTTP on :8080, data in ./data
run:
	$(GO) run ./cmd/tally serve --data $(DATA) --http $(HTTP)

## build: the tally binary in ./bin
build:
	$(GO) build -o bin/tally ./cmd/tally

## test: vet, then every test with the race detector (includes fuzz seed corpora, the kill -9 crash test,
## and sim's fixed seeds, determinism check and scenario scripts)
test: vet test-deps
	$(GO) run ./cmd/tally sim --seeds 20 --swarm
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

## test-deps: as root with apt-get, install the Debian packages of the dashboard's browser test and of
## promtool (chromium, chromium-driver, prometheus) if missing; elsewhere those tests skip, naming them
test-deps:
	bash scripts/test-deps.sh

## test-dashboard: the dashboard in headless Chromium on a real 3-region cluster, screenshots in /tmp
test-dashboard: test-deps
	TALLY_DASHBOARD_SCREENSHOTS=/tmp $(GO) test -count=1 -v -run 'TestDashboardInChromium' ./cmd/tally/
	$(GO) test -count=1 -run 'TestDashboard|TestMetricsLint' ./httpapi/

## bench: Go micro-benchmarks, tally load against a local durable tally serve, then the multi-region figures
bench: bench-go
	bash scripts/bench.sh
	bash scripts/bench-cluster.sh

## bench-cluster: ack-to-visibility on a 3x3 loopback cluster and repair of 1M keys after a partition heals
bench-cluster:
	bash scripts/bench-cluster.sh

bench-go:
	$(GO) test -run=NONE -bench=. -benchmem -benchtime=1s ./crdt/ ./region/

## bench-compare: tally side by side with the seeds' design (redis-server, appendfsync always, the dedup Lua
## script by EVALSHA; installed with apt-get if missing) and a bare echo server, same load generator, mixes and
## connections; BENCH_DURATION per run (default 10s), BENCH_COMPARE_FLAGS for more (tally bench compare -h)
bench-compare:
	bash scripts/bench-compare.sh

## bench-scale: BENCH_SCALE_KEYS distinct videos (default 10,000,000) on one durable node: memory and disk per
## video, startup time, GET latency on cold keys
BENCH_SCALE_KEYS ?= 10000000
bench-scale: build
	./bin/tally bench scale --keys $(BENCH_SCALE_KEYS)

## drill: failover drills on a local 3 regions x 2 nodes cluster under load (kill -9 the nearest region,
## partition and heal with network namespaces (root only; skipped otherwise), rolling restart)
.PHONY: drill
drill: build
	./bin/tally drill --profile full

## sim: the deterministic simulator, SIM_SEEDS seeds (default 1000) with every fault on
## (a failure prints its reproduce command: tally sim --seed N ...)
SIM_SEEDS ?= 1000
sim:
	$(GO) run ./cmd/tally sim --seeds $(SIM_SEEDS)

## sim-swarm: as sim, with fault rates, engine limits and cluster shape randomised per seed
sim-swarm:
	$(GO) run ./cmd/tally sim --seeds $(SIM_SEEDS) --swarm

## fuzz: run each fuzz target for FUZZTIME (default 1m)
FUZZTIME ?= 1m
fuzz:
	$(GO) test -run=NONE -fuzz=FuzzUnmarshalPNCounter -fuzztime=$(FUZZTIME) ./crdt/
	$(GO) test -run=NONE -fuzz=FuzzDecodeMessage -fuzztime=$(FUZZTIME) ./replication/
	$(GO) test -run=NONE -fuzz=FuzzReadFrame -fuzztime=$(FUZZTIME) ./replication/tcp/
	$(GO) test -run=NONE -fuzz=FuzzDecodeStored -fuzztime=$(FUZZTIME) ./store/
	$(GO) test -run=NONE -fuzz=FuzzDecodeViewBody -fuzztime=$(FUZZTIME) ./httpapi/
	$(GO) test -run=NONE -fuzz=FuzzDecodeEventsBody -fuzztime=$(FUZZTIME) ./httpapi/
	$(GO) test -run=NONE -fuzz=FuzzDecodeEventsFast -fuzztime=$(FUZZTIME) ./httpapi/
	$(GO) test -run=NONE -fuzz=FuzzDecodeLikeBody -fuzztime=$(FUZZTIME) ./httpapi/
	$(GO) test -run=NONE -fuzz=FuzzParseQueryTime -fuzztime=$(FUZZTIME) ./httpapi/
	$(GO) test -run=NONE -fuzz=FuzzCountResponseJSON -fuzztime=$(FUZZTIME) ./httpapi/
	$(GO) test -run=NONE -fuzz=FuzzChunkFromState -fuzztime=$(FUZZTIME) ./crdt/
	$(GO) test -run=NONE -fuzz=FuzzDecodeAuditStream -fuzztime=$(FUZZTIME) ./cmd/tally/

clean:
	rm -rf bin
