package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tallyhq/tally/httpapi/client"
)

// `tally drill` starts a real local cluster (3 regions of real tally serve
// processes), drives views into it through httpapi/client, and runs failover
// drills under that load:
//
//  1. kill-region: SIGKILL every node of the region the client considers
//     nearest; the client fails over; the region restarts on its data.
//  2. partition: cut that region off the network and heal it, with a second
//     writer inside the cut region so that both sides take views (needs
//     network namespaces: root and ip netns; skipped otherwise, and said why).
//  3. rolling-restart: SIGTERM each node in turn, wait until it is back and
//     in contact with every peer, then the next.
//
// Every fresh view is a new (video, user) pair and is re-sent until it is
// acknowledged, so each video's count must end exactly at its number of
// pairs; repeats of acknowledged pairs must never count. After each drill the
// load stops, every node is polled until it shows the expected counts (or all
// agree on others), and the drill reports requests, success rate, failovers,
// the longest staleness seen, the time to converge after recovery, and views
// lost (acknowledged, missing) and doubled (counted more than once).

// drillProfile sizes a drill run.
type drillProfile struct {
	Name           string
	Regions, Nodes int
	// Conns and Rate shape the main writer: concurrent calls, and calls
	// started per second at most.
	Conns int
	Rate  float64
	// Videos per drill; Repeat is the fraction of calls repeating an
	// acknowledged pair.
	Videos int
	Repeat float64
	// WarmAcks are acknowledged before the fault; DuringAcks at least during
	// it, which lasts MinFault at least; AfterAcks after recovery, before
	// the load stops. Each wait gives up after PhaseTimeout.
	WarmAcks, DuringAcks, AfterAcks int64
	MinFault, PhaseTimeout          time.Duration
	// SampleEvery is the pause between two staleness samples of a node.
	SampleEvery time.Duration
	// CutConns and CutRate shape each writer inside a region's namespace.
	CutConns int
	CutRate  float64
	// Settle bounds the re-sending of unacknowledged pairs; Converge the wait
	// for convergence; Stable is how long every node must agree on counts
	// other than the expected ones before the wait gives up early.
	Settle, Converge, Stable time.Duration
	// Timeout is the client's per-attempt timeout.
	Timeout time.Duration
	// LoadCap bounds each writer's life; MaxRun the whole run (it must end
	// inside one dedup window).
	LoadCap, MaxRun time.Duration
}

var drillProfiles = map[string]drillProfile{
	// short: the CI drill, about a minute and a half.
	"short": {
		Name: "short", Regions: 3, Nodes: 1, Conns: 6, Rate: 250, Videos: 12, Repeat: 0.1,
		WarmAcks: 150, DuringAcks: 400, AfterAcks: 150, MinFault: 8 * time.Second, PhaseTimeout: 30 * time.Second,
		SampleEvery: 200 * time.Millisecond, CutConns: 2, CutRate: 60,
		Settle: 30 * time.Second, Converge: 90 * time.Second, Stable: 8 * time.Second, Timeout: 2 * time.Second,
		LoadCap: 5 * time.Minute, MaxRun: 10 * time.Minute,
	},
	// full: by hand (make drill): two nodes per region, longer faults.
	"full": {
		Name: "full", Regions: 3, Nodes: 2, Conns: 16, Rate: 600, Videos: 32, Repeat: 0.1,
		WarmAcks: 2000, DuringAcks: 8000, AfterAcks: 2000, MinFault: 30 * time.Second, PhaseTimeout: 120 * time.Second,
		SampleEvery: 500 * time.Millisecond, CutConns: 4, CutRate: 100,
		Settle: 60 * time.Second, Converge: 180 * time.Second, Stable: 15 * time.Second, Timeout: 2 * time.Second,
		LoadCap: 15 * time.Minute, MaxRun: 30 * time.Minute,
	},
}

// Drill names, in the order they run.
const (
	drillKill    = "kill-region"
	drillCut     = "partition"
	drillRolling = "rolling-restart"
)

var allDrills = []string{drillKill, drillCut, drillRolling}

// drillOptions are the flags of tally drill.
type drillOptions struct {
	Profile drillProfile
	// Bin is the tally binary the nodes run (default: this one).
	Bin string
	// Dir holds data and logs; empty makes a temporary one, removed after a
	// passing run unless Keep.
	Dir  string
	Keep bool
	// Network is auto (namespaces when possible), netns or loopback.
	Network string
	Drills  []string
	Seed    uint64
}

// errTooCloseToMidnight: the run could straddle a dedup window.
var errTooCloseToMidnight = errors.New("too close to UTC midnight")

// runDrill is `tally drill` (and `tally drill writer`, the helper it runs
// inside a cut region).
func runDrill(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "writer" {
		return runDrillWriter(ctx, args[1:], os.Stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("tally drill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: tally drill [flags]\n\n"+
			"Starts a local cluster of real tally serve processes, drives views into it\n"+
			"through the Go client and runs failover drills under load: kill -9 the\n"+
			"nearest region, cut a region off the network and heal it (network\n"+
			"namespaces; root only), rolling restart. Exits 1 if a view was lost or\n"+
			"counted twice.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	profile := fs.String("profile", "short", "`name`: short (about 90s, CI) or full (3 regions × 2 nodes, longer faults)")
	var o drillOptions
	fs.StringVar(&o.Bin, "bin", "", "tally binary for the nodes (default: this one)")
	fs.StringVar(&o.Dir, "dir", "", "folder for data and logs (default: a temporary one, removed after a passing run)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temporary folder even if the run passes")
	fs.StringVar(&o.Network, "network", "auto", "auto (namespaces when root), netns, or loopback (no partition drill)")
	drills := fs.String("drills", strings.Join(allDrills, ","), "comma-separated drills to run")
	fs.Uint64Var(&o.Seed, "seed", 1, "random seed of the writers")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tally drill: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var ok bool
	if o.Profile, ok = drillProfiles[*profile]; !ok {
		fmt.Fprintf(stderr, "tally drill: unknown profile %q: want short or full\n", *profile)
		return 2
	}
	if o.Network != "auto" && o.Network != "netns" && o.Network != "loopback" {
		fmt.Fprintf(stderr, "tally drill: --network %q: want auto, netns or loopback\n", o.Network)
		return 2
	}
	for _, d := range strings.Split(*drills, ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		if !slices.Contains(allDrills, d) {
			fmt.Fprintf(stderr, "tally drill: unknown drill %q: want %s\n", d, strings.Join(allDrills, ", "))
			return 2
		}
		o.Drills = append(o.Drills, d)
	}
	if o.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(stderr, "tally drill: find own binary: %v\n", err)
			return 1
		}
		o.Bin = exe
	}
	rep, err := runDrills(ctx, o, stderr)
	if rep != nil {
		rep.write(stdout)
	}
	switch {
	case errors.Is(err, errTooCloseToMidnight):
		fmt.Fprintf(stderr, "tally drill: %v\n", err)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "tally drill: %v\n", err)
		return 1
	case !rep.passed():
		return 1
	}
	return 0
}

// driller runs the drills of one run on one cluster.
type driller struct {
	opts   drillOptions
	prof   drillProfile
	log    io.Writer
	c      *localCluster
	net    drillNet // nil on loopback
	netWhy string   // why there is no namespace network
	led    *ledger
	reader *countReader
}

// drillNet is a network whose regions can be cut off (netns_linux.go).
type drillNet interface {
	// Name describes the network for the report.
	Name() string
	// Place is clusterSpec.Place: how to run a process in region r.
	Place(r int) (wrap []string, host string)
	// Cut takes region r off the network; Heal puts it back.
	Cut(r int) error
	Heal(r int) error
	// Close removes what the network created.
	Close() error
}

// runDrills runs o's drills and returns their report; err is set when the
// run could not be carried out (the report then holds what was done).
func runDrills(ctx context.Context, o drillOptions, log io.Writer) (rep *drillReport, err error) {
	p := o.Profile
	now := time.Now().UTC()
	if left := now.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now); left < p.MaxRun {
		// Dedup windows are UTC days: a re-sent pair would count again in the next one.
		return nil, fmt.Errorf("%w: %s left in this dedup window, the %s profile may take %s", errTooCloseToMidnight, left.Round(time.Second), p.Name, p.MaxRun)
	}
	ctx, cancel := context.WithTimeout(ctx, p.MaxRun)
	defer cancel()
	d := &driller{opts: o, prof: p, log: log, led: newLedger(), reader: newCountReader()}
	rep = &drillReport{Profile: p}
	logf := func(format string, args ...any) { fmt.Fprintf(log, "tally drill: "+format+"\n", args...) }

	// Where the data goes.
	dir, temp := o.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "tally-drill-"); err != nil {
			return rep, fmt.Errorf("make a data folder: %w", err)
		}
		temp = true
	}
	rep.Dir = dir
	defer func() {
		if temp && !o.Keep && err == nil && rep.passed() {
			os.RemoveAll(dir)
			rep.Dir = ""
		}
	}()
	nodeLog, err := os.Create(dir + "/nodes.log")
	if err != nil {
		return rep, fmt.Errorf("create the node log: %w", err)
	}
	defer nodeLog.Close()

	// The network: namespaces when we may, else loopback (no partition drill).
	switch ok, why := netnsSupported(); {
	case o.Network == "loopback":
		d.netWhy = "--network loopback"
	case !ok && o.Network == "netns":
		return rep, fmt.Errorf("--network netns: %s", why)
	case !ok:
		d.netWhy = why
	default:
		if d.net, err = newNetnsNet(p.Regions, log); err != nil {
			if o.Network == "netns" {
				return rep, err
			}
			d.netWhy = fmt.Sprintf("could not build network namespaces: %v", err)
			err = nil
		} else {
			// Runs after the cluster's Stop (deferred later): namespaces go
			// once no process of ours is left in them.
			defer d.net.Close()
		}
	}
	spec := clusterSpec{Exe: o.Bin, Dir: dir, Regions: p.Regions, Nodes: p.Nodes, Log: &lockedWriter{w: nodeLog}}
	rep.Network = "loopback (127.0.0.1); partition drill skipped: " + d.netWhy
	if d.net != nil {
		spec.Place = d.net.Place
		rep.Network = d.net.Name()
	}
	logf("profile %s: %d regions × %d nodes, %s; data and node logs under %s", p.Name, p.Regions, p.Nodes, rep.Network, dir)

	start := time.Now()
	if d.c, err = startCluster(ctx, spec); err != nil {
		return rep, fmt.Errorf("start the cluster: %w (node logs: %s/nodes.log)", err, dir)
	}
	defer d.c.Stop(30 * time.Second) // only the processes startCluster started
	if err := d.waitMesh(ctx, 60*time.Second); err != nil {
		return rep, fmt.Errorf("cluster did not form: %w", err)
	}
	logf("cluster up and meshed in %s", time.Since(start).Round(time.Millisecond))

	var videos []string
	for i, name := range o.Drills {
		logf("drill %d/%d: %s", i+1, len(o.Drills), name)
		var res *drillResult
		switch name {
		case drillKill:
			res = d.drillKill(ctx)
		case drillCut:
			res = d.drillCut(ctx)
		case drillRolling:
			res = d.drillRolling(ctx)
		}
		if ctx.Err() != nil {
			// What a cut-short drill saw (timeouts, nodes gone) is the
			// interruption, not the system's doing.
			res.Err, res.Problems, res.Converged = fmt.Errorf("interrupted: %w", context.Cause(ctx)), nil, false
		}
		rep.Results = append(rep.Results, res)
		videos = append(videos, res.videos...)
		if res.Skipped != "" {
			logf("%s skipped: %s", name, res.Skipped)
		} else {
			logf("%s done: lost %d, doubled %d", name, res.Lost, res.Doubled)
		}
		if ctx.Err() != nil {
			return rep, fmt.Errorf("interrupted during %s: %w", name, ctx.Err())
		}
	}

	// Every drill's videos once more, on every node: later drills must not
	// have disturbed earlier counts.
	if len(videos) > 0 {
		rep.Audit = awaitConvergence(ctx, d.led, d.reader, d.c.Nodes, videos, p.Converge, p.Stable)
		rep.AuditVideos = len(videos)
		for _, v := range videos {
			rep.AuditViews += d.led.expected(v)
		}
		rep.Audited = true
		// And the batch layer's view: the raw event logs of every node,
		// recomputed with the dedup and claim rules, against every count.
		rep.EventLog, rep.EventLogErr = auditCluster(ctx, auditConfig{
			Endpoints: []string{d.c.Nodes[0].HTTP}, Token: d.c.AdminToken(), Wait: p.Converge,
		})
	}
	rep.Elapsed = time.Since(start)
	return rep, ctx.Err()
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex // protects w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (d *driller) logf(format string, args ...any) {
	fmt.Fprintf(d.log, "tally drill:   "+format+"\n", args...)
}

// regions lists the cluster's regions as the client wants them.
func (d *driller) regions() []client.Region {
	var out []client.Region
	for _, n := range d.c.Nodes {
		if len(out) == 0 || out[len(out)-1].Name != n.Region {
			out = append(out, client.Region{Name: n.Region})
		}
		out[len(out)-1].Endpoints = append(out[len(out)-1].Endpoints, "http://"+n.HTTP)
	}
	return out
}

func (d *driller) regionNodes(region string) []*clusterNode {
	var out []*clusterNode
	for _, n := range d.c.Nodes {
		if n.Region == region {
			out = append(out, n)
		}
	}
	return out
}

func (d *driller) regionIndex(region string) int {
	for i, r := range d.regions() {
		if r.Name == region {
			return i
		}
	}
	return -1
}

// targetRegion is the region the client considers nearest: the one its
// calls go to now. Loopback RTTs are all alike, so its RTT ranking changes
// from one probe round to the next; what counts is where the traffic goes.
func (d *driller) targetRegion(res *drillResult, l *drillLoad) string {
	byRTT, rtts := nearestRegion(l.api)
	region := l.w.Current()
	if region == "" {
		region = byRTT
	}
	res.note("the client sends to %s, its nearest region (best probe RTT per region: %s)", region, rtts)
	return region
}

// nearestRegion is the region of the endpoint the client would pick now:
// healthy, breaker closed, lowest RTT. It also describes every region's
// best RTT.
func nearestRegion(api *client.Client) (string, string) {
	best := map[string]time.Duration{}
	var nearest string
	var nearestRTT time.Duration
	for _, e := range api.Endpoints() {
		if !e.Healthy || e.Breaker != client.BreakerClosed || e.RTT <= 0 {
			continue
		}
		if r, ok := best[e.Region]; !ok || e.RTT < r {
			best[e.Region] = e.RTT
		}
		if nearest == "" || e.RTT < nearestRTT {
			nearest, nearestRTT = e.Region, e.RTT
		}
	}
	var parts []string
	for _, r := range sortedKeys(best) {
		parts = append(parts, fmt.Sprintf("%s %s", r, best[r].Round(time.Microsecond)))
	}
	if nearest == "" { // nothing measured: the client goes by configuration order
		nearest = api.Endpoints()[0].Region
	}
	return nearest, strings.Join(parts, ", ")
}

// statusJSON is the part of GET /v1/status the drill reads.
type statusJSON struct {
	Ready       bool `json:"ready"`
	Replication struct {
		Peers []struct {
			Name       string  `json:"name"`
			LagSeconds float64 `json:"lagSeconds"`
		} `json:"peers"`
	} `json:"replication"`
}

// contactLag is the replication lag under which a node counts as in contact
// with a peer: it held everything the peer had that recently.
const contactLag = 3.0 // seconds

// inContact reports whether node n is ready and in replication contact with
// every other node.
func (d *driller) inContact(ctx context.Context, n *clusterNode) bool {
	if d.reader.get(ctx, n, "/readyz", nil) != nil {
		return false
	}
	var st statusJSON
	if d.reader.get(ctx, n, "/v1/status", &st) != nil || !st.Ready {
		return false
	}
	for _, o := range d.c.Nodes {
		if o == n {
			continue
		}
		found := false
		for _, p := range st.Replication.Peers {
			if p.Name == o.Name && p.LagSeconds >= 0 && p.LagSeconds < contactLag {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// waitFor polls cond every 50ms until it holds (true), timeout passes or
// ctx ends (false).
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		pause(ctx, 50*time.Millisecond)
	}
}

// waitMesh waits until every node is in contact with every other.
func (d *driller) waitMesh(ctx context.Context, timeout time.Duration) error {
	var missing []string
	ok := waitFor(ctx, timeout, func() bool {
		missing = missing[:0]
		for _, n := range d.c.Nodes {
			if !d.inContact(ctx, n) {
				missing = append(missing, n.Name)
			}
		}
		return len(missing) == 0
	})
	if !ok {
		return fmt.Errorf("after %s, not in contact with every peer: %s", timeout, strings.Join(missing, ", "))
	}
	return nil
}

// ---------------------------------------------------------------------------
// One drill
// ---------------------------------------------------------------------------

// drillResult is what one drill observed.
type drillResult struct {
	Name, Title string
	// Skipped says why the drill did not run (empty if it ran).
	Skipped string
	// Notes describe what was done; Problems are failures other than
	// lost or doubled views (an unclean stop, a cut that did not cut).
	Notes, Problems []string
	Err             error

	Requests, OK        int64
	Attempts, Failovers uint64
	Errors, AnsweredBy  map[string]int64
	Resends             int64
	Repeats             int64
	RepeatsCounted      int64
	Views               uint64 // distinct fresh pairs: the expected total
	Unsettled           int    // pairs never acknowledged

	MaxStaleness   time.Duration
	StaleRegion    string
	StaleSamples   int
	Converged      bool // exact, or stable agreement (then Lost/Doubled tell)
	ConvergeAfter  time.Duration
	ConvergeDetail string
	Lost, Doubled  int64

	videos []string
}

func (r *drillResult) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *drillResult) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// passed: ran, and every view counted exactly once everywhere.
func (r *drillResult) passed() bool {
	return r.Skipped != "" || (r.Err == nil && r.Converged && r.Lost == 0 && r.Doubled == 0 && r.Unsettled == 0 && len(r.Problems) == 0)
}

// drillLoad is the running part of a drill: the client, the writer and the
// staleness sampler.
type drillLoad struct {
	videos     []string
	api        *client.Client
	stopProbes context.CancelFunc
	stats      *writerStats
	events     *ledgerEvents
	w          *viewWriter
	sampler    *stalenessSampler
	finished   bool
}

// begin starts a drill's load on videos tag-v00.. with a new client.
func (d *driller) begin(ctx context.Context, tag string, res *drillResult) (*drillLoad, error) {
	p := d.prof
	l := &drillLoad{stats: newWriterStats(), events: &ledgerEvents{led: d.led}}
	for i := range p.Videos {
		l.videos = append(l.videos, fmt.Sprintf("%s-v%02d", tag, i))
	}
	res.videos = l.videos
	api, err := client.New(drillClientConfig(d.regions(), p.Timeout, d.opts.Seed+uint64(tag[0])))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	l.api = api
	probeCtx, stop := context.WithCancel(ctx)
	l.stopProbes = stop
	if err := api.Probe(probeCtx); err != nil {
		stop()
		return nil, fmt.Errorf("probe the regions: %w", err)
	}
	api.Start(probeCtx)
	l.sampler = startSampler(ctx, d.led, d.reader, d.c.Nodes, l.videos, p.SampleEvery)
	l.w = startWriter(ctx, writerConfig{
		API: api, Events: l.events, Stats: l.stats, Videos: l.videos, Prefix: tag, Conns: p.Conns,
		Rate: p.Rate, Repeat: p.Repeat, MaxCalls: int64(p.Rate * p.LoadCap.Seconds()), Duration: p.LoadCap,
		Seed: d.opts.Seed + uint64(tag[0]),
	})
	return l, nil
}

// abort stops whatever finish did not (an early return).
func (l *drillLoad) abort() {
	if l == nil || l.finished {
		return
	}
	l.w.Stop()
	l.sampler.Stop()
	l.stopProbes()
	l.api.CloseIdleConnections()
}

// waitAcks waits until cond holds, for at most the profile's phase timeout;
// if it does not, the drill goes on and says so.
func (d *driller) waitAcks(ctx context.Context, res *drillResult, l *drillLoad, what string, cond func() bool) {
	start, before := time.Now(), l.w.Acked()
	if !waitFor(ctx, d.prof.PhaseTimeout, cond) && ctx.Err() == nil {
		res.note("%s: gave up waiting after %s (%d views acknowledged meanwhile)", what, d.prof.PhaseTimeout, l.w.Acked()-before)
		d.logf("%s: gave up after %s", what, d.prof.PhaseTimeout)
		return
	}
	d.logf("%s: %d views acknowledged in %s", what, l.w.Acked()-before, time.Since(start).Round(time.Millisecond))
}

// finish stops the load, settles the unacknowledged pairs, waits for
// convergence and fills res. recovered is when the fault ended.
func (d *driller) finish(ctx context.Context, l *drillLoad, res *drillResult, recovered time.Time, inside ...*cutWriter) {
	p := d.prof
	l.w.Stop()
	stopped := time.Now()
	var extraAttempts, extraFailovers uint64
	for _, cw := range inside { // stopped: their figures are final
		l.stats.add(cw.stats)
		extraAttempts += cw.attempts
		extraFailovers += cw.failovers
	}
	open := d.led.unacked(l.videos)
	left := settleViews(ctx, l.api, open, l.events, l.stats, p.Conns, time.Now().Add(p.Settle))
	res.Unsettled = len(left)
	if len(open) > 0 {
		d.logf("re-sent %d unacknowledged views until acknowledged (%d left)", len(open), len(left))
	}
	conv := awaitConvergence(ctx, d.led, d.reader, d.c.Nodes, l.videos, p.Converge, p.Stable)
	res.MaxStaleness, res.StaleRegion, res.StaleSamples = l.sampler.Stop()
	l.stopProbes()
	l.api.CloseIdleConnections()
	l.finished = true

	cs := l.api.Stats()
	l.stats.mu.Lock()
	res.Requests, res.OK = l.stats.calls, l.stats.ok
	res.Errors, res.AnsweredBy = l.stats.errors, l.stats.answeredBy
	res.Resends, res.Repeats, res.RepeatsCounted = l.stats.resends, l.stats.repeats, l.stats.repeatsCounted
	l.stats.mu.Unlock()
	res.Attempts, res.Failovers = cs.Attempts+extraAttempts, cs.Failovers+extraFailovers
	for _, v := range l.videos {
		res.Views += d.led.expected(v)
	}
	res.Converged = conv.Exact || conv.Agreed
	res.Lost, res.Doubled, res.ConvergeDetail = conv.Lost, conv.Doubled, conv.Detail
	res.ConvergeAfter = conv.At.Sub(recovered)
	if !res.Converged {
		res.problem("did not converge within %s of the load stopping", p.Converge)
	}
	switch {
	case conv.Exact:
		res.note("load stopped %s after recovery; %s later every node showed every expected count",
			stopped.Sub(recovered).Round(time.Millisecond), conv.At.Sub(stopped).Round(time.Millisecond))
	case conv.Agreed:
		res.note("load stopped %s after recovery; from %s later every node showed the same counts, not the expected ones, for %s",
			stopped.Sub(recovered).Round(time.Millisecond), conv.At.Sub(stopped).Round(time.Millisecond), p.Stable)
	}
}

// drillKill: SIGKILL every node of the nearest region under load, keep
// going, restart it on its data directories.
func (d *driller) drillKill(ctx context.Context) *drillResult {
	p := d.prof
	res := &drillResult{Name: drillKill, Title: "kill -9 every node of the nearest region under load, restart it on its data"}
	l, err := d.begin(ctx, "k", res)
	if err != nil {
		res.Err = err
		return res
	}
	defer l.abort()
	d.waitAcks(ctx, res, l, "warm-up", func() bool { return l.w.Acked() >= p.WarmAcks })

	region := d.targetRegion(res, l)
	victims := d.regionNodes(region)
	at, killed := l.w.Acked(), time.Now()
	pids := make([]int, len(victims))
	var wg sync.WaitGroup
	for i, n := range victims {
		pids[i] = n.Pid()
		wg.Go(n.Kill)
	}
	wg.Wait()
	for i, n := range victims {
		res.note("SIGKILL %s (pid %d): %s", n.Name, pids[i], n.exitState())
	}
	d.logf("killed every node of %s", region)
	d.waitAcks(ctx, res, l, "region down", func() bool {
		return l.w.Acked()-at >= p.DuringAcks && time.Since(killed) >= p.MinFault
	})
	during, down := l.w.Acked()-at, time.Since(killed)
	restart := time.Now()
	errs := make([]error, len(victims))
	for i, n := range victims {
		wg.Go(func() { errs[i] = d.c.Start(ctx, n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		res.Err = fmt.Errorf("restart %s: %w", region, err)
		return res
	}
	recovered := time.Now()
	res.note("%s was down %s; the other regions acknowledged %d views meanwhile; restarted in %s",
		region, down.Round(time.Millisecond), during, recovered.Sub(restart).Round(time.Millisecond))
	for _, n := range victims {
		if !waitFor(ctx, 60*time.Second, func() bool { return d.inContact(ctx, n) }) {
			res.problem("%s not back in contact with every peer within 60s of its restart", n.Name)
		}
	}
	res.note("back in contact with every peer %s after the restart", time.Since(recovered).Round(time.Millisecond))
	at = l.w.Acked()
	d.waitAcks(ctx, res, l, "after recovery", func() bool { return l.w.Acked()-at >= p.AfterAcks })
	d.finish(ctx, l, res, recovered)
	return res
}

// drillRolling: SIGTERM each node in turn under load; the next only once the
// previous is back and in contact with every peer.
func (d *driller) drillRolling(ctx context.Context) *drillResult {
	p := d.prof
	res := &drillResult{Name: drillRolling, Title: "rolling restart under load: SIGTERM each node, wait until ready, next"}
	l, err := d.begin(ctx, "r", res)
	if err != nil {
		res.Err = err
		return res
	}
	defer l.abort()
	d.waitAcks(ctx, res, l, "warm-up", func() bool { return l.w.Acked() >= p.WarmAcks })
	for _, n := range d.c.Nodes {
		start := time.Now()
		n.Terminate(30 * time.Second)
		state := n.exitState()
		stopped := time.Since(start)
		if state != "exit status 0" {
			res.problem("%s did not stop cleanly on SIGTERM: %s", n.Name, state)
		}
		if err := d.c.Start(ctx, n); err != nil {
			res.Err = fmt.Errorf("restart %s: %w", n.Name, err)
			return res
		}
		if !waitFor(ctx, 60*time.Second, func() bool { return d.inContact(ctx, n) }) {
			res.problem("%s not back in contact with every peer within 60s", n.Name)
		}
		res.note("%s: SIGTERM → %s in %s; back, ready and in contact with every peer %s later",
			n.Name, state, stopped.Round(time.Millisecond), (time.Since(start) - stopped).Round(time.Millisecond))
		d.logf("restarted %s", n.Name)
	}
	recovered := time.Now()
	at := l.w.Acked()
	d.waitAcks(ctx, res, l, "after the last restart", func() bool { return l.w.Acked()-at >= p.AfterAcks })
	d.finish(ctx, l, res, recovered)
	return res
}

// drillCut: cut the region the client sends to off the network, while a
// writer inside every region (in its namespace) keeps writing there, so
// that both sides of the cut take views; heal; converge.
func (d *driller) drillCut(ctx context.Context) *drillResult {
	p := d.prof
	res := &drillResult{Name: drillCut, Title: "cut the nearest region off the network under load (writers inside every region), heal"}
	if d.net == nil {
		res.Skipped = d.netWhy
		return res
	}
	l, err := d.begin(ctx, "c", res)
	if err != nil {
		res.Err = err
		return res
	}
	defer l.abort()
	regions := d.regions()
	inside := make([]*cutWriter, len(regions))
	for r := range regions {
		if inside[r], err = d.startCutWriter(ctx, r, l.videos); err != nil {
			res.Err = err
			return res
		}
		defer inside[r].stop(d.log)
	}
	d.waitAcks(ctx, res, l, "warm-up", func() bool {
		for _, cw := range inside {
			if cw.acks.Load() < max(p.WarmAcks/4, 1) {
				return false
			}
		}
		return l.w.Acked() >= p.WarmAcks
	})

	region := d.targetRegion(res, l)
	r := d.regionIndex(region)
	cw := inside[r]
	rootAt, cutAt := l.w.Acked(), cw.acks.Load()
	cut := time.Now()
	if err := d.net.Cut(r); err != nil {
		res.Err = err
		return res
	}
	healed := false
	defer func() {
		if !healed {
			d.net.Heal(r) //nolint:errcheck // best effort on an early return; Close removes the link anyway
		}
	}()
	d.logf("cut %s off the network", region)
	for _, n := range d.regionNodes(region) {
		if d.reader.get(ctx, n, "/healthz", nil) == nil {
			res.problem("%s still answered from outside its region after the cut", n.Name)
		}
	}
	d.waitAcks(ctx, res, l, "region cut off", func() bool {
		return time.Since(cut) >= p.MinFault && l.w.Acked()-rootAt >= p.DuringAcks && cw.acks.Load()-cutAt >= max(p.DuringAcks/4, 1)
	})
	rootDuring, cutDuring, lasted := l.w.Acked()-rootAt, cw.acks.Load()-cutAt, time.Since(cut)
	if err := d.net.Heal(r); err != nil {
		res.Err = err
		return res
	}
	healed = true
	recovered := time.Now()
	res.note("%s was cut off for %s; meanwhile the client outside got %d views acknowledged (by the other regions), the writer inside %s %d",
		region, lasted.Round(time.Millisecond), rootDuring, region, cutDuring)
	if rootDuring == 0 || cutDuring == 0 {
		res.problem("the two sides did not both take views during the cut (outside %d, inside %d)", rootDuring, cutDuring)
	}
	for _, n := range d.regionNodes(region) {
		if !waitFor(ctx, 60*time.Second, func() bool { return d.inContact(ctx, n) }) {
			res.problem("%s not back in contact with every peer within 60s of the heal", n.Name)
		}
	}
	res.note("%s back in contact with every peer %s after the heal", region, time.Since(recovered).Round(time.Millisecond))
	at := l.w.Acked()
	d.waitAcks(ctx, res, l, "after the heal", func() bool { return l.w.Acked()-at >= p.AfterAcks })
	var parts []string
	for i, w := range inside {
		if err := w.stop(d.log); err != nil {
			res.problem("writer inside %s: %v", regions[i].Name, err)
		}
		parts = append(parts, fmt.Sprintf("%s %d calls, %d acknowledged, %d left", regions[i].Name, w.stats.calls, w.acks.Load(), w.left.Load()))
	}
	res.note("writers inside the regions: %s (left: re-sent from outside)", strings.Join(parts, "; "))
	d.finish(ctx, l, res, recovered, inside...)
	return res
}

// ---------------------------------------------------------------------------
// The writer inside a cut region
// ---------------------------------------------------------------------------

// cutWriter is a `tally drill writer` process running inside a region's
// namespace, whose report lines feed the ledger.
type cutWriter struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed once the process was waited for

	acks, left          atomic.Int64
	stats               *writerStats // complete once done
	attempts, failovers uint64       // from its stats line, once done
	reportErr           error        // a line it could not read
	stopOnce            sync.Once
	stopErr             error
}

func (d *driller) startCutWriter(ctx context.Context, r int, videos []string) (*cutWriter, error) {
	p := d.prof
	wrap, _ := d.net.Place(r)
	reg := d.regions()[r]
	args := append(slices.Clone(wrap[1:]), d.opts.Bin, "drill", "writer",
		"--region", reg.Name+"="+strings.Join(reg.Endpoints, ","),
		"--videos", strings.Join(videos, ","), "--prefix", "in-"+reg.Name,
		"--conns", strconv.Itoa(p.CutConns), "--rate", fmt.Sprint(p.CutRate), "--repeat", fmt.Sprint(p.Repeat),
		"--max-calls", strconv.FormatInt(int64(p.CutRate*p.LoadCap.Seconds()), 10), "--max-duration", p.LoadCap.String(),
		"--settle", p.Settle.String(), "--timeout", p.Timeout.String(), "--seed", strconv.FormatUint(d.opts.Seed+uint64(100+r), 10))
	cmd := exec.Command(wrap[0], args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = &prefixWriter{prefix: "[writer in " + reg.Name + "] ", w: d.log}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("writer in %s: %w", reg.Name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("writer in %s: %w", reg.Name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the writer in %s: %w", reg.Name, err)
	}
	cw := &cutWriter{cmd: cmd, stdin: stdin, done: make(chan struct{}), stats: newWriterStats()}
	go func() {
		defer close(cw.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if err := cw.handle(sc.Text(), d.led); err != nil && cw.reportErr == nil {
				cw.reportErr = err
			}
		}
		io.Copy(io.Discard, stdout) //nolint:errcheck // drain after a scan error
		cmd.Wait()                  //nolint:errcheck // the exit state is read from ProcessState
	}()
	return cw, nil
}

// handle reads one report line of the writer.
func (cw *cutWriter) handle(line string, led *ledger) error {
	f := strings.Fields(line)
	bad := fmt.Errorf("writer report line %q", line)
	if len(f) == 0 {
		return bad
	}
	switch {
	case f[0] == "sent" && len(f) == 3:
		led.sent(viewKey{f[1], f[2]})
	case f[0] == "ack" && len(f) == 5:
		ns, err := strconv.ParseInt(f[4], 10, 64)
		if err != nil {
			return bad
		}
		led.ack(viewKey{f[1], f[2]}, time.Unix(0, ns))
		cw.acks.Add(1)
	case f[0] == "repeat" && len(f) == 5:
		// Its figures come with the stats line.
	case f[0] == "left" && len(f) == 3:
		cw.left.Add(1)
	case f[0] == "stats":
		st := cw.stats
		st.mu.Lock()
		defer st.mu.Unlock()
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				st.calls = n
			case "ok":
				st.ok = n
			case "resends":
				st.resends = n
			case "repeats":
				st.repeats = n
			case "repeatsCounted":
				st.repeatsCounted = n
			case "attempts":
				cw.attempts = uint64(n)
			case "failovers":
				cw.failovers = uint64(n)
			case "errors":
				parseKVList(v, st.errors)
			case "answeredBy":
				parseKVList(v, st.answeredBy)
			}
		}
	default:
		return bad
	}
	return nil
}

// stop closes the writer's stdin (its signal to stop) and waits for it to
// settle and exit; past a deadline it is killed, by its PID. Safe to call
// more than once.
func (cw *cutWriter) stop(log io.Writer) error {
	cw.stopOnce.Do(func() {
		cw.stdin.Close() //nolint:errcheck // a closed pipe is the point
		t := time.NewTimer(2 * time.Minute)
		defer t.Stop()
		select {
		case <-cw.done:
		case <-t.C:
			fmt.Fprintf(log, "tally drill: the writer (pid %d) did not stop in 2m; killing it\n", cw.cmd.Process.Pid)
			cw.cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile
			<-cw.done
		}
		if st := cw.cmd.ProcessState; st == nil || !st.Success() {
			cw.stopErr = fmt.Errorf("exited with %v", st)
		}
		cw.stopErr = errors.Join(cw.stopErr, cw.reportErr)
	})
	return cw.stopErr
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

// drillReport is the outcome of a run.
type drillReport struct {
	Profile     drillProfile
	Network     string
	Dir         string // kept data and logs ("" if removed)
	Results     []*drillResult
	Audited     bool
	Audit       convergence
	AuditVideos int
	AuditViews  uint64
	// EventLog is tally audit's check of the cluster at the end: every
	// node's raw event log recomputed and compared with every node's counts.
	EventLog    *auditReport
	EventLogErr error
	Elapsed     time.Duration
}

func (r *drillReport) passed() bool {
	if r == nil {
		return false
	}
	for _, res := range r.Results {
		if !res.passed() {
			return false
		}
	}
	if r.Audited && (r.EventLogErr != nil || r.EventLog == nil || r.EventLog.Mismatches > 0) {
		return false
	}
	return !r.Audited || ((r.Audit.Exact || r.Audit.Agreed) && r.Audit.Lost == 0 && r.Audit.Doubled == 0)
}

func (r *drillReport) write(w io.Writer) {
	var b strings.Builder
	p := r.Profile
	fmt.Fprintf(&b, "tally drill: profile %s, %d regions × %d nodes, %s\n", p.Name, p.Regions, p.Nodes, r.Network)
	for i, res := range r.Results {
		fmt.Fprintf(&b, "\n== %d. %s: %s\n", i+1, res.Name, res.Title)
		if res.Skipped != "" {
			fmt.Fprintf(&b, "   SKIPPED: %s\n", res.Skipped)
			continue
		}
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "   %s\n", n)
		}
		if res.Err != nil {
			fmt.Fprintf(&b, "   ERROR: %v\n", res.Err)
		}
		rate := 0.0
		if res.Requests > 0 {
			rate = 100 * float64(res.OK) / float64(res.Requests)
		}
		fmt.Fprintf(&b, "   requests %d, ok %d (success %.2f%%), attempts %d, failovers %d\n", res.Requests, res.OK, rate, res.Attempts, res.Failovers)
		fmt.Fprintf(&b, "   answered by: %s; errors: %s\n", kvList(res.AnsweredBy), kvList(res.Errors))
		fmt.Fprintf(&b, "   views %d (fresh pairs, each acknowledged), re-sent after a failure %d, unsettled %d\n", res.Views, res.Resends, res.Unsettled)
		fmt.Fprintf(&b, "   repeats of acknowledged pairs %d, answered counted %d (by a region the claim had not reached yet; the final counts decide)\n",
			res.Repeats, res.RepeatsCounted)
		fmt.Fprintf(&b, "   max staleness %s (%s, %d samples); converged %s after recovery\n",
			res.MaxStaleness.Round(time.Millisecond), res.StaleRegion, res.StaleSamples, convergedText(res))
		fmt.Fprintf(&b, "   lost %d, doubled %d", res.Lost, res.Doubled)
		if res.ConvergeDetail != "" {
			fmt.Fprintf(&b, " (%s)", res.ConvergeDetail)
		}
		b.WriteByte('\n')
		for _, pr := range res.Problems {
			fmt.Fprintf(&b, "   PROBLEM: %s\n", pr)
		}
		fmt.Fprintf(&b, "   => %s\n", map[bool]string{true: "PASS", false: "FAIL"}[res.passed()])
	}
	b.WriteString("\nsummary\n")
	fmt.Fprintf(&b, "  %-16s %9s %9s %9s %10s %10s %6s %8s  %s\n", "drill", "requests", "success", "failovers", "staleness", "converge", "lost", "doubled", "result")
	for _, res := range r.Results {
		if res.Skipped != "" {
			fmt.Fprintf(&b, "  %-16s skipped: %s\n", res.Name, res.Skipped)
			continue
		}
		rate := 0.0
		if res.Requests > 0 {
			rate = 100 * float64(res.OK) / float64(res.Requests)
		}
		fmt.Fprintf(&b, "  %-16s %9d %8.2f%% %9d %10s %10s %6d %8d  %s\n", res.Name, res.Requests, rate, res.Failovers,
			res.MaxStaleness.Round(time.Millisecond), convergedText(res), res.Lost, res.Doubled, map[bool]string{true: "PASS", false: "FAIL"}[res.passed()])
	}
	if r.Audited {
		a := r.Audit
		state := "every node exact"
		if !a.Exact {
			state = "nodes agree, counts differ"
			if !a.Agreed {
				state = "nodes disagree"
			}
		}
		fmt.Fprintf(&b, "  final audit: %d videos, %d views, every node: %s; lost %d, doubled %d\n", r.AuditVideos, r.AuditViews, state, a.Lost, a.Doubled)
		switch {
		case r.EventLogErr != nil:
			fmt.Fprintf(&b, "  event-log audit (tally audit): could not complete: %v\n", r.EventLogErr)
		case r.EventLog != nil:
			b.WriteString("  event-log audit (tally audit):\n")
			var el strings.Builder
			r.EventLog.write(&el, false)
			for _, line := range strings.Split(strings.TrimRight(el.String(), "\n"), "\n") {
				fmt.Fprintf(&b, "    %s\n", line)
			}
		}
	}
	if r.Elapsed > 0 {
		fmt.Fprintf(&b, "  took %s\n", r.Elapsed.Round(time.Second))
	}
	if r.Dir != "" {
		fmt.Fprintf(&b, "  data and node logs kept in %s\n", r.Dir)
	}
	fmt.Fprintf(&b, "tally drill: %s\n", map[bool]string{true: "PASSED", false: "FAILED"}[r.passed()])
	io.WriteString(w, b.String()) //nolint:errcheck // best-effort report
}

func convergedText(res *drillResult) string {
	if !res.Converged {
		return "never"
	}
	return res.ConvergeAfter.Round(time.Millisecond).String()
}
