package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The cluster test runs real `tally serve` processes: three regions on
// loopback, one Serf pool (encrypted gossip) and authenticated TCP
// replication, started by startCluster exactly as `tally cluster` does. It
// checks, from the outside only (HTTP API, process exit statuses, a plain
// Serf agent's view of the pool), that:
//
//   - every node is healthy and ready after a start and a restart;
//   - under concurrent load on every region, a node killed with SIGKILL and
//     restarted on its data directory loses no acknowledged view, and every
//     region converges to the same count per video: at least the acknowledged
//     distinct (video, user) pairs, at most those plus the pairs left without
//     an answer by the kill;
//   - acknowledged pairs stay duplicates at the node that counted them;
//     re-sending the unanswered ones settles them, after which every region
//     converges to exactly the number of distinct pairs;
//   - a plain `serf agent` holding the gossip key joins the pool, sees the
//     tally nodes with their tags, and disturbs nothing: views still converge
//     exactly, no node crashes; an agent without the key cannot join;
//   - SIGTERM stops every member cleanly (exit status 0).
//
// Each (video, user) pair is sent to one node only (its home): the test does
// not rely on cross-region deduplication.
//
// Diagnostics: TALLY_TEST_CLUSTER_FLAGS adds tally serve flags (e.g.
// "--log-level debug"), TALLY_TEST_CLUSTER_LOG names a file that receives
// every node's log, TALLY_TEST_CLUSTER_TRACE=1 logs the counts while polling.

const (
	clusterVideos     = 10
	clusterWorkers    = 12
	clusterReqTimeout = 15 * time.Second
	convergeDeadline  = 90 * time.Second
	serfVersion       = "v0.11.0"
)

func clusterVideo(i int) string { return fmt.Sprintf("cl-v%02d", i) }

func clusterVideoNames() []string {
	out := make([]string, clusterVideos)
	for i := range out {
		out[i] = clusterVideo(i)
	}
	return out
}

func TestClusterConvergesMultiProcess(t *testing.T) {
	now := time.Now().UTC()
	if next := now.Truncate(24 * time.Hour).Add(24 * time.Hour); next.Sub(now) < 10*time.Minute {
		// Dedup windows are UTC days; a re-sent pair counts again in a new one.
		t.Skipf("less than 10 minutes to UTC midnight (%s); the test would straddle a dedup window", now.Format(time.TimeOnly))
	}
	// Per stage: views acknowledged, and how long the killed node stays
	// down at least (long enough for Serf to declare it failed).
	perRegion, acks, downAtLeast := 2, int64(300), 6*time.Second
	if testing.Short() {
		perRegion, acks, downAtLeast = 1, 100, 500*time.Millisecond
	}
	bin := buildTally(t)
	tc := startTestCluster(t, bin, 3, perRegion)
	m := newClusterModel()
	videos := clusterVideoNames()

	// The killed node is not the first: the others (and a restart) join it.
	victim := tc.nodes[len(tc.nodes)-1]

	steps := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"ready", tc.checkHealthy},
		{"kill9_under_load", func(t *testing.T) {
			l := tc.load(t, m, "a")
			l.waitAcked(t, acks)
			tc.kill(t, victim)
			l.waitAcked(t, 2*acks) // the other nodes keep taking views
			for time.Since(victim.killed) < downAtLeast {
				time.Sleep(10 * time.Millisecond) // the load goes on meanwhile
			}
			tc.restart(t, victim)
			l.waitAcked(t, 3*acks)
			l.stop()
			t.Logf("load: %s; %s was down %v", l, victim.n.Name, victim.downFor.Round(time.Millisecond))
			if victimAcks := m.ackedAt(tc.index(victim)); victimAcks == 0 {
				t.Errorf("no view was acknowledged by %s", victim.n.Name)
			}
		}},
		{"ready_after_restart", tc.checkHealthy},
		{"converge_within_bounds", func(t *testing.T) {
			start := time.Now()
			got := tc.awaitAgreement(t, videos)
			lower, upper := m.bounds()
			for _, v := range videos {
				switch c := got[v]; {
				case c < lower[v]:
					t.Errorf("%s: every region reports %d views, fewer than the %d acknowledged: acknowledged views were lost", v, c, lower[v])
				case c > upper[v]:
					t.Errorf("%s: every region reports %d views, more than the %d pairs acknowledged or unanswered: something counted twice", v, c, upper[v])
				}
			}
			t.Logf("regions agree after %v: %s", time.Since(start).Round(time.Millisecond), summarize(got, lower, upper))
		}},
		{"settle_and_converge_exactly", func(t *testing.T) {
			tc.settle(t, m)
			want, _ := m.bounds()
			start := time.Now()
			tc.awaitCounts(t, videos, want)
			t.Logf("every region reports exactly the %d distinct pairs after %v", sum(want), time.Since(start).Round(time.Millisecond))
		}},
		{"audit_after_kill9", func(t *testing.T) {
			// Every node's raw event log, recomputed, gives every node's count.
			requireCleanAudit(t, []string{tc.nodes[0].n.HTTP}, tc.c.AdminToken(), len(tc.nodes))
		}},
		{"plain_serf_agent", func(t *testing.T) {
			if testing.Short() {
				t.Skip("short mode: no Serf agent")
			}
			serfBin := installSerf(t)
			first := tc.nodes[0].n
			l := tc.load(t, m, "p") // the agents join under load
			plain := startSerfAgent(t, serfBin, "plain", first.Gossip, tc.c.key)
			members := plain.awaitMembers(t, tc)
			tc.checkTags(t, members)
			joined := l.acked.Load()

			// An agent without the key must not get in (and must not disturb).
			intruder := startSerfAgent(t, serfBin, "intruder", first.Gossip, "")

			l.waitAcked(t, joined+acks)
			l.stop()
			t.Logf("load with plain agents around: %s", l)
			if lower, upper := m.bounds(); !mapsEqual(lower, upper) {
				t.Fatalf("views went unanswered although no node was stopped")
			}
			want, _ := m.bounds()
			tc.awaitCounts(t, videos, want)
			tc.checkHealthy(t)
			tc.checkRunning(t)

			intruder.checkLockedOut(t, tc)
			for _, mb := range plain.members(t) {
				if mb.Name == "intruder" {
					t.Errorf("the agent without the gossip key is in the pool: %+v", mb)
				}
			}
			tc.checkTags(t, plain.awaitMembers(t, tc)) // the plain agent still sees every node alive
		}},
		{"graceful_stop", tc.stopCleanly},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			return // later steps build on this one
		}
	}
}

// ---------------------------------------------------------------------------
// The cluster under test
// ---------------------------------------------------------------------------

type testCluster struct {
	c     *localCluster
	nodes []*clusterClient // in c.Nodes order
	log   *lockedBuffer    // every node's stderr, prefixed with its name
}

// launchCluster starts a cluster for a test and stops it when the test
// ends, showing the node logs if the test failed. Cleanups run last-registered first: one the test adds
// later runs before the nodes stop.
func launchCluster(t *testing.T, ctx context.Context, spec clusterSpec) *localCluster {
	t.Helper()
	logs := &lockedBuffer{}
	spec.Log = logs
	c, err := startCluster(ctx, spec)
	if err != nil {
		t.Fatalf("start cluster: %v\nnode logs:\n%s", err, logs)
	}
	t.Cleanup(func() {
		c.Stop(10 * time.Second) // only the processes startCluster started
		if t.Failed() {
			t.Logf("node logs:\n%s", logs)
		}
	})
	return c
}

// clusterClient is the test's handle on one node.
type clusterClient struct {
	n       *clusterNode
	proc    atomic.Pointer[tallyProc] // HTTP client; replaced after a restart
	down    atomic.Bool               // set before a kill, cleared after the restart
	kills   atomic.Int64
	flying  atomic.Int64  // requests in flight to it
	killed  time.Time     // of the last kill
	downFor time.Duration // from the last kill to the restart
}

func newClusterProc(t *testing.T, n *clusterNode) *tallyProc {
	return &tallyProc{t: t, url: "http://" + n.HTTP, client: &http.Client{
		Timeout:   clusterReqTimeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: clusterWorkers, MaxConnsPerHost: 2 * clusterWorkers},
	}}
}

func startTestCluster(t *testing.T, bin string, regions, perRegion int) *testCluster {
	t.Helper()
	logs := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := startCluster(ctx, clusterSpec{
		Exe: bin, Dir: t.TempDir(), Regions: regions, Nodes: perRegion,
		Extra: append([]string{"--user-rate", "1000000", "--user-burst", "1000000", "--sync-interval", "50ms"}, strings.Fields(os.Getenv("TALLY_TEST_CLUSTER_FLAGS"))...),
		Log:   logs,
	})
	if err != nil {
		t.Fatalf("start cluster: %v\nnode logs:\n%s", err, logs)
	}
	tc := &testCluster{c: c, log: logs}
	// Cleanups run last-registered first: stop the nodes, then show their logs.
	t.Cleanup(func() {
		if f := os.Getenv("TALLY_TEST_CLUSTER_LOG"); f != "" {
			if err := os.WriteFile(f, []byte(logs.String()), 0o644); err != nil {
				t.Errorf("write node logs: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("node logs:\n%s", logs)
		}
	})
	t.Cleanup(func() {
		for _, cc := range tc.nodes {
			cc.proc.Load().client.CloseIdleConnections()
		}
		c.Stop(10 * time.Second) // only the processes startCluster started
	})
	for _, n := range c.Nodes {
		cc := &clusterClient{n: n}
		cc.proc.Store(newClusterProc(t, n))
		tc.nodes = append(tc.nodes, cc)
	}
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = fmt.Sprintf("%s(pid %d, http %s, gossip %s)", n.Name, n.Pid(), n.HTTP, n.Gossip)
	}
	t.Logf("cluster of %d nodes started in %v: %s", len(c.Nodes), time.Since(start).Round(time.Millisecond), strings.Join(names, ", "))
	return tc
}

func (tc *testCluster) index(cc *clusterClient) int { return slices.Index(tc.nodes, cc) }

// kill SIGKILLs a node and checks that it died of it.
func (tc *testCluster) kill(t *testing.T, cc *clusterClient) {
	t.Helper()
	cc.down.Store(true)
	cc.kills.Add(1)
	cc.killed = time.Now()
	flying := cc.flying.Load()
	cc.n.Kill()
	cc.n.mu.Lock()
	cmd, exited := cc.n.cmd, cc.n.exited
	cc.n.mu.Unlock()
	select {
	case <-exited:
	default:
		t.Fatalf("%s (pid %d) still runs after SIGKILL", cc.n.Name, cmd.Process.Pid)
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s ended with %v, want death by SIGKILL", cc.n.Name, cmd.ProcessState)
	}
	t.Logf("killed %s (pid %d) with SIGKILL, %d requests in flight to it", cc.n.Name, cmd.Process.Pid, flying)
}

// restart starts a killed node again on its data directory.
func (tc *testCluster) restart(t *testing.T, cc *clusterClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := tc.c.Start(ctx, cc.n); err != nil {
		t.Fatalf("restart %s: %v", cc.n.Name, err)
	}
	// A new client: connections kept alive to the dead process are gone.
	old := cc.proc.Swap(newClusterProc(t, cc.n))
	old.client.CloseIdleConnections()
	cc.downFor = time.Since(cc.killed)
	cc.down.Store(false)
	t.Logf("restarted %s (pid %d)", cc.n.Name, cc.n.Pid())
}

// checkHealthy requires every node to answer /healthz and /readyz with 200.
func (tc *testCluster) checkHealthy(t *testing.T) {
	t.Helper()
	for _, cc := range tc.nodes {
		p := cc.proc.Load()
		for _, check := range []func(*http.Client, string) error{nodeHealthy, nodeReady} {
			if err := check(p.client, p.url); err != nil {
				t.Errorf("%s: %v", cc.n.Name, err)
			}
		}
	}
}

// nodeReady is GET /readyz: nil if the node at base (http://host:port) takes
// writes.
func nodeReady(c *http.Client, base string) error { return get200(c, base+"/readyz") }

// nodeHealthy is GET /healthz: nil if the node at base answers at all.
func nodeHealthy(c *http.Client, base string) error { return get200(c, base+"/healthz") }

func get200(c *http.Client, url string) error {
	code, body, err := httpGet(c, url)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, code, body)
	}
	return nil
}

// checkRunning requires every node process to be alive.
func (tc *testCluster) checkRunning(t *testing.T) {
	t.Helper()
	for _, cc := range tc.nodes {
		cc.n.mu.Lock()
		cmd, exited := cc.n.cmd, cc.n.exited
		cc.n.mu.Unlock()
		select {
		case <-exited:
			t.Errorf("%s (pid %d) exited: %v", cc.n.Name, cmd.Process.Pid, cmd.ProcessState)
		default:
		}
	}
}

// stopCleanly sends SIGTERM to every node and requires exit status 0 and the
// clean-stop log line.
func (tc *testCluster) stopCleanly(t *testing.T) {
	start := time.Now()
	for _, cc := range tc.nodes {
		cc.proc.Load().client.CloseIdleConnections()
	}
	tc.c.Stop(20 * time.Second)
	logs := tc.log.String()
	for _, cc := range tc.nodes {
		cc.n.mu.Lock()
		cmd := cc.n.cmd
		cc.n.mu.Unlock()
		if st := cmd.ProcessState; st == nil || !st.Success() {
			t.Errorf("%s after SIGTERM: %v, want exit status 0", cc.n.Name, st)
		}
		if !slices.ContainsFunc(strings.Split(logs, "\n"), func(l string) bool {
			return strings.HasPrefix(l, "["+cc.n.Name+"] ") && strings.Contains(l, "stopped cleanly")
		}) {
			t.Errorf("%s: no clean-stop log line", cc.n.Name)
		}
	}
	t.Logf("all nodes stopped cleanly in %v", time.Since(start).Round(time.Millisecond))
}

func httpGet(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// getCount is GET /videos/{id}/views, with errors returned.
func getCount(p *tallyProc, video string) (uint64, error) {
	code, body, err := httpGet(p.client, p.url+"/videos/"+video+"/views")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %d %s", video, code, body)
	}
	var c countAnswer
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		return 0, fmt.Errorf("GET %s: decode %s: %v", video, body, err)
	}
	if c.VideoID != video {
		return 0, fmt.Errorf("GET %s: answer for %q", video, c.VideoID)
	}
	return c.ViewCount, nil
}

type countAnswer struct {
	VideoID   string `json:"videoId"`
	ViewCount uint64 `json:"viewCount"`
}

// snapshot reads every node's count of every video: snap[node][video].
func (tc *testCluster) snapshot(videos []string) ([][]uint64, error) {
	snap := make([][]uint64, len(tc.nodes))
	for i, cc := range tc.nodes {
		snap[i] = make([]uint64, len(videos))
		p := cc.proc.Load()
		for j, v := range videos {
			c, err := getCount(p, v)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", cc.n.Name, err)
			}
			snap[i][j] = c
		}
	}
	return snap, nil
}

// await polls snapshots until done accepts one, or fails the test after
// convergeDeadline with the last snapshot and the nodes' metrics.
func (tc *testCluster) await(t *testing.T, videos []string, what string, done func(snap, prev [][]uint64) bool) [][]uint64 {
	t.Helper()
	deadline := time.Now().Add(convergeDeadline)
	var prev, snap [][]uint64
	var err error
	for polls := 0; ; polls++ {
		snap, err = tc.snapshot(videos)
		if err == nil && done(snap, prev) {
			return snap
		}
		if err == nil {
			prev = snap
			if os.Getenv("TALLY_TEST_CLUSTER_TRACE") != "" && polls%5 == 0 {
				t.Logf("poll %d:\n%s", polls, formatSnap(tc, videos, snap))
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: no convergence within %v", what, convergeDeadline)
	if err != nil {
		fmt.Fprintf(&b, " (last read failed: %v)", err)
	}
	fmt.Fprintf(&b, "\nlast counts per node:\n%s", formatSnap(tc, videos, prev))
	for _, cc := range tc.nodes {
		fmt.Fprintf(&b, "metrics of %s:\n%s", cc.n.Name, tallyMetrics(cc.proc.Load()))
	}
	t.Fatal(b.String())
	return nil
}

// awaitAgreement waits until every node reports the same counts twice in a
// row (the load has stopped) and returns them.
func (tc *testCluster) awaitAgreement(t *testing.T, videos []string) map[string]uint64 {
	t.Helper()
	snap := tc.await(t, videos, "all regions agreeing", func(snap, prev [][]uint64) bool {
		for _, row := range snap[1:] {
			if !slices.Equal(row, snap[0]) {
				return false
			}
		}
		return prev != nil && slices.Equal(prev[0], snap[0])
	})
	out := make(map[string]uint64, len(videos))
	for j, v := range videos {
		out[v] = snap[0][j]
	}
	return out
}

// awaitCounts waits until every node reports exactly want for every video.
func (tc *testCluster) awaitCounts(t *testing.T, videos []string, want map[string]uint64) {
	t.Helper()
	row := make([]uint64, len(videos))
	for j, v := range videos {
		row[j] = want[v]
	}
	tc.await(t, videos, fmt.Sprintf("every region at %v", row), func(snap, _ [][]uint64) bool {
		for _, r := range snap {
			if !slices.Equal(r, row) {
				return false
			}
		}
		return true
	})
}

func formatSnap(tc *testCluster, videos []string, snap [][]uint64) string {
	if snap == nil {
		return "  (none read)\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  %-10s %v\n", "", videos)
	for i, row := range snap {
		fmt.Fprintf(&b, "  %-10s %v\n", tc.nodes[i].n.Name, row)
	}
	return b.String()
}

// tallyMetrics returns the tally_ lines of a node's /metrics.
func tallyMetrics(p *tallyProc) string {
	code, body, err := httpGet(p.client, p.url+"/metrics")
	if err != nil || code != http.StatusOK {
		return fmt.Sprintf("  GET /metrics: %d %v\n", code, err)
	}
	var b strings.Builder
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, "tally_") && !strings.Contains(line, "_bucket{") {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	return b.String()
}

func summarize(got, lower, upper map[string]uint64) string {
	return fmt.Sprintf("%d views in all; %d acknowledged pairs, %d more unanswered", sum(got), sum(lower), sum(upper)-sum(lower))
}

func sum(m map[string]uint64) uint64 {
	var s uint64
	for _, v := range m {
		s += v
	}
	return s
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// The model: crashModel, plus the node each pair is sent to
// ---------------------------------------------------------------------------

type clusterModel struct {
	*crashModel
	mu     sync.Mutex // protects the fields below
	home   map[pair]int
	byNode map[int][]pair
	acked  map[int]int // counted:true answers per node
}

func newClusterModel() *clusterModel {
	return &clusterModel{crashModel: newCrashModel(), home: make(map[pair]int), byNode: make(map[int][]pair), acked: make(map[int]int)}
}

func (m *clusterModel) assign(pr pair, node int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.home[pr] = node
	m.byNode[node] = append(m.byNode[node], pr)
}

func (m *clusterModel) homeOf(pr pair) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.home[pr]
}

func (m *clusterModel) randomAt(rng *rand.Rand, node int) (pair, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prs := m.byNode[node]
	if len(prs) == 0 {
		return pair{}, false
	}
	return prs[rng.IntN(len(prs))], true
}

func (m *clusterModel) countedAt(node int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acked[node]++
}

func (m *clusterModel) ackedAt(node int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acked[node]
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

type clusterLoad struct {
	t                           *testing.T
	acked, requests, unanswered atomic.Int64
	quit                        atomic.Bool
	done                        chan struct{}
	start                       time.Time
	elapsed                     time.Duration
}

func (l *clusterLoad) String() string {
	return fmt.Sprintf("%d requests, %d acknowledged counted, %d unanswered, %v",
		l.requests.Load(), l.acked.Load(), l.unanswered.Load(), l.elapsed.Round(time.Millisecond))
}

// load starts clusterWorkers goroutines sending views to every node that is
// not down, round robin: fresh pairs (each bound to the node it is first sent
// to) and repeats of pairs sent to the same node before. It runs until stop.
func (tc *testCluster) load(t *testing.T, m *clusterModel, phase string) *clusterLoad {
	l := &clusterLoad{t: t, done: make(chan struct{}), start: time.Now()}
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		reported atomic.Int64
	)
	report := func(format string, args ...any) {
		if reported.Add(1) <= 10 {
			t.Errorf("phase %s: "+format, append([]any{phase}, args...)...)
		}
	}
	const maxFresh = 100_000 // a bound, in case acks never come
	for w := range clusterWorkers {
		rng := rand.New(rand.NewPCG(uint64(w), uint64(phase[0])))
		wg.Go(func() {
			for i := 0; !l.quit.Load(); i++ {
				ni := -1
				for j := range len(tc.nodes) {
					if k := (w + i + j) % len(tc.nodes); !tc.nodes[k].down.Load() {
						ni = k
						break
					}
				}
				if ni < 0 {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				cc := tc.nodes[ni]
				var pr pair
				repeat := rng.IntN(100) < repeatPercentage
				if repeat {
					pr, repeat = m.randomAt(rng, ni)
				}
				if !repeat {
					k := next.Add(1)
					if k > maxFresh {
						return
					}
					pr = pair{video: clusterVideo(int(k) % clusterVideos), user: fmt.Sprintf("%s-%s-u%d", phase, cc.n.Name, k)}
					m.assign(pr, ni)
				}
				kills := cc.kills.Load()
				m.begin(pr)
				cc.flying.Add(1)
				v, err := cc.proc.Load().postView(pr)
				cc.flying.Add(-1)
				l.requests.Add(1)
				if bad := m.record(pr, v, err); bad != nil {
					report("%s: %v", cc.n.Name, bad)
				}
				if err != nil {
					if errors.As(err, new(errNoAnswer)) {
						l.unanswered.Add(1)
						if !cc.down.Load() && cc.kills.Load() == kills {
							report("request to %s failed while it was up: %v", cc.n.Name, err)
						}
					}
					continue
				}
				if v.Counted {
					m.countedAt(ni)
					l.acked.Add(1)
				}
			}
		})
	}
	go func() { wg.Wait(); close(l.done) }()
	t.Cleanup(l.stop)
	return l
}

// waitAcked waits until goal views in all were acknowledged as counted.
func (l *clusterLoad) waitAcked(t *testing.T, goal int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for l.acked.Load() < goal {
		select {
		case <-l.done:
			t.Fatalf("workers stopped after %d acknowledged views, before the goal of %d", l.acked.Load(), goal)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d acknowledged views in 2 minutes, want %d", l.acked.Load(), goal)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// stop ends the load and waits for the workers; it may be called twice.
func (l *clusterLoad) stop() {
	if l.quit.Swap(true) {
		<-l.done
		return
	}
	select {
	case <-l.done:
	case <-time.After(2 * clusterReqTimeout):
		l.t.Errorf("workers still running %v after the load stopped", 2*clusterReqTimeout)
		<-l.done
	}
	l.elapsed = time.Since(l.start)
}

// settle re-sends every pair to its home node: acknowledged ones must be
// duplicates, unanswered ones are either counted now or duplicates (they had
// been counted). Afterwards the model knows the fate of every pair.
func (tc *testCluster) settle(t *testing.T, m *clusterModel) {
	t.Helper()
	answered := m.sorted(func(s *pairState) bool { return s.answered })
	unknown := m.sorted(func(s *pairState) bool { return s.unknown && !s.answered })
	tc.resend(t, m, answered, func(pr pair, v viewAnswer) error {
		if v.Counted || v.Reason != "duplicate" {
			return fmt.Errorf("re-sent acknowledged pair %v to %s: %+v, want a duplicate", pr, tc.nodes[m.homeOf(pr)].n.Name, v)
		}
		return nil
	})
	var wasCounted atomic.Int64
	tc.resend(t, m, unknown, func(pr pair, v viewAnswer) error {
		if !v.Counted {
			wasCounted.Add(1)
		}
		return nil // record checked the rest
	})
	m.crashModel.mu.Lock()
	for _, s := range m.pairs {
		if s.unknown {
			s.unknown, s.answered = false, true
		}
	}
	m.crashModel.mu.Unlock()
	t.Logf("re-sent %d acknowledged pairs (all duplicates) and %d unanswered ones (%d had been counted)",
		len(answered), len(unknown), wasCounted.Load())
}

// resend sends pairs to their home nodes from a few goroutines.
func (tc *testCluster) resend(t *testing.T, m *clusterModel, pairs []pair, check func(pair, viewAnswer) error) {
	t.Helper()
	work := make(chan pair)
	var wg sync.WaitGroup
	var reported atomic.Int64
	for range 8 {
		wg.Go(func() {
			for pr := range work {
				cc := tc.nodes[m.homeOf(pr)]
				m.begin(pr)
				v, err := cc.proc.Load().postView(pr)
				if bad := m.record(pr, v, err); bad != nil && err == nil {
					err = bad
				}
				if err == nil {
					err = check(pr, v)
				}
				if err != nil && reported.Add(1) <= 10 {
					t.Errorf("%s: %v", cc.n.Name, err)
				}
			}
		})
	}
	for _, pr := range pairs {
		if reported.Load() > 10 {
			break
		}
		work <- pr
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// ---------------------------------------------------------------------------
// Plain Serf agents
// ---------------------------------------------------------------------------

// installSerf builds the serf command (the version tally links) into a
// temporary directory, or skips the test if it cannot.
func installSerf(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not on PATH: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, goBin, "install", "github.com/hashicorp/serf/cmd/serf@"+serfVersion)
	cmd.Dir = dir // outside the module: the command's own go.mod decides
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot build the serf agent (no network or module proxy?); skipping the plain-agent checks: %v\n%s", err, out)
	}
	t.Logf("built serf %s in %v", serfVersion, time.Since(start).Round(time.Millisecond))
	return dir + "/serf"
}

type serfAgent struct {
	name, bin, rpc string
	cmd            *exec.Cmd
	out            *lockedBuffer
	done           chan struct{}
}

// startSerfAgent starts `serf agent` joining the pool at join, with the
// gossip key if key is not empty. The agent is killed at cleanup.
func startSerfAgent(t *testing.T, bin, name, join, key string) *serfAgent {
	t.Helper()
	bind, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	a := &serfAgent{name: name, bin: bin, rpc: rpc, out: &lockedBuffer{}, done: make(chan struct{})}
	args := []string{"agent", "-node", name, "-bind", bind, "-rpc-addr", rpc, "-join", join}
	if key != "" {
		args = append(args, "-encrypt", key)
	}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start serf agent %s: %v", name, err)
	}
	go func() { a.cmd.Wait(); close(a.done) }() //nolint:errcheck // status read from ProcessState
	t.Cleanup(func() {
		a.cmd.Process.Kill() //nolint:errcheck // it may have exited
		<-a.done
		if t.Failed() {
			t.Logf("output of serf agent %s (pid %d):\n%s", name, a.cmd.Process.Pid, a.out)
		}
	})
	t.Logf("started serf agent %s (pid %d) bind %s, rpc %s, key %v", name, a.cmd.Process.Pid, bind, rpc, key != "")
	return a
}

type serfMember struct {
	Name   string            `json:"name"`
	Addr   string            `json:"addr"`
	Status string            `json:"status"`
	Tags   map[string]string `json:"tags"`
}

// tryMembers asks the agent (over its RPC) for the pool's members.
func (a *serfAgent) tryMembers() ([]serfMember, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, a.bin, "members", "-rpc-addr", a.rpc, "-format", "json").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("serf members: %v: %s", err, out)
	}
	var res struct {
		Members []serfMember `json:"members"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("serf members: decode %s: %v", out, err)
	}
	return res.Members, nil
}

func (a *serfAgent) members(t *testing.T) []serfMember {
	t.Helper()
	ms, err := a.tryMembers()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// awaitMembers waits until the agent sees every tally node alive.
func (a *serfAgent) awaitMembers(t *testing.T, tc *testCluster) []serfMember {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ms, err := a.tryMembers()
		missing := 0
		if err == nil {
			for _, cc := range tc.nodes {
				if !slices.ContainsFunc(ms, func(m serfMember) bool { return m.Name == cc.n.Name && m.Status == "alive" }) {
					missing++
				}
			}
		}
		if err == nil && missing == 0 {
			return ms
		}
		select {
		case <-a.done:
			t.Fatalf("serf agent %s exited: %v\n%s", a.name, a.cmd.ProcessState, a.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serf agent %s does not see every tally node alive after 30s: members %+v, err %v", a.name, ms, err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// checkTags compares the tags the pool shows for each tally node with what
// the node was started with.
func (tc *testCluster) checkTags(t *testing.T, ms []serfMember) {
	t.Helper()
	for _, cc := range tc.nodes {
		i := slices.IndexFunc(ms, func(m serfMember) bool { return m.Name == cc.n.Name })
		if i < 0 {
			t.Errorf("%s is not a member of the pool", cc.n.Name)
			continue
		}
		tags := ms[i].Tags
		if tags["tally.region"] != cc.n.Region || tags["tally.http"] != cc.n.HTTP || tags["tally.repl"] != cc.n.Repl ||
			tags["tally.proto"] == "" || len(tags["tally.replica"]) != 16 {
			t.Errorf("%s advertises tags %v; want region %s, http %s, repl %s, a protocol and a 16-digit replica",
				cc.n.Name, tags, cc.n.Region, cc.n.HTTP, cc.n.Repl)
		}
	}
}

// checkLockedOut requires an agent without the key to be outside the pool:
// either it gave up (serf agent exits when its -join fails) or it sees no
// tally node.
func (a *serfAgent) checkLockedOut(t *testing.T, tc *testCluster) {
	t.Helper()
	select {
	case <-a.done:
		t.Logf("agent %s without the key exited: %v (%s)", a.name, a.cmd.ProcessState, lastLine(a.out.String(), "join"))
		return
	default:
	}
	ms, err := a.tryMembers()
	if err != nil {
		t.Logf("agent %s without the key: %v", a.name, err)
		return
	}
	for _, m := range ms {
		if slices.ContainsFunc(tc.nodes, func(cc *clusterClient) bool { return cc.n.Name == m.Name }) {
			t.Errorf("agent %s without the gossip key sees tally node %s: %+v", a.name, m.Name, m)
		}
	}
	t.Logf("agent %s without the key still runs and sees only %d member(s)", a.name, len(ms))
}

// lastLine returns the last line of s that contains sub, or "".
func lastLine(s, sub string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}
