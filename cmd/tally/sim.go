package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/tallyhq/tally/sim"
)

// runSim is "tally sim": it maps its flags onto sim.Options and runs them.
// It returns 0 if every seed passed, 1 if one failed, 2 on bad flags.
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: tally sim [flags]\n\n"+
			"Deterministic simulation: regions × nodes of the real region and replication\n"+
			"code on a simulated clock and network, with faults, a client workload and\n"+
			"invariant checks. The same seed and flags give the same output, byte for byte.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	o := sim.Options{Params: sim.DefaultParams()}
	o.Params.RegisterFlags(fs)
	fs.IntVar(&o.Seeds, "seeds", 1, "run this many seeds, from --seed on, and summarise")
	fs.IntVar(&o.Parallel, "parallel", min(runtime.GOMAXPROCS(0), 2), "seeds run at once with --seeds")
	fs.BoolVar(&o.Verbose, "v", false, "with --seeds, print every seed's whole output")
	fs.StringVar(&o.Plot, "plot", "", "draw the run into this SVG `file`")
	fs.StringVar(&o.PlotVideo, "plot-video", "", "plot this video only (default: the sum over all videos)")
	fs.StringVar(&o.Script, "script", "", "run this scenario script `file` (see sim/testdata) instead of seeds")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tally sim: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	return sim.Run(ctx, o, stdout, stderr)
}
