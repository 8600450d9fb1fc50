package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tallyhq/tally/httpapi/loadgen"
)

// runLoad is "tally load": it maps its flags onto a loadgen.Config, runs it and
// prints the Result. It returns 0 on success, 1 if any request failed (unless
// --allow-errors) or the run was interrupted, and 2 on bad flags.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: tally load [flags]\n\n"+
			"Closed-loop HTTP load generator: --conns workers each keep one request in\n"+
			"flight until --count requests or --duration, whichever comes first.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var cfg loadgen.Config
	fs.StringVar(&cfg.Target, "target", "http://127.0.0.1:8080", "base `URL` of the tally node")
	fs.StringVar(&cfg.Mode, "mode", loadgen.ModeView, "load `mode`: view, get, batch or mixed")
	fs.IntVar(&cfg.Connections, "conns", 32, "concurrent closed-loop connections")
	fs.DurationVar(&cfg.Duration, "duration", loadgen.DefaultDuration, "stop after this long (max 10m)")
	fs.IntVar(&cfg.Count, "count", 0, "stop after this many requests (0: no count limit)")
	fs.IntVar(&cfg.Videos, "videos", 10000, "distinct video IDs")
	fs.Float64Var(&cfg.HotVideoFraction, "hot", 0, "`fraction` of requests to the single video \"hot\"")
	fs.IntVar(&cfg.Users, "users", 1000000, "distinct user IDs")
	fs.Float64Var(&cfg.RepeatFraction, "repeat", 0.1, "`fraction` of views resending an already acknowledged (video, user) pair")
	fs.IntVar(&cfg.BatchSize, "batch", 1000, "events per POST /v1/events in batch mode")
	fs.Float64Var(&cfg.GetRatio, "get-ratio", 0.9, "`fraction` of GETs in mixed mode")
	fs.Int64Var(&cfg.Seed, "seed", 1, "random seed")
	fs.DurationVar(&cfg.Timeout, "timeout", loadgen.DefaultTimeout, "per-request timeout")
	allowErrors := fs.Bool("allow-errors", false, "exit 0 even if some requests failed")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tally load: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "tally load: %v\n", err)
		return 2
	}

	res, err := loadgen.Run(ctx, cfg)
	res.Write(stdout)
	if err != nil {
		fmt.Fprintf(stderr, "tally load: %v\n", err)
		return 1
	}
	if res.Errors > 0 && !*allowErrors {
		fmt.Fprintf(stderr, "tally load: %d of %d requests failed (use --allow-errors to accept)\n", res.Errors, res.Requests)
		return 1
	}
	return 0
}
