package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tallyhq/tally/httpapi/loadgen"
)

const benchUsage = `Usage:
  tally bench visibility --endpoints URL1,URL2,... [flags]
      ack-to-visibility: probes write one view of a fresh video to one node
      (rotating) and poll every other node until it shows it, while a paced
      background load runs against all of them.
  tally bench repair [flags]
      repair after a partition heals: starts its own cluster of real tally
      serve processes on 127.0.0.1, kills one node, ingests --keys distinct
      videos into another, restarts the killed node on its data directory and
      times until it holds every key.

  tally bench compare [flags]
      tally against the seeds' Redis design side by side: starts a durable
      tally serve, redis-server (appendonly yes, appendfsync always) with the
      seeds' SISMEMBER/INCR/SADD dedup script called by EVALSHA, and a bare
      echo server as the HTTP ceiling, all on 127.0.0.1; drives each with the
      same closed-loop generator and mix, and prints ops/s, latency
      percentiles, server CPU and the ratios.
  tally bench scale [flags]
      many distinct videos on one node: ingests --keys videos (one view
      each) into a durable tally serve, then reports memory and disk per key,
      the time to restart, and GET latency on cold keys (read from disk).
  tally bench echo-server --http ADDR
      the echo ceiling of "tally bench compare" on its own.

Run "tally bench NAME -h" for the flags.
`

// runBench is "tally bench": benchmarks on loopback (cluster ones, and the
// comparison with the seeds' Redis design).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return 2
	}
	switch args[0] {
	case "visibility":
		return runBenchVisibility(ctx, args[1:], stdout, stderr)
	case "repair":
		return runBenchRepair(ctx, args[1:], stdout, stderr)
	case "compare":
		return runBenchCompare(ctx, args[1:], stdout, stderr)
	case "scale":
		return runBenchScale(ctx, args[1:], stdout, stderr)
	case "echo-server":
		return runBenchEchoServer(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, benchUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "tally bench: unknown benchmark %q\n\n%s", args[0], benchUsage)
		return 2
	}
}

// runBenchVisibility is "tally bench visibility".
func runBenchVisibility(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally bench visibility", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("endpoints", "", "comma-separated base URLs of the nodes (at least two)")
	var vc loadgen.VisibilityConfig
	fs.IntVar(&vc.Probes, "probes", loadgen.DefaultProbes, "number of probes")
	fs.DurationVar(&vc.MaxDuration, "max-duration", loadgen.DefaultVisibilityCap, "no probe starts after this long (max 10m)")
	fs.DurationVar(&vc.ProbeTimeout, "probe-timeout", loadgen.DefaultProbeTimeout, "how long one probe waits for every node to show its view")
	fs.DurationVar(&vc.PollInterval, "poll", loadgen.DefaultPollInterval, "pause between two reads of one node while a probe waits")
	fs.DurationVar(&vc.Gap, "gap", loadgen.DefaultProbeGap, "upper bound of the random pause between probes")
	fs.StringVar(&vc.RunID, "run-id", "", "names the probe videos probe-RUNID-i (default: the start time)")
	fs.Int64Var(&vc.Seed, "seed", 1, "random seed (probe pauses, background load)")
	label := fs.String("label", "", "free text printed on the summary line (e.g. the sync interval of the nodes)")
	var lc loadgen.MultiConfig
	fs.Float64Var(&lc.Rate, "load-rate", 1000, "background load, requests/s over all nodes (0: no background load)")
	fs.IntVar(&lc.Connections, "load-conns", 2, "background load connections per node")
	fs.StringVar(&lc.Mode, "load-mode", loadgen.ModeMixed, "background load mode: view, get or mixed")
	fs.Float64Var(&lc.GetRatio, "load-get-ratio", 0.5, "fraction of GETs in mixed mode")
	fs.IntVar(&lc.Videos, "load-videos", 10000, "distinct videos of the background load")
	warmup := fs.Duration("warmup", 2*time.Second, "background load before the first probe")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tally bench visibility: unexpected arguments %q\n", fs.Args())
		return 2
	}
	eps, err := loadgen.ParseTargets(*endpoints)
	if err != nil {
		fmt.Fprintf(stderr, "tally bench visibility: --endpoints: %v\n", err)
		return 2
	}
	if len(eps) < 2 {
		fmt.Fprintln(stderr, "tally bench visibility: --endpoints: want at least two nodes")
		return 2
	}
	vc.Endpoints = eps
	if *warmup < 0 || *warmup > time.Minute {
		fmt.Fprintln(stderr, "tally bench visibility: --warmup: want 0..1m")
		return 2
	}
	if vc.RunID == "" {
		vc.RunID = fmt.Sprintf("%d", time.Now().UnixNano())
	}
	// Every node must be in contact with every other first, or the first
	// probes would time the cluster's formation.
	cl := newBenchClient()
	meshStart := time.Now()
	err = benchWait(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
		for _, ep := range eps {
			st, err := cl.status(ctx, ep)
			if err != nil {
				return false, err
			}
			if !st.Replication.Enabled {
				return false, fmt.Errorf("%s does not replicate", ep)
			}
			if n := benchContacted(st); n < len(eps)-1 {
				return false, fmt.Errorf("%s in contact with %d of %d peers", ep, n, len(eps)-1)
			}
		}
		return true, nil
	})
	if err != nil {
		fmt.Fprintf(stderr, "tally bench visibility: the nodes are not all in contact: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "tally bench visibility: %d nodes in contact with each other (waited %.1fs)\n", len(eps), time.Since(meshStart).Seconds())

	if lc.Mode == loadgen.ModeBatch {
		fmt.Fprintln(stderr, "tally bench visibility: --load-mode batch is not supported")
		return 2
	}

	// The background load: paced, spread over every node, stopped when the
	// probes are done (its duration is only a safety cap).
	lc.Targets = eps
	lc.Users = 1_000_000
	lc.RepeatFraction = 0.1
	lc.Seed = vc.Seed
	lc.Timeout = 5 * time.Second
	probeCap := vc.MaxDuration
	if probeCap == 0 {
		probeCap = loadgen.DefaultVisibilityCap
	}
	lc.Duration = min(*warmup+probeCap+vc.ProbeTimeout+10*time.Second, loadgen.MaxDuration)
	stop := make(chan struct{})
	lc.Stop = stop
	var (
		loadRes  loadgen.Result
		loadErr  error
		loadDone = make(chan struct{})
	)
	if lc.Rate > 0 {
		// Fail fast on a bad load config rather than after the warm-up.
		c := lc.Config
		c.Target = eps[0]
		if err := c.Validate(); err != nil {
			fmt.Fprintf(stderr, "tally bench visibility: background load: %v\n", err)
			return 2
		}
		go func() {
			defer close(loadDone)
			loadRes, loadErr = loadgen.RunMulti(ctx, lc)
		}()
		fmt.Fprintf(stderr, "tally bench visibility: background load %s at %.0f req/s over %d nodes (%d conns each); warm-up %s\n",
			lc.Mode, lc.Rate, len(eps), lc.Connections, *warmup)
		select {
		case <-time.After(*warmup):
		case <-ctx.Done():
		}
	} else {
		close(loadDone)
	}

	fmt.Fprintf(stderr, "tally bench visibility: %d probes over %d nodes (poll every %s, probe timeout %s, cap %s)\n",
		vc.Probes, len(eps), vc.PollInterval, vc.ProbeTimeout, probeCap)
	res, verr := loadgen.RunVisibility(ctx, vc)
	close(stop)
	<-loadDone

	v := res.Visible
	fmt.Fprintf(stdout, "visibility: label=%s nodes=%d probes=%d complete=%d timedOut=%d failed=%d p50=%s p90=%s p99=%s max=%s mean=%s ack_p50=%s ack_p99=%s",
		benchLabel(*label), len(eps), len(res.Probes), res.Complete, res.TimedOut, res.Failed,
		benchDur(v.P50), benchDur(v.P90), benchDur(v.P99), benchDur(v.Max), benchDur(v.Mean),
		benchDur(res.Ack.P50), benchDur(res.Ack.P99))
	if lc.Rate > 0 {
		fmt.Fprintf(stdout, " load_req/s=%.1f load_errors=%d load_p99=%s\n", loadRes.RequestsPerSec, loadRes.Errors, benchDur(loadRes.Latency.P99))
	} else {
		fmt.Fprintln(stdout, " load_req/s=0 load_errors=0 load_p99=-")
	}
	res.Write(stdout, eps)
	if lc.Rate > 0 {
		fmt.Fprint(stdout, "background load: ")
		loadRes.Write(stdout)
	}
	switch {
	case verr != nil:
		fmt.Fprintf(stderr, "tally bench visibility: %v\n", verr)
		return 1
	case loadErr != nil:
		fmt.Fprintf(stderr, "tally bench visibility: background load: %v\n", loadErr)
		return 1
	case res.Complete == 0 || res.Complete != len(res.Probes):
		fmt.Fprintf(stderr, "tally bench visibility: %d of %d probes incomplete\n", len(res.Probes)-res.Complete, len(res.Probes))
		return 1
	}
	return 0
}

func benchLabel(s string) string {
	if s = strings.Join(strings.Fields(s), "_"); s == "" {
		return "-"
	}
	return s
}

// benchDur prints d in milliseconds with two decimals, or seconds above 10s.
func benchDur(d time.Duration) string {
	if d >= 10*time.Second {
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
}

// benchRepairConfig is what "tally bench repair" does.
type benchRepairConfig struct {
	Keys, Batch, Conns, Regions, Sample int
	Timeout                             time.Duration
	Dir                                 string
	Keep                                bool
	Extra                               []string
	Stop                                string // kill or term
	Seed                                int64
}

// runBenchRepair is "tally bench repair".
func runBenchRepair(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally bench repair", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rc benchRepairConfig
	fs.IntVar(&rc.Keys, "keys", 1_000_000, "distinct videos (one view each) ingested while the node is down")
	fs.IntVar(&rc.Batch, "batch", 10_000, "events per POST /v1/events")
	fs.IntVar(&rc.Conns, "conns", 2, "concurrent ingest requests")
	fs.IntVar(&rc.Regions, "regions", 3, "regions (one node each); the first takes the ingest, the last is stopped")
	fs.IntVar(&rc.Sample, "sample", 100, "random videos whose count is checked on the repaired node")
	fs.DurationVar(&rc.Timeout, "timeout", 10*time.Minute, "cap on each waiting phase (convergence, repair)")
	fs.StringVar(&rc.Dir, "dir", "", "folder for the nodes' data (default: a new temporary folder, removed at the end)")
	fs.BoolVar(&rc.Keep, "keep", false, "keep the data folder")
	extra := fs.String("serve-flags", "", "extra flags passed to every tally serve, space separated")
	fs.StringVar(&rc.Stop, "stop", "kill", "how the node is stopped: kill (SIGKILL) or term (SIGTERM)")
	fs.Int64Var(&rc.Seed, "seed", 1, "random seed (sample)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rc.Extra = strings.Fields(*extra)
	if err := rc.validate(); err != nil || fs.NArg() > 0 {
		if err == nil {
			err = fmt.Errorf("unexpected arguments %q", fs.Args())
		}
		fmt.Fprintf(stderr, "tally bench repair: %v\n", err)
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "tally bench repair: find own binary: %v\n", err)
		return 1
	}
	if rc.Dir == "" {
		if rc.Dir, err = os.MkdirTemp("", "tally-bench-repair-"); err != nil {
			fmt.Fprintf(stderr, "tally bench repair: %v\n", err)
			return 1
		}
		if !rc.Keep {
			defer os.RemoveAll(rc.Dir)
		}
	} else if err := os.MkdirAll(rc.Dir, 0o755); err != nil {
		fmt.Fprintf(stderr, "tally bench repair: %v\n", err)
		return 1
	}
	res, err := benchRepair(ctx, exe, rc, stdout, stderr)
	res.write(stdout, rc)
	if err != nil {
		fmt.Fprintf(stderr, "tally bench repair: %v\n", err)
		if log, e := os.ReadFile(filepath.Join(rc.Dir, "nodes.log")); e == nil {
			lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
			fmt.Fprintf(stderr, "tally bench repair: last lines of the nodes' log:\n%s\n", strings.Join(lines[max(len(lines)-30, 0):], "\n"))
		}
		return 1
	}
	return 0
}

func (rc *benchRepairConfig) validate() error {
	switch {
	case rc.Keys < 1 || rc.Keys > 10_000_000:
		return errors.New("--keys: want 1..10000000")
	case rc.Batch < 1 || rc.Batch > loadgen.MaxBatchSize:
		return fmt.Errorf("--batch: want 1..%d", loadgen.MaxBatchSize)
	case rc.Conns < 1 || rc.Conns > 64:
		return errors.New("--conns: want 1..64")
	case rc.Regions < 2 || rc.Regions > 26:
		return errors.New("--regions: want 2..26")
	case rc.Sample < 0 || rc.Sample > rc.Keys:
		return errors.New("--sample: want 0..--keys")
	case rc.Timeout <= 0 || rc.Timeout > time.Hour:
		return errors.New("--timeout: want (0, 1h]")
	case rc.Stop != "kill" && rc.Stop != "term":
		return errors.New("--stop: want kill or term")
	}
	return nil
}

// benchRepairResult holds the phases' durations; zero means not reached.
type benchRepairResult struct {
	Victim, Ingest    string
	Target            int           // keys the repaired node must hold
	IngestTime        time.Duration // ingest of every key into the ingest node
	IngestCounted     int64
	IngestRetries     int64
	PeerConverged     time.Duration // from the end of ingest until every live node holds Target keys
	DownFor           time.Duration // from the stop to the restart
	RestartToReady    time.Duration // from exec to /readyz 200
	ReadyToRejoined   time.Duration // from ready to every live node listing it as a peer again
	ReadyToKeys       time.Duration // from ready to replication.keys ≥ Target on the repaired node
	ReadyToSample     time.Duration // from ready to every sampled video counting 1 there
	ReadyToSettled    time.Duration // from ready to no repair in progress and nothing behind, both ways
	SampleOK, Sampled int
	BytesToNode       float64 // tally_replication_bytes_sent_total towards the repaired node, over the live nodes
	BytesFromNode     float64 // the same, sent by the repaired node (its new process)
	PerSender         map[string]float64
	Repairs           float64 // tally_replication_repairs_total with the repaired node, over live nodes
}

func (r benchRepairResult) write(w io.Writer, rc benchRepairConfig) {
	s := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	}
	rate := 0.0
	if r.IngestTime > 0 {
		rate = float64(rc.Keys) / r.IngestTime.Seconds()
	}
	fmt.Fprintf(w, "repair: keys=%d regions=%d stop=%s target_keys=%d ingest=%s ingest_views/s=%.0f live_peer_converged=%s down_for=%s restart_to_ready=%s ready_to_rejoined=%s ready_to_keys=%s ready_to_sample=%s ready_to_settled=%s sample_ok=%d/%d bytes_to_node=%.0f bytes_from_node=%.0f MiB_to_node=%.1f repairs=%.0f\n",
		rc.Keys, rc.Regions, rc.Stop, r.Target, s(r.IngestTime), rate, s(r.PeerConverged), s(r.DownFor),
		s(r.RestartToReady), s(r.ReadyToRejoined), s(r.ReadyToKeys), s(r.ReadyToSample), s(r.ReadyToSettled),
		r.SampleOK, r.Sampled, r.BytesToNode, r.BytesFromNode, r.BytesToNode/(1<<20), r.Repairs)
}

// benchStatus is the part of GET /v1/status the benchmark reads.
type benchStatus struct {
	Ready       bool `json:"ready"`
	Replication struct {
		Enabled bool `json:"enabled"`
		Keys    int  `json:"keys"`
		Peers   []struct {
			Name       string  `json:"name"`
			Behind     uint64  `json:"behind"`
			Inflight   int     `json:"inflight"`
			LagSeconds float64 `json:"lagSeconds"`
			Repairing  bool    `json:"repairing"`
		} `json:"peers"`
	} `json:"replication"`
}

// benchContacted counts the peers a node has heard from.
func benchContacted(st benchStatus) int {
	n := 0
	for _, p := range st.Replication.Peers {
		if p.LagSeconds >= 0 {
			n++
		}
	}
	return n
}

// benchClient talks to the nodes of the benchmark.
type benchClient struct{ http *http.Client }

func newBenchClient() *benchClient {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, DisableCompression: true}
	return &benchClient{http: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

func (c *benchClient) get(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	return res.StatusCode, b, err
}

func (c *benchClient) status(ctx context.Context, base string) (benchStatus, error) {
	var st benchStatus
	code, b, err := c.get(ctx, base+"/v1/status")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("GET %s/v1/status: HTTP %d", base, code)
	}
	return st, json.Unmarshal(b, &st)
}

func (c *benchClient) metrics(ctx context.Context, base string) (string, error) {
	code, b, err := c.get(ctx, base+"/metrics")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET %s/metrics: HTTP %d", base, code)
	}
	return string(b), nil
}

func (c *benchClient) count(ctx context.Context, base, video string) (uint64, error) {
	code, b, err := c.get(ctx, base+"/videos/"+video+"/views")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("GET %s: HTTP %d", video, code)
	}
	var v struct {
		ViewCount uint64 `json:"viewCount"`
	}
	return v.ViewCount, json.Unmarshal(b, &v)
}

// benchMetricSum sums the samples of metric name whose labels include every
// pair in match. ok is false if there was none.
func benchMetricSum(text, name string, match map[string]string) (sum float64, ok bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		labels := ""
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another metric with this prefix
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		if benchLabelsMatch(labels, match) {
			sum += v
			ok = true
		}
	}
	return sum, ok
}

// benchLabelsMatch reports whether the label list `a="x",b="y"` has every
// pair of match. Label values in tally's metrics never hold `",`.
func benchLabelsMatch(labels string, match map[string]string) bool {
	have := map[string]string{}
	for _, kv := range strings.Split(labels, `",`) {
		k, v, found := strings.Cut(kv, `="`)
		if !found {
			continue
		}
		have[strings.TrimSpace(k)] = strings.TrimSuffix(v, `"`)
	}
	for k, v := range match {
		if have[k] != v {
			return false
		}
	}
	return true
}

// benchIngestBody builds the JSON batch of keys [from, to) of a run.
func benchIngestBody(buf []byte, run string, from, to int) []byte {
	b := append(buf[:0], '[')
	for i := from; i < to; i++ {
		if i > from {
			b = append(b, ',')
		}
		b = append(b, `{"videoId":"`...)
		b = append(b, benchRepairVideo(run, i)...)
		b = append(b, `","userId":"ru-`...)
		b = append(b, run...)
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

func benchRepairVideo(run string, i int) string { return "rp-" + run + "-" + strconv.Itoa(i) }

// benchWait polls cond every interval until it reports done, ctx ends or
// limit passes.
func benchWait(ctx context.Context, limit, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	var last error
	for {
		done, err := cond()
		if done {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("not within %s (last error: %w)", limit, last)
			}
			return fmt.Errorf("not within %s", limit)
		}
		t := time.NewTimer(interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// benchRepair runs the repair benchmark on a cluster of its own.
func benchRepair(ctx context.Context, exe string, rc benchRepairConfig, stdout, stderr io.Writer) (benchRepairResult, error) {
	var res benchRepairResult
	logf, err := os.Create(filepath.Join(rc.Dir, "nodes.log"))
	if err != nil {
		return res, err
	}
	defer logf.Close()
	progress := func(format string, a ...any) {
		fmt.Fprintf(stderr, "tally bench repair: "+format+"\n", a...)
	}
	extra := append([]string{"--user-rate", "1000000", "--user-burst", "1000000"}, rc.Extra...)
	// startCluster picks ports that were free a moment before the nodes bind
	// them; a node that loses that race fails the start. Retry on a fresh
	// folder.
	var c *localCluster
	for attempt := 1; ; attempt++ {
		dir := filepath.Join(rc.Dir, fmt.Sprintf("nodes-%d", attempt))
		c, err = startCluster(ctx, clusterSpec{Exe: exe, Dir: dir, Regions: rc.Regions, Nodes: 1, Extra: extra, Log: logf})
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			return res, err
		}
		progress("cluster start failed (%v); retrying", err)
		os.RemoveAll(dir)
	}
	defer c.Stop(20 * time.Second)
	for _, n := range c.Nodes {
		fmt.Fprintf(stdout, "  region %-8s node %-12s http://%s  (pid %d)\n", n.Region, n.Name, n.HTTP, n.Pid())
	}
	cl := newBenchClient()
	ing, victim := c.Nodes[0], c.Nodes[len(c.Nodes)-1]
	res.Ingest, res.Victim = ing.Name, victim.Name
	base := func(n *clusterNode) string { return "http://" + n.HTTP }
	live := c.Nodes[:len(c.Nodes)-1]
	run := strconv.FormatInt(time.Now().UnixNano()%1_000_000_000, 36)

	// 1. Every node in contact with every other.
	meshed := func(nodes []*clusterNode, want int) func() (bool, error) {
		return func() (bool, error) {
			for _, n := range nodes {
				st, err := cl.status(ctx, base(n))
				if err != nil {
					return false, err
				}
				contacted := benchContacted(st)
				if contacted < want || !st.Ready {
					return false, fmt.Errorf("%s in contact with %d of %d peers", n.Name, contacted, want)
				}
			}
			return true, nil
		}
	}
	if err := benchWait(ctx, time.Minute, 100*time.Millisecond, meshed(c.Nodes, len(c.Nodes)-1)); err != nil {
		return res, fmt.Errorf("cluster never formed: %w", err)
	}
	progress("%d nodes in contact; ingest into %s, %s will be stopped (%s)", len(c.Nodes), ing.Name, victim.Name, rc.Stop)

	// 2. The partition: the victim goes away.
	stopped := time.Now()
	if rc.Stop == "kill" {
		victim.Kill()
	} else {
		victim.Terminate(20 * time.Second)
	}
	if !benchExited(victim) {
		return res, fmt.Errorf("%s did not stop", victim.Name)
	}
	gone := func() (bool, error) {
		for _, n := range live {
			st, err := cl.status(ctx, base(n))
			if err != nil {
				return false, err
			}
			for _, p := range st.Replication.Peers {
				if p.Name == victim.Name {
					return false, nil
				}
			}
		}
		return true, nil
	}
	if err := benchWait(ctx, 30*time.Second, 100*time.Millisecond, gone); err != nil {
		progress("the live nodes still list %s as a peer (%v); going on", victim.Name, err)
	} else {
		progress("%s stopped; the live nodes dropped it after %.1fs", victim.Name, time.Since(stopped).Seconds())
	}

	// 3. Ingest rc.Keys distinct videos, one view each, into the first node.
	progress("ingesting %d videos in batches of %d (%d at a time) into %s", rc.Keys, rc.Batch, rc.Conns, ing.Name)
	ingStart := time.Now()
	if err := benchIngest(ctx, cl, base(ing), run, rc, &res); err != nil {
		return res, fmt.Errorf("ingest: %w", err)
	}
	res.IngestTime = time.Since(ingStart)
	progress("ingested in %.2fs (%.0f views/s); %d counted, %d retried requests", res.IngestTime.Seconds(),
		float64(rc.Keys)/res.IngestTime.Seconds(), res.IngestCounted, res.IngestRetries)
	st, err := cl.status(ctx, base(ing))
	if err != nil {
		return res, err
	}
	res.Target = st.Replication.Keys
	if res.Target < rc.Keys {
		return res, fmt.Errorf("%s holds %d keys after ingesting %d", ing.Name, res.Target, rc.Keys)
	}

	// 4. The live nodes converge among themselves (deltas) first, so that
	// the repair below is measured on its own.
	convStart := time.Now()
	lastLog := time.Now()
	converged := func() (bool, error) {
		for _, n := range live {
			st, err := cl.status(ctx, base(n))
			if err != nil {
				return false, err
			}
			if st.Replication.Keys < res.Target {
				if time.Since(lastLog) > 10*time.Second {
					lastLog = time.Now()
					progress("%s holds %d of %d keys", n.Name, st.Replication.Keys, res.Target)
				}
				return false, nil
			}
		}
		return true, nil
	}
	if err := benchWait(ctx, rc.Timeout, 50*time.Millisecond, converged); err != nil {
		return res, fmt.Errorf("live nodes did not converge: %w", err)
	}
	res.PeerConverged = time.Since(convStart)
	progress("every live node holds %d keys (%.2fs after the ingest)", res.Target, res.PeerConverged.Seconds())

	// Traffic towards the victim so far (none if its peer state was dropped).
	before := map[string]float64{}
	for _, n := range live {
		m, err := cl.metrics(ctx, base(n))
		if err != nil {
			return res, err
		}
		before[n.Name], _ = benchMetricSum(m, "tally_replication_bytes_sent_total", map[string]string{"peer": victim.Name})
	}

	// 5. The partition heals: restart the victim on its data directory.
	res.DownFor = time.Since(stopped)
	progress("restarting %s after %.1fs down", victim.Name, res.DownFor.Seconds())
	restart := time.Now()
	// launch, not Start: /readyz turns 200 only once the node has synced
	// with a peer, which after a long partition is most of the repair; the
	// wait below is bounded by --timeout instead of Start's minute.
	if err := c.launch(ctx, victim); err != nil {
		return res, fmt.Errorf("restart %s: %w", victim.Name, err)
	}
	fmt.Fprintf(stdout, "  restarted %s http://%s  (pid %d)\n", victim.Name, victim.HTTP, victim.Pid())
	ready := func() (bool, error) {
		code, _, err := cl.get(ctx, base(victim)+"/readyz")
		return err == nil && code == http.StatusOK, err
	}
	if err := benchWait(ctx, rc.Timeout, 5*time.Millisecond, ready); err != nil {
		return res, fmt.Errorf("%s not ready: %w", victim.Name, err)
	}
	readyAt := time.Now()
	res.RestartToReady = readyAt.Sub(restart)
	progress("%s ready %.2fs after exec; waiting for %d keys", victim.Name, res.RestartToReady.Seconds(), res.Target)

	lastLog = time.Now()
	haveKeys := func() (bool, error) {
		if res.ReadyToRejoined == 0 {
			listed := 0
			for _, n := range live {
				st, err := cl.status(ctx, base(n))
				if err != nil {
					return false, err
				}
				for _, p := range st.Replication.Peers {
					if p.Name == victim.Name {
						listed++
					}
				}
			}
			if listed == len(live) {
				res.ReadyToRejoined = time.Since(readyAt)
			}
		}
		st, err := cl.status(ctx, base(victim))
		if err != nil {
			return false, err
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			progress("%s holds %d of %d keys after %.1fs", victim.Name, st.Replication.Keys, res.Target, time.Since(readyAt).Seconds())
		}
		return st.Replication.Keys >= res.Target, nil
	}
	if err := benchWait(ctx, rc.Timeout, 20*time.Millisecond, haveKeys); err != nil {
		return res, fmt.Errorf("%s did not get every key: %w", victim.Name, err)
	}
	res.ReadyToKeys = time.Since(readyAt)
	progress("%s holds every key %.2fs after ready (the live nodes listed it as a peer after %.2fs)",
		victim.Name, res.ReadyToKeys.Seconds(), res.ReadyToRejoined.Seconds())

	// 6. Spot check: sampled videos count exactly 1 on the repaired node.
	rng := rand.New(rand.NewPCG(uint64(rc.Seed), 0x72657061))
	pending := map[string]bool{}
	for len(pending) < rc.Sample {
		pending[benchRepairVideo(run, rng.IntN(rc.Keys))] = true
	}
	res.Sampled = len(pending)
	var wrong string
	sampled := func() (bool, error) {
		for v := range pending {
			n, err := cl.count(ctx, base(victim), v)
			if err != nil {
				return false, err
			}
			switch {
			case n == 1:
				delete(pending, v)
			case n > 1:
				wrong = fmt.Sprintf("%s counts %d views", v, n)
				return true, nil
			}
		}
		return len(pending) == 0, nil
	}
	if err := benchWait(ctx, time.Minute, 20*time.Millisecond, sampled); err != nil {
		res.SampleOK = res.Sampled - len(pending)
		return res, fmt.Errorf("%d sampled videos still not at 1: %w", len(pending), err)
	}
	res.SampleOK = res.Sampled - len(pending)
	if wrong != "" {
		return res, fmt.Errorf("over-counted on %s: %s", victim.Name, wrong)
	}
	res.ReadyToSample = time.Since(readyAt)

	// 7. Settled: no repair running and nothing unacknowledged, both ways.
	settled := func() (bool, error) {
		for _, n := range c.Nodes {
			st, err := cl.status(ctx, base(n))
			if err != nil {
				return false, err
			}
			for _, p := range st.Replication.Peers {
				if (n == victim || p.Name == victim.Name) && (p.Repairing || p.Behind > 0 || p.Inflight > 0) {
					return false, nil
				}
			}
		}
		return true, nil
	}
	if err := benchWait(ctx, 2*time.Minute, 20*time.Millisecond, settled); err != nil {
		progress("replication with %s not settled: %v", victim.Name, err)
	} else {
		res.ReadyToSettled = time.Since(readyAt)
	}

	// 8. Repair traffic.
	res.PerSender = map[string]float64{}
	for _, n := range live {
		m, err := cl.metrics(ctx, base(n))
		if err != nil {
			return res, err
		}
		after, _ := benchMetricSum(m, "tally_replication_bytes_sent_total", map[string]string{"peer": victim.Name})
		d := after - before[n.Name]
		if d < 0 { // the peer's counters restarted when it was re-added
			d = after
		}
		res.PerSender[n.Name] = d
		res.BytesToNode += d
		r, _ := benchMetricSum(m, "tally_replication_repairs_total", map[string]string{"peer": victim.Name})
		res.Repairs += r
	}
	m, err := cl.metrics(ctx, base(victim))
	if err != nil {
		return res, err
	}
	res.BytesFromNode, _ = benchMetricSum(m, "tally_replication_bytes_sent_total", nil)
	for _, n := range live {
		progress("%s sent %.1f MiB to %s", n.Name, res.PerSender[n.Name]/(1<<20), victim.Name)
	}
	return res, nil
}

// benchExited reports whether the process of n has exited.
func benchExited(n *clusterNode) bool {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	default:
		return false
	}
}

// benchIngest posts keys [0, rc.Keys) in batches, rc.Conns at a time.
func benchIngest(ctx context.Context, cl *benchClient, base, run string, rc benchRepairConfig, res *benchRepairResult) error {
	var next, counted, retries atomic.Int64
	batches := (rc.Keys + rc.Batch - 1) / rc.Batch
	errc := make(chan error, rc.Conns)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range rc.Conns {
		wg.Go(func() {
			var buf []byte
			for {
				b := int(next.Add(1) - 1)
				if b >= batches || ctx.Err() != nil {
					return
				}
				from, to := b*rc.Batch, min((b+1)*rc.Batch, rc.Keys)
				buf = benchIngestBody(buf, run, from, to)
				n, r, err := benchPostBatch(ctx, cl, base, buf, to-from)
				retries.Add(int64(r))
				if err != nil {
					errc <- fmt.Errorf("batch %d: %w", b, err)
					cancel()
					return
				}
				counted.Add(n)
			}
		})
	}
	wg.Wait()
	res.IngestCounted, res.IngestRetries = counted.Load(), retries.Load()
	select {
	case err := <-errc:
		return err
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// benchPostBatch posts one batch, retrying (at most 10 times, with back-off)
// a 503 or a transport error. Every event must come back counted or, after
// a retry of a batch that was in fact stored, a duplicate.
func benchPostBatch(ctx context.Context, cl *benchClient, base string, body []byte, n int) (counted int64, retries int, err error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/events", bytes.NewReader(body))
		if err != nil {
			return 0, attempt, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := cl.http.Do(req)
		var raw []byte
		code := 0
		if err == nil {
			code = resp.StatusCode
			raw, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
			resp.Body.Close()
		}
		if err == nil && code == http.StatusOK {
			var out struct {
				Received   int `json:"received"`
				Counted    int `json:"counted"`
				NotCounted []struct {
					Reason string `json:"reason"`
				} `json:"notCounted"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return 0, attempt, fmt.Errorf("bad response: %w", err)
			}
			if out.Received != n {
				return 0, attempt, fmt.Errorf("received %d of %d events", out.Received, n)
			}
			for _, nc := range out.NotCounted {
				if nc.Reason != "duplicate" || attempt == 0 {
					return 0, attempt, fmt.Errorf("event not counted: %q (%d of %d counted)", nc.Reason, out.Counted, n)
				}
			}
			return int64(out.Counted), attempt, nil
		}
		if ctx.Err() != nil {
			return 0, attempt, ctx.Err()
		}
		if err == nil && code != http.StatusServiceUnavailable {
			return 0, attempt, fmt.Errorf("HTTP %d: %.300s", code, raw)
		}
		if attempt >= 10 {
			if err == nil {
				err = fmt.Errorf("HTTP %d", code)
			}
			return 0, attempt, fmt.Errorf("gave up after %d attempts: %w", attempt+1, err)
		}
		t := time.NewTimer(time.Duration(50<<min(attempt, 5)) * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, attempt, ctx.Err()
		}
	}
}
