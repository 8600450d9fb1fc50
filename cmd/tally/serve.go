package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/tallyhq/tally/httpapi"
	"github.com/tallyhq/tally/region"
)

// runServe is `tally serve`: one node with its HTTP API, until ctx ends.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := region.DefaultConfig()
	fs := flag.NewFlagSet("tally serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", ":8080", "HTTP listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory (Badger files, replica identity)")
	fs.StringVar(&cfg.Region, "region", cfg.Region, "name of this node's region")
	durability := fs.String("durability", string(cfg.Durability), "sync: acknowledge after fsync; async: before fsync (a new replica ID after an unclean shutdown)")
	fs.DurationVar(&cfg.DedupWindow, "dedup-window", cfg.DedupWindow, "window in which a user's views of a video count once (aligned to UTC)")
	fs.DurationVar(&cfg.LagBudget, "lag-budget", cfg.LagBudget, "how long claims outlive their window, for late replication")
	fs.DurationVar(&cfg.EventRetention, "event-retention", cfg.EventRetention, "how long the raw event log keeps events")
	fs.DurationVar(&cfg.MaxClockSkew, "max-clock-skew", cfg.MaxClockSkew, "how far in the future a client timestamp may be")
	fs.DurationVar(&cfg.MaxEventAge, "max-event-age", cfg.MaxEventAge, "how far in the past a client timestamp may be")
	fs.Float64Var(&cfg.UserRate, "user-rate", cfg.UserRate, "views per second one user may make before views stop counting")
	fs.IntVar(&cfg.UserBurst, "user-burst", cfg.UserBurst, "burst size (views) of --user-rate")
	fs.Float64Var(&cfg.IPRate, "ip-rate", cfg.IPRate, "views per second one client IP may make (0: no per-IP limit)")
	fs.IntVar(&cfg.IPBurst, "ip-burst", cfg.IPBurst, "burst size (views) of --ip-rate")
	fs.IntVar(&cfg.MaxPending, "max-pending", cfg.MaxPending, "writes that may wait for the next group commit before ingest sheds with 503")
	var cl clusterFlags
	fs.StringVar(&cl.nodeName, "node-name", "", "this node's unique name in the cluster (default: region-hostname-httpport)")
	fs.StringVar(&cl.gossip, "gossip", "", "Serf gossip address host:port; empty runs a single node without replication")
	fs.StringVar(&cl.advertise, "advertise", "", "gossip address other nodes reach this one at (default: --gossip)")
	fs.StringVar(&cl.repl, "repl", "127.0.0.1:7947", "replication listen address host:port (with --gossip)")
	fs.StringVar(&cl.join, "join", "", "comma-separated gossip addresses of existing members to join")
	fs.StringVar(&cl.secret, "cluster-secret", "", "shared secret authenticating replication frames, ≥16 bytes (or env TALLY_CLUSTER_SECRET)")
	fs.StringVar(&cl.gossipKey, "gossip-key", "", "base64 Serf encryption key, 16/24/32 bytes (or env TALLY_GOSSIP_KEY); empty: gossip in clear")
	fs.DurationVar(&cl.syncInterval, "sync-interval", 100*time.Millisecond, "how often replication ships deltas and heartbeats to each peer")
	inMemory := fs.Bool("in-memory", false, "keep all state in RAM (testing only: nothing survives a restart)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tally serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.Durability = region.Durability(*durability)
	cfg.InMemory = *inMemory
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	cfg.Logger = log
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	if err := cl.resolve(cfg.Region, *httpAddr); err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	if err := serve(ctx, cfg, cl, *httpAddr, stdout, log); err != nil {
		log.Error("tally serve stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg region.Config, cl clusterFlags, httpAddr string, stdout io.Writer, log *slog.Logger) error {
	metrics := httpapi.NewMetrics()
	cfg.Observer = metrics
	node, err := region.Open(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return errors.Join(fmt.Errorf("listen on %s: %w", httpAddr, err), node.Close())
	}
	var leave func() error
	if cl.gossip != "" {
		if leave, err = joinCluster(ctx, node, cfg, cl, ln.Addr().String(), log); err != nil {
			return errors.Join(err, ln.Close(), node.Close())
		}
	}
	id := node.Identity()
	log.Info("tally serving", "http", ln.Addr().String(), "region", cfg.Region, "replica", id.Replica.String(),
		"data", cfg.DataDir, "durability", cfg.Durability)
	fmt.Fprintf(stdout, "tally: listening on http://%s\n", ln.Addr())
	srv := httpapi.New(node, httpapi.Options{Logger: log, Metrics: metrics})
	serveErr := srv.Serve(ctx, ln)
	if leave != nil {
		if err := leave(); err != nil {
			log.Warn("leave cluster", "err", err)
		}
	}
	closeErr := node.Close()
	if closeErr == nil {
		log.Info("tally stopped cleanly; every acknowledged write is on disk")
	}
	return errors.Join(serveErr, closeErr)
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
