package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/tallyhq/tally/httpapi/client"
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
			"flight until --count requests or --duration, whichever comes first.\n\n"+
			"One --target is driven directly (the lean path of the single-node benchmark).\n"+
			"Several targets, --region, or --via-client send through the Go client\n"+
			"(httpapi/client): nearest endpoint by round-trip time, failover with\n"+
			"backoff, per-endpoint circuit breakers; failovers are reported.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var cfg loadgen.Config
	target := fs.String("target", "http://127.0.0.1:8080", "base `URL`(s) of tally nodes, comma separated (several: each its own region, through the client)")
	var regions regionsFlag
	fs.Var(&regions, "region", "a region for the client, `name=URL[,URL...]` (repeat for each region; replaces --target)")
	viaClient := fs.Bool("via-client", false, "send through the Go client even to a single --target")
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
	targetSet := false
	fs.Visit(func(f *flag.Flag) { targetSet = targetSet || f.Name == "target" })
	if targetSet && len(regions) > 0 {
		fmt.Fprintln(stderr, "tally load: give --target or --region, not both")
		return 2
	}
	if len(regions) == 0 {
		targets, err := loadgen.ParseTargets(*target)
		if err != nil {
			fmt.Fprintf(stderr, "tally load: --target: %v\n", err)
			return 2
		}
		if len(targets) == 1 && !*viaClient {
			cfg.Target = targets[0]
		} else {
			for _, t := range targets {
				name := t
				if u, err := url.Parse(t); err == nil && u.Host != "" {
					name = u.Host
				}
				regions = append(regions, client.Region{Name: name, Endpoints: []string{t}})
			}
		}
	}
	cfg.Regions = regions
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

// regionsFlag collects repeated --region name=URL[,URL...] flags.
type regionsFlag []client.Region

func (r *regionsFlag) String() string {
	parts := make([]string, len(*r))
	for i, reg := range *r {
		parts[i] = reg.Name + "=" + strings.Join(reg.Endpoints, ",")
	}
	return strings.Join(parts, " ")
}

// Set parses one name=URL[,URL...]; the client checks the URLs.
func (r *regionsFlag) Set(v string) error {
	name, list, ok := strings.Cut(v, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.TrimSpace(list) == "" {
		return fmt.Errorf("want name=URL[,URL...], got %q", v)
	}
	reg := client.Region{Name: name}
	for _, e := range strings.Split(list, ",") {
		if e = strings.TrimSpace(e); e != "" {
			reg.Endpoints = append(reg.Endpoints, e)
		}
	}
	*r = append(*r, reg)
	return nil
}
