package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

const auditHelp = `Usage: tally audit --endpoints URL[,URL...] [flags]

Checks a cluster's live counters against its raw event logs. It asks the
given nodes (GET /v1/status) for every member of the cluster, pulls the raw
event log of each (GET /v1/audit/events, an admin route: give the nodes'
admin token with --admin-token or TALLY_ADMIN_TOKEN), recomputes every
video's view count with the same dedup and claim rules the nodes apply (one
count per distinct video, user and dedup window; every losing claim owes one
compensation), and compares it with the count every node answers
(GET /videos/ID/views).

It prints each video whose counts disagree, and a summary. While counts
disagree it looks again, for up to --wait: replication may still be
converging. The audit is exact for a quiet cluster whose logs reach back to
the first view (see --event-retention of tally serve).

Exit status: 0 no mismatch; 1 mismatches; 2 bad usage; 3 the audit could not
be completed (a node unreachable, a log incomplete, nodes with different
dedup windows).

Flags:
`

// Exit codes of tally audit.
const (
	auditOK         = 0
	auditMismatch   = 1
	auditUsage      = 2
	auditIncomplete = 3
)

// auditConfig says what to audit and how.
type auditConfig struct {
	Endpoints []string // base URLs of some nodes; every member is found from them
	Token     string   // the nodes' admin token
	Video     string   // audit this video only; "" for all
	// Wait is how long mismatches may take to clear (replication
	// converging) before they are reported; 0 checks once.
	Wait time.Duration
	// RequestTimeout bounds the wait for each answer's headers.
	RequestTimeout time.Duration
	// Concurrency bounds the count reads in flight.
	Concurrency int
	TLS         *tls.Config
	// Verbose lists every video, not only mismatches.
	Verbose bool
}

// auditNode is one member of the audited cluster.
type auditNode struct {
	Name, Region, Replica, URL string
	Events                     int64
	Fates                      map[store.Fate]int64
}

// videoAudit is one video's recomputed count and every node's live count.
type videoAudit struct {
	region.AuditCount
	Counts []uint64 // per node, in auditReport.Nodes order
}

// ok reports whether every node's count is the recomputed one and every
// owed compensation was made.
func (v videoAudit) ok() bool {
	for _, c := range v.Counts {
		if c != v.Expected {
			return false
		}
	}
	return v.Compensations == v.Owed
}

// auditReport is the result of one audit.
type auditReport struct {
	Nodes      []auditNode
	WindowMs   int64
	Videos     []videoAudit
	Mismatches int
	Rounds     int // how many times the cluster was read
	Elapsed    time.Duration
}

// runAudit is `tally audit`.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAuditEnv(ctx, args, os.Getenv, stdout, stderr)
}

func runAuditEnv(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	endpoints := fs.String("endpoints", "", "comma-separated `URLs` (http(s)://host:port, or host:port) of one or more nodes; the rest of the cluster is found from them")
	token := fs.String("admin-token", "", "the nodes' admin bearer `token` (default: $TALLY_ADMIN_TOKEN)")
	video := fs.String("video", "", "audit this video `ID` only")
	wait := fs.Duration("wait", 30*time.Second, "how long mismatches may take to clear (replication converging) before they are reported; 0 checks once")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each node's answer to start")
	conc := fs.Int("concurrency", 16, "count reads in flight at once")
	caFile := fs.String("tls-ca", "", "PEM CA `file` to verify nodes' HTTPS with (default: the system's roots)")
	verbose := fs.Bool("v", false, "list every video, not only mismatches")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, auditHelp)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return auditOK
		}
		fmt.Fprintln(stderr, "Run \"tally audit --help\" for the flags.")
		return auditUsage
	}
	cfg := auditConfig{Token: *token, Video: *video, Wait: *wait, RequestTimeout: *timeout, Concurrency: *conc, Verbose: *verbose}
	if cfg.Token == "" {
		cfg.Token = getenv("TALLY_ADMIN_TOKEN")
	}
	for _, e := range strings.Split(*endpoints, ",") {
		if strings.TrimSpace(e) != "" {
			cfg.Endpoints = append(cfg.Endpoints, e)
		}
	}
	var problems []string
	switch {
	case fs.NArg() > 0:
		problems = append(problems, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	case len(cfg.Endpoints) == 0:
		problems = append(problems, "--endpoints is required")
	case cfg.Token == "":
		problems = append(problems, "no admin token: give --admin-token or set TALLY_ADMIN_TOKEN")
	case cfg.Wait < 0 || cfg.RequestTimeout <= 0 || cfg.Concurrency < 1:
		problems = append(problems, "--wait must not be negative; --timeout and --concurrency must be positive")
	case cfg.Video != "":
		if err := region.CheckID(region.CodeInvalidVideoID, "--video", cfg.Video); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if *caFile != "" {
		pool, err := loadCAs(*caFile)
		if err != nil {
			problems = append(problems, err.Error())
		}
		cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "tally audit: %s\n", strings.Join(problems, "; "))
		return auditUsage
	}
	rep, err := auditCluster(ctx, cfg)
	if rep != nil {
		rep.write(stdout, cfg.Verbose)
	}
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "tally audit: %v\n", err)
		return auditIncomplete
	case rep.Mismatches > 0:
		return auditMismatch
	}
	return auditOK
}

// auditCluster audits the cluster reached through cfg.Endpoints. A report
// with mismatches is not an error; failing to read a node, or its log, is.
// While videos mismatch it reads the cluster again, up to cfg.Wait.
func auditCluster(ctx context.Context, cfg auditConfig) (*auditReport, error) {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 16
	}
	c := newAuditClient(cfg.Token, cfg.TLS, cfg.RequestTimeout)
	defer c.close()
	start := time.Now()
	deadline := start.Add(cfg.Wait)
	pause := 500 * time.Millisecond
	for round := 1; ; round++ {
		rep, err := auditOnce(ctx, c, cfg)
		if rep != nil {
			rep.Rounds, rep.Elapsed = round, time.Since(start)
		}
		if err != nil || rep.Mismatches == 0 || !time.Now().Add(pause).Before(deadline) {
			return rep, err
		}
		select {
		case <-ctx.Done():
			return rep, nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// auditOnce reads the cluster once: members, logs, recomputation, counts.
func auditOnce(ctx context.Context, c *auditClient, cfg auditConfig) (*auditReport, error) {
	nodes, window, err := discover(ctx, c, cfg.Endpoints)
	if err != nil {
		return nil, err
	}
	rep := &auditReport{Nodes: nodes, WindowMs: window}
	var events []store.Event
	for i := range rep.Nodes {
		n := &rep.Nodes[i]
		n.Fates = map[store.Fate]int64{}
		_, err := c.events(ctx, n.URL, cfg.Video, func(ev store.Event) error {
			n.Events++
			n.Fates[ev.Fate]++
			events = append(events, ev)
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	counts := region.Recompute(events, window)
	if cfg.Video != "" && len(counts) == 0 {
		counts = []region.AuditCount{{Video: cfg.Video}} // a video nobody viewed must count 0 everywhere
	}
	rep.Videos = make([]videoAudit, len(counts))
	for i, ac := range counts {
		rep.Videos[i] = videoAudit{AuditCount: ac, Counts: make([]uint64, len(nodes))}
	}
	if err := readCounts(ctx, c, cfg.Concurrency, rep); err != nil {
		return rep, err
	}
	for _, v := range rep.Videos {
		if !v.ok() {
			rep.Mismatches++
		}
	}
	return rep, nil
}

// discover finds every member of the cluster from the endpoints: each
// node's status lists its peers with their HTTP addresses. Nodes are told
// apart by replica ID, so two endpoints of one node count once. Peers are
// reached with the scheme of the endpoint that named them.
func discover(ctx context.Context, c *auditClient, endpoints []string) ([]auditNode, int64, error) {
	var queue []string
	for _, e := range endpoints {
		u, err := baseURL(e)
		if err != nil {
			return nil, 0, err
		}
		queue = append(queue, u)
	}
	seenURL := map[string]bool{}
	seenReplica := map[string]bool{}
	var nodes []auditNode
	var window int64
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		if seenURL[u] {
			continue
		}
		seenURL[u] = true
		st, err := c.status(ctx, u)
		if err != nil {
			return nil, 0, fmt.Errorf("find the cluster's members: %w", err)
		}
		if window == 0 {
			window = st.DedupWindowMs
		} else if st.DedupWindowMs != window {
			return nil, 0, fmt.Errorf("node %s runs a dedup window of %d ms, others %d ms: counts cannot be recomputed", u, st.DedupWindowMs, window)
		}
		if !seenReplica[st.Replica] {
			seenReplica[st.Replica] = true
			name := st.Name
			if name == "" {
				name = strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")
			}
			nodes = append(nodes, auditNode{Name: name, Region: st.Region, Replica: st.Replica, URL: u})
		}
		scheme, _, _ := strings.Cut(u, "://")
		for _, p := range st.Replication.Peers {
			if p.HTTPAddr == "" {
				return nil, 0, fmt.Errorf("peer %s of %s advertises no HTTP address: its log cannot be read", p.Name, u)
			}
			pu, err := baseURL(scheme + "://" + p.HTTPAddr)
			if err != nil {
				return nil, 0, fmt.Errorf("peer %s of %s: %w", p.Name, u, err)
			}
			queue = append(queue, pu)
		}
	}
	slices.SortFunc(nodes, func(a, b auditNode) int { return strings.Compare(a.Name, b.Name) })
	return nodes, window, nil
}

// readCounts fills every video's count on every node.
func readCounts(ctx context.Context, c *auditClient, conc int, rep *auditReport) error {
	type job struct{ video, node int }
	jobs := make(chan job)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex // protects firstErr
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				n, err := c.count(ctx, rep.Nodes[j.node].URL, rep.Videos[j.video].Video)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("node %s: %w", rep.Nodes[j.node].Name, err)
						cancel()
					}
					mu.Unlock()
					continue
				}
				rep.Videos[j.video].Counts[j.node] = n // each job writes its own cell
			}
		}()
	}
send:
	for v := range rep.Videos {
		for n := range rep.Nodes {
			select {
			case jobs <- job{v, n}:
			case <-ctx.Done():
				break send
			}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// write prints the report: the nodes read, each mismatching video (every
// video if verbose), and a summary line.
func (r *auditReport) write(w io.Writer, verbose bool) {
	var total int64
	for _, n := range r.Nodes {
		total += n.Events
	}
	fmt.Fprintf(w, "tally audit: %d nodes, %d events, %d videos, dedup window %s\n",
		len(r.Nodes), total, len(r.Videos), shortDuration(time.Duration(r.WindowMs)*time.Millisecond))
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "  node %-12s region %-6s replica %s  %s: %d events (counted %d, duplicate %d, rate_limited %d, denied %d, compensated %d)\n",
			n.Name, n.Region, n.Replica, n.URL, n.Events, n.Fates[store.FateCounted], n.Fates[store.FateDuplicate],
			n.Fates[store.FateRateLimited], n.Fates[store.FateDenied], n.Fates[store.FateCompensated])
	}
	for _, v := range r.Videos {
		if v.ok() && !verbose {
			continue
		}
		state := "ok"
		if !v.ok() {
			state = "MISMATCH"
		}
		fmt.Fprintf(w, "%s video %s: expected %d (counted %d, compensations %d of %d owed, duplicates %d, rate-limited %d)",
			state, v.Video, v.Expected, v.Counted, v.Compensations, v.Owed, v.Duplicates, v.RateLimited)
		for i, n := range r.Nodes {
			mark := ""
			if d := int64(v.Counts[i]) - int64(v.Expected); d != 0 {
				mark = fmt.Sprintf(" (%+d)", d)
			}
			fmt.Fprintf(w, "; %s %d%s", n.Name, v.Counts[i], mark)
		}
		fmt.Fprintln(w)
	}
	verdict := "no mismatch"
	if r.Mismatches > 0 {
		verdict = fmt.Sprintf("%d of %d videos mismatch", r.Mismatches, len(r.Videos))
	}
	fmt.Fprintf(w, "tally audit: %s (%d rounds, %s)\n", verdict, r.Rounds, r.Elapsed.Round(time.Millisecond))
}
