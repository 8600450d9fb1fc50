package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tallyhq/tally/httpapi"
	"github.com/tallyhq/tally/region"
)

const serveHelp = `Usage: tally serve [flags]

Runs one tally node: the HTTP API, the dashboard (GET /) and Prometheus
metrics (GET /metrics) on --http, its state in --data. With --gossip it joins
a cluster and replicates; without, it serves alone.

Every flag can also be set by an environment variable, TALLY_ and the flag's
name in capitals with - as _ (--user-rate is TALLY_USER_RATE), or in the
config file named by --config, one "name = value" per line (# comments, Go
quoting for values with spaces). The command line wins over the environment,
which wins over the file.

SIGINT or SIGTERM drains HTTP (readiness turns false first), leaves the
gossip pool, writes the last group commit and closes the store; a second
signal stops at once.

Admin routes (the raw event log for tally audit, gossip key rotation) need
--admin-token; secrets are better given as TALLY_ADMIN_TOKEN,
TALLY_CLUSTER_SECRET and TALLY_GOSSIP_KEY than as flags, which ps shows.

Flags:
`

// runServe is `tally serve`: one node with its HTTP API, until ctx ends.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runServeEnv(ctx, args, os.Getenv, stdout, stderr)
}

// serveSettings are the flags of tally serve that are not region.Config fields.
type serveSettings struct {
	http, advertiseHTTP string
	durability          string
	inMemory            bool
	logFormat, logLevel string
	shutdownTimeout     time.Duration
	aloneAfter          time.Duration
	configFile          string

	adminToken                 string
	tlsCert, tlsKey, tlsPeerCA string
	denyList                   string
	maxConns, maxInflight      int
	maxInflightPerClient       int
	maxInflightBytes           int64
	memoryLimit                string
	readHeaderTimeout          time.Duration
	readTimeout, writeTimeout  time.Duration
	idleTimeout                time.Duration
	tls, peerTLS               *tls.Config // loaded from the files above
}

// serveFlags declares the flags of tally serve on a new FlagSet.
func serveFlags(cfg *region.Config, ss *serveSettings, cl *clusterFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("tally serve", flag.ContinueOnError)
	fs.StringVar(&ss.configFile, "config", "", "config `file` of name = value lines (env TALLY_CONFIG names it too)")
	fs.StringVar(&ss.http, "http", ":8080", "HTTP listen `address` host:port; port 0 picks a free one")
	fs.StringVar(&ss.advertiseHTTP, "advertise-http", "", "HTTP `address` host:port peers reach this node at, for the dashboard (default: --http, with an empty or 0.0.0.0 host replaced by the host of --advertise or --gossip)")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data `directory` (Badger files, replica identity)")
	fs.StringVar(&cfg.Region, "region", cfg.Region, "`name` of this node's region")
	fs.StringVar(&ss.durability, "durability", string(cfg.Durability), "`mode`: sync acknowledges after fsync; async before fsync (and takes a new replica ID after an unclean shutdown)")
	fs.DurationVar(&cfg.DedupWindow, "dedup-window", cfg.DedupWindow, "window in which a user's views of a video count once (aligned to UTC)")
	fs.DurationVar(&cfg.LagBudget, "lag-budget", cfg.LagBudget, "how long dedup claims outlive their window, for late replication")
	fs.DurationVar(&cfg.EventRetention, "event-retention", cfg.EventRetention, "how long the raw event log keeps events")
	fs.DurationVar(&cfg.MaxClockSkew, "max-clock-skew", cfg.MaxClockSkew, "how far in the future a client timestamp may be")
	fs.DurationVar(&cfg.MaxEventAge, "max-event-age", cfg.MaxEventAge, "how far in the past a client timestamp may be")
	fs.Float64Var(&cfg.UserRate, "user-rate", cfg.UserRate, "views per second one user may make before views stop counting")
	fs.IntVar(&cfg.UserBurst, "user-burst", cfg.UserBurst, "burst size of --user-rate, in views")
	fs.Float64Var(&cfg.IPRate, "ip-rate", cfg.IPRate, "views per second one client IP may make (0: no per-IP limit)")
	fs.IntVar(&cfg.IPBurst, "ip-burst", cfg.IPBurst, "burst size of --ip-rate, in views")
	fs.Func("event-types", "comma-separated event `types` counted besides view and like, each once per user, video and dedup window (default \"share\"; empty: none)", func(s string) error {
		cfg.EventTypes = nil
		for _, ev := range strings.Split(s, ",") {
			if ev = strings.TrimSpace(ev); ev != "" {
				cfg.EventTypes = append(cfg.EventTypes, ev)
			}
		}
		return nil
	})
	fs.DurationVar(&cfg.Retention.Minute, "minute-retention", cfg.Retention.Minute, "how long minute buckets of counts are kept (0: forever)")
	fs.DurationVar(&cfg.Retention.Hour, "hour-retention", cfg.Retention.Hour, "how long hour buckets of counts are kept (0: forever)")
	fs.DurationVar(&cfg.Retention.Day, "day-retention", cfg.Retention.Day, "how long day buckets of counts are kept (0: forever)")
	fs.BoolFunc("no-time-buckets", "count totals only: no minute/hour/day series and no trending (saves memory and writes)", func(string) error {
		cfg.DisableTimeBuckets = true
		return nil
	})
	fs.IntVar(&cfg.CounterCache, "counter-cache", cfg.CounterCache, "counters (totals and time buckets) held in memory; beyond it clean ones are evicted and read back from disk on use (0: no bound)")
	fs.IntVar(&cfg.MaxPending, "max-pending", cfg.MaxPending, "writes that may wait for the next group commit before ingest sheds with 503")
	fs.StringVar(&ss.denyList, "deny-list", "", "`file` of users (user:ID) and client addresses (ip:ADDR or ip:NET/BITS), one per line, whose views are logged as denied and never counted")
	fs.StringVar(&ss.adminToken, "admin-token", "", "bearer `token` of the admin routes (raw event log, gossip keyring); empty turns them off. Prefer TALLY_ADMIN_TOKEN: a flag shows in ps")
	fs.StringVar(&ss.tlsCert, "tls-cert", "", "PEM certificate `file` (chain) to serve HTTPS with; needs --tls-key")
	fs.StringVar(&ss.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.StringVar(&ss.tlsPeerCA, "tls-peer-ca", "", "PEM CA `file` to verify peers' HTTPS with (the dashboard asks them for counts); default: the system's roots")
	fs.IntVar(&ss.maxConns, "max-conns", httpapi.DefaultMaxConns, "open HTTP connections at most; more wait in the kernel's accept queue")
	fs.IntVar(&ss.maxInflight, "max-inflight", httpapi.DefaultMaxInflight, "ingest requests answered at once at most; more are shed with 503 and Retry-After")
	fs.Int64Var(&ss.maxInflightBytes, "max-inflight-bytes", httpapi.DefaultMaxInflightBytes, "estimated memory, in bytes, ingest requests in flight may hold; more are shed with 503 and Retry-After")
	fs.IntVar(&ss.maxInflightPerClient, "max-inflight-per-client", httpapi.DefaultMaxInflightPerClient, "ingest requests one client address may have in flight; more are answered 429 with Retry-After")
	fs.DurationVar(&ss.readHeaderTimeout, "read-header-timeout", httpapi.DefaultReadHeaderTimeout, "how long a client may take to send a request's headers (slowloris bound)")
	fs.DurationVar(&ss.readTimeout, "read-timeout", httpapi.DefaultReadTimeout, "how long a client may take to send a whole request, body included")
	fs.DurationVar(&ss.writeTimeout, "write-timeout", httpapi.DefaultWriteTimeout, "how long writing an answer may take (the audit stream extends it as it goes)")
	fs.DurationVar(&ss.idleTimeout, "idle-timeout", httpapi.DefaultIdleTimeout, "how long a keep-alive connection may stay idle")
	fs.StringVar(&cl.nodeName, "node-name", "", "this node's unique `name` in the cluster (default: region-hostname-httpport)")
	fs.StringVar(&cl.gossip, "gossip", "", "Serf gossip `address` host:port (TCP and UDP); empty runs a single node without replication")
	fs.StringVar(&cl.advertise, "advertise", "", "gossip `address` other nodes reach this one at (default: --gossip)")
	fs.StringVar(&cl.repl, "repl", "127.0.0.1:7947", "replication listen `address` host:port (with --gossip); peers dial it as given")
	fs.StringVar(&cl.join, "join", "", "comma-separated gossip `addresses` of existing members to join")
	fs.StringVar(&cl.secret, "cluster-secret", "", "shared `secret` authenticating replication frames, at least 16 bytes")
	fs.StringVar(&cl.gossipKey, "gossip-key", "", "base64 Serf encryption `key` of 16, 24 or 32 bytes; empty: gossip in clear (unless the keyring file exists)")
	fs.StringVar(&cl.keyringFile, "gossip-keyring", "", "`file` keeping the gossip keyring across restarts and key rotations (default: gossip.keyring in --data; it wins over --gossip-key once it exists)")
	fs.DurationVar(&cl.syncInterval, "sync-interval", 100*time.Millisecond, "how often replication ships deltas and heartbeats to each peer")
	fs.DurationVar(&ss.aloneAfter, "alone-after", httpapi.DefaultAloneAfter, "with --join: how long a node that finds no peer waits before it serves alone and reports ready")
	fs.DurationVar(&ss.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits for in-flight HTTP requests")
	fs.StringVar(&ss.memoryLimit, "memory-limit", "auto", "soft limit of the Go heap, to which the garbage collector holds it: auto (80% of the machine's or the cgroup's memory, unless GOMEMLIMIT is set), off, or a `size` such as 20GiB")
	fs.BoolVar(&ss.inMemory, "in-memory", false, "keep all state in RAM (testing only: nothing survives a restart)")
	fs.StringVar(&ss.logFormat, "log-format", "text", "log `format` on stderr: text or json")
	fs.StringVar(&ss.logLevel, "log-level", "info", "log `level`: debug (every request, with its ID), info, warn, error")
	return fs
}

// runServeEnv is runServe with the environment given (for tests).
func runServeEnv(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg := region.DefaultConfig()
	var ss serveSettings
	var cl clusterFlags
	fs := serveFlags(&cfg, &ss, &cl)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, serveHelp)
			printFlags(stdout, fs)
			return 0
		}
		fmt.Fprintln(stderr, "Run \"tally serve --help\" for the flags.")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tally serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if ss.configFile == "" {
		ss.configFile = getenv(envName("config"))
	}
	from, err := applySettings(fs, getenv, ss.configFile, "config")
	if err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	cfg.Durability = region.Durability(ss.durability)
	cfg.InMemory = ss.inMemory
	log, err := newLogger(stderr, ss.logFormat, ss.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	if len(from) > 0 {
		log.Debug("settings from the environment or config file", "settings", from)
	}
	cfg.Logger = log
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	limit, err := applyMemoryLimit(ss.memoryLimit, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	log.Info("memory limit", "limit", limit)
	if err := cl.resolve(cfg.Region, ss.http); err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	if ss.shutdownTimeout <= 0 || ss.aloneAfter <= 0 {
		fmt.Fprintln(stderr, "tally serve: --shutdown-timeout and --alone-after must be positive")
		return 2
	}
	if cl.gossip != "" && cl.keyringFile == "" && !ss.inMemory {
		cl.keyringFile = filepath.Join(cfg.DataDir, "gossip.keyring")
	}
	if err := ss.check(); err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	if ss.denyList != "" {
		if cfg.Deny, err = readDenyList(ss.denyList); err != nil {
			fmt.Fprintf(stderr, "tally serve: %v\n", err)
			return 2
		}
		log.Info("deny list loaded", "file", ss.denyList, "entries", cfg.Deny.Len())
	}
	if ss.tls, ss.peerTLS, err = ss.loadTLS(); err != nil {
		fmt.Fprintf(stderr, "tally serve: %v\n", err)
		return 2
	}
	if err := serve(ctx, cfg, cl, ss, stdout, log); err != nil {
		log.Error("tally serve stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg region.Config, cl clusterFlags, ss serveSettings, stdout io.Writer, log *slog.Logger) error {
	metrics := httpapi.NewMetrics()
	cfg.Observer = metrics
	node, err := region.Open(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", ss.http)
	if err != nil {
		return errors.Join(fmt.Errorf("listen on %s: %w", ss.http, err), node.Close())
	}
	opts := httpapi.Options{
		Logger: log, Metrics: metrics, ShutdownTimeout: ss.shutdownTimeout,
		NodeName: cl.nodeName, Joining: cl.join != "", AloneAfter: ss.aloneAfter,
		AdminToken: ss.adminToken, MaxConns: ss.maxConns,
		MaxInflight: ss.maxInflight, MaxInflightBytes: ss.maxInflightBytes, MaxInflightPerClient: ss.maxInflightPerClient,
		ReadHeaderTimeout: ss.readHeaderTimeout, ReadTimeout: ss.readTimeout, WriteTimeout: ss.writeTimeout, IdleTimeout: ss.idleTimeout,
		TLS: ss.tls, PeerTLS: ss.peerTLS,
	}
	var leave func() error
	if cl.gossip != "" {
		advertised := advertisedHTTP(ln.Addr().String(), ss.advertiseHTTP, cl.advertise, cl.gossip)
		m, err := joinCluster(ctx, node, cfg, cl, advertised, log)
		if err != nil {
			return errors.Join(err, ln.Close(), node.Close())
		}
		leave, opts.Keyring = m.leave, m.membership
		metrics.RegisterTransport(m.transportStats)
	}
	id := node.Identity()
	scheme := "http"
	if opts.TLS != nil {
		scheme = "https"
	}
	log.Info("tally serving", "http", ln.Addr().String(), "scheme", scheme, "region", cfg.Region, "replica", id.Replica.String(),
		"data", cfg.DataDir, "durability", cfg.Durability, "admin_api", ss.adminToken != "")
	fmt.Fprintf(stdout, "tally: listening on %s://%s\n", scheme, ln.Addr())
	srv := httpapi.New(node, opts)
	serveErr := srv.Serve(ctx, ln)
	log.Info("HTTP drained")
	if leave != nil {
		if err := leave(); err != nil {
			log.Warn("leave cluster", "err", err)
		} else {
			log.Info("left the cluster")
		}
	}
	closeErr := node.Close()
	if closeErr == nil {
		log.Info("tally stopped cleanly; every acknowledged write is on disk")
	}
	return errors.Join(serveErr, closeErr)
}

// advertisedHTTP is the HTTP address peers reach this node at: explicit if
// given, else the listen address, with an unspecified host replaced by the
// host of the gossip advertise (or bind) address when that one is specific.
func advertisedHTTP(listen, explicit, advertise, gossip string) string {
	if explicit != "" {
		return explicit
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen
	}
	for _, a := range []string{advertise, gossip} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
				return net.JoinHostPort(h, port)
			}
		}
	}
	return listen
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

// check validates the settings of the HTTP listener.
func (ss *serveSettings) check() error {
	switch {
	case (ss.tlsCert == "") != (ss.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case ss.tlsPeerCA != "" && ss.tlsCert == "":
		return errors.New("--tls-peer-ca needs --tls-cert and --tls-key")
	case ss.maxConns < 1 || ss.maxInflight < 1 || ss.maxInflightPerClient < 1 || ss.maxInflightBytes < 1:
		return errors.New("--max-conns, --max-inflight, --max-inflight-per-client and --max-inflight-bytes must be positive")
	case ss.readHeaderTimeout <= 0 || ss.readTimeout <= 0 || ss.writeTimeout <= 0 || ss.idleTimeout <= 0:
		return errors.New("--read-header-timeout, --read-timeout, --write-timeout and --idle-timeout must be positive")
	case ss.adminToken != "" && len(ss.adminToken) < 16:
		return errors.New("--admin-token: want at least 16 characters")
	}
	return nil
}

// loadTLS loads the HTTPS certificate and the peers' CA, if configured.
func (ss *serveSettings) loadTLS() (serving, peers *tls.Config, err error) {
	if ss.tlsCert == "" {
		return nil, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(ss.tlsCert, ss.tlsKey)
	if err != nil {
		return nil, nil, fmt.Errorf("load --tls-cert %s and --tls-key %s: %w", ss.tlsCert, ss.tlsKey, err)
	}
	serving = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if ss.tlsPeerCA == "" {
		return serving, nil, nil
	}
	pool, err := loadCAs(ss.tlsPeerCA)
	if err != nil {
		return nil, nil, err
	}
	return serving, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// loadCAs reads a PEM file of CA certificates.
func loadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// readDenyList reads the deny list file at path.
func readDenyList(path string) (*region.DenyList, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("deny list: %w", err)
	}
	defer f.Close()
	d, err := region.ParseDenyList(io.LimitReader(f, maxDenyListFile))
	if err != nil {
		return nil, fmt.Errorf("deny list %s: %w", path, err)
	}
	return d, nil
}

// maxDenyListFile bounds the deny list read at start.
const maxDenyListFile = 64 << 20
