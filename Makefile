# tally — see README.md. Every target works on a fresh machine with only Go.
GO ?= go
HTTP ?= :8080
DATA ?= ./data

.PHONY: run build test vet bench bench-go bench-cluster fuzz clean

## run: one node on embedded Badger, HTTP on :8080, data in ./data
run:
	$(GO) run ./cmd/tally serve --data $(DATA) --http $(HTTP)

## build: the tally binary in ./bin
build:
	$(GO) build -o bin/tally ./cmd/tally

## test: vet, then every test with the race detector (includes fuzz seed corpora and the kill -9 crash test)
test: vet
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

## bench: Go micro-benchmarks, tally load against a local durable tally serve, then the multi-region figures
bench: bench-go
	bash scripts/bench.sh
	bash scripts/bench-cluster.sh

## bench-cluster: ack-to-visibility on a 3x3 loopback cluster and repair of 1M keys after a partition heals
bench-cluster:
	bash scripts/bench-cluster.sh

bench-go:
	$(GO) test -run=NONE -bench=. -benchmem -benchtime=1s ./crdt/ ./region/

## fuzz: run each fuzz target for FUZZTIME (default 1m)
FUZZTIME ?= 1m
fuzz:
	$(GO) test -run=NONE -fuzz=FuzzUnmarshalPNCounter -fuzztime=$(FUZZTIME) ./crdt/

clean:
	rm -rf bin
