package main

import (
	"context"
	"fmt"
	"io"
)

const usage = `tally: a multi-region, active-active view counter

Usage:
  tally serve [flags]   run a node (HTTP API on --http, data in --data)
  tally load  [flags]   closed-loop HTTP load generator against a tally node
  tally cluster [flags] a local multi-region cluster of real tally serve processes
  tally sim [flags]     deterministic simulation of regions × nodes with faults
  tally bench visibility|repair|compare|scale [flags]  benchmarks on loopback (compare: against Redis+Lua)
  tally drill [flags]   failover drills on a local cluster under load (kill, partition, rolling restart)
  tally audit --endpoints URL[,URL...]  recompute every count from the nodes' raw event logs and compare
  tally probe URL       exit 0 if GET URL answers 200 (container health checks)
  tally help            this text

Run "tally COMMAND -h" for the flags of a command.
`

// run is the whole program; main only wires it to the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "audit":
		return runAudit(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "cluster":
		return runCluster(ctx, args[1:], stdout, stderr)
	case "drill":
		return runDrill(ctx, args[1:], stdout, stderr)
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "load":
		return runLoad(ctx, args[1:], stdout, stderr)
	case "sim":
		return runSim(ctx, args[1:], stdout, stderr)
	case "probe":
		return runProbe(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tally: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
