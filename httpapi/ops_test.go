package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/tallyhq/tally/region"
)

func TestDashboardShowsDivergenceAndConvergence(t *testing.T) {
	tc := newTestCluster(t, "us", "eu", "ap")
	us, eu, ap := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	tc.view(us, "dv", "alice")
	tc.view(eu, "dv", "bob")

	agree := func(want int64) func() (bool, string) {
		return func() (bool, string) {
			d := tc.dashboardOf(us, "dv")
			ok := d.Converged != nil && *d.Converged && regionCount(d, "us") == want
			for _, m := range d.Members {
				ok = ok && m.Status == memberAlive
			}
			return ok, fmt.Sprintf("%s members %+v", regionSummary(d), d.Members)
		}
	}
	eventually(t, 30*time.Second, "every region shows 2 views", agree(2))

	d := tc.dashboardOf(us, "dv")
	if d.Node.Region != "us" || d.Node.Name != "us-1" || !d.Node.Replicating || !d.Node.Ready {
		t.Errorf("node = %+v, want us-1 in us, replicating, ready", d.Node)
	}
	if len(d.Regions) != 3 || d.Regions[0].Region != "us" || !d.Regions[0].Local {
		t.Errorf("regions = %s, want us (local) first of 3", regionSummary(d))
	}
	if len(d.Members) != 3 || !d.Members[0].Self {
		t.Errorf("members = %+v, want self first of 3", d.Members)
	}
	for _, m := range d.Members[1:] {
		if m.Status != memberAlive || m.LagSeconds < 0 || m.ViewCount == nil || *m.ViewCount != 2 {
			t.Errorf("member %+v: want alive, synced, 2 views", m)
		}
	}
	eventually(t, 10*time.Second, "top videos list dv with 2 views (cached up to a second)", func() (bool, string) {
		d := tc.dashboardOf(us, "dv")
		return len(d.Top) > 0 && d.Top[0].VideoID == "dv" && d.Top[0].ViewCount == 2, fmt.Sprintf("%+v", d.Top)
	})
	if d.Ingest.Counted != 1 {
		t.Errorf("ingest on us = %+v, want 1 counted (one view was posted here)", d.Ingest)
	}

	// Cut ap off: both sides take views and diverge.
	tc.net.partition("ap", "us", true)
	tc.net.partition("ap", "eu", true)
	tc.view(us, "dv", "carol")
	tc.view(ap, "dv", "dave")
	tc.view(ap, "dv", "erin")
	eventually(t, 30*time.Second, "regions diverge: us and eu 3, ap 4", func() (bool, string) {
		d := tc.dashboardOf(us, "dv")
		ok := d.Converged != nil && !*d.Converged &&
			regionCount(d, "us") == 3 && regionCount(d, "eu") == 3 && regionCount(d, "ap") == 4
		return ok, regionSummary(d)
	})

	// Membership declares ap failed on us: the dashboard keeps showing it, down.
	tc.setPeers(us, map[string]bool{ap.name: true})
	d = tc.dashboardOf(us, "dv")
	var apRow *memberJSON
	for i := range d.Members {
		if d.Members[i].Name == ap.name {
			apRow = &d.Members[i]
		}
	}
	if apRow == nil || apRow.Status != memberDown || apRow.ViewCount != nil || apRow.Error == "" {
		t.Errorf("ap while failed in gossip: %+v, want status down, no count, a reason", apRow)
	}
	if d.Converged == nil || *d.Converged || regionCount(d, "ap") != -1 {
		t.Errorf("with ap down: %s, want ap unknown and not converged", regionSummary(d))
	}

	// Heal: every region converges on all 5 views.
	tc.net.partition("ap", "us", false)
	tc.net.partition("ap", "eu", false)
	tc.setPeers(us, nil)
	eventually(t, 30*time.Second, "every region shows 5 views after the heal", agree(5))
	d = tc.dashboardOf(ap, "dv")
	if d.Converged == nil || !*d.Converged || regionCount(d, "ap") != 5 || d.Regions[0].Region != "ap" {
		t.Errorf("ap's own dashboard after the heal: %s, want ap first and 5 everywhere", regionSummary(d))
	}
}

func TestDashboardSingleNode(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 3 {
		e.view("top-a", fmt.Sprintf("u%d", i))
	}
	e.view("top-b", "u")
	var d dashboardResponse
	getJSON(t, e.url+"/v1/dashboard?video=top-b", &d)
	if d.Node.Replicating || !d.Node.Ready || d.Node.Region != "local" {
		t.Errorf("node = %+v", d.Node)
	}
	if len(d.Members) != 1 || d.Members[0].ViewCount == nil || *d.Members[0].ViewCount != 1 {
		t.Errorf("members = %+v, want this node alone with 1 view", d.Members)
	}
	if d.Converged == nil || !*d.Converged {
		t.Errorf("a single region agrees with itself: %s", regionSummary(d))
	}
	if len(d.Top) != 2 || d.Top[0].VideoID != "top-a" || d.Top[0].ViewCount != 3 || d.Top[1].VideoID != "top-b" {
		t.Errorf("top = %+v, want top-a (3) then top-b (1)", d.Top)
	}
	if d.Ingest.Counted != 4 || d.Ingest.EventsPerSecond <= 0 {
		t.Errorf("ingest = %+v, want 4 counted at a positive rate", d.Ingest)
	}

	getJSON(t, e.url+"/v1/dashboard", &d)
	if d.Video != "" || d.Converged != nil || len(d.Regions) != 1 {
		t.Errorf("without a video: video %q converged %v regions %d", d.Video, d.Converged, len(d.Regions))
	}
	r := e.do(http.MethodGet, "/v1/dashboard?video=bad%20id", "", nil)
	wantError(t, r, http.StatusBadRequest, region.CodeInvalidVideoID)
}

func TestDashboardPageIsEmbedded(t *testing.T) {
	e := newEnv(t, nil)
	for path, want := range map[string]struct{ ctype, contains string }{
		"/":                    {"text/html", `<script src="/dashboard/app.js"`},
		"/dashboard/app.js":    {"text/javascript", "/v1/dashboard"},
		"/dashboard/style.css": {"text/css", ".region"},
	} {
		r := e.do(http.MethodGet, path, "", nil)
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), want.ctype) || !strings.Contains(string(r.body), want.contains) {
			t.Errorf("GET %s: %d %s, want %s containing %q", path, r.status, r.header.Get("Content-Type"), want.ctype, want.contains)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	wantError(t, e.do(http.MethodGet, "/dashboard/nope.js", "", nil), http.StatusNotFound, CodeNotFound)
}

func TestReadiness(t *testing.T) {
	t.Run("single node", func(t *testing.T) {
		e := newEnv(t, nil)
		r := e.do(http.MethodGet, "/readyz", "", nil)
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"status":"ready"`) {
			t.Fatalf("GET /readyz: %s", r)
		}
	})
	t.Run("founder alone", func(t *testing.T) {
		node := openReplicating(t, "us-1")
		srv := New(node, Options{})
		if ok, why := srv.Ready(); !ok {
			t.Fatalf("a node that joins nobody is ready at once; got not ready: %s", why)
		}
	})
	t.Run("joining alone", func(t *testing.T) {
		node := openReplicating(t, "us-1")
		srv := New(node, Options{Joining: true, AloneAfter: 100 * time.Millisecond})
		if ok, why := srv.Ready(); ok || why != "looking for peers" {
			t.Fatalf("just started, joining: ready=%v (%s), want not ready, looking for peers", ok, why)
		}
		eventually(t, 10*time.Second, "ready alone after AloneAfter", func() (bool, string) {
			ok, why := srv.Ready()
			return ok && strings.HasPrefix(why, "alone"), why
		})
	})
	t.Run("joining syncs", func(t *testing.T) {
		tc := newTestCluster(t, "us", "eu")
		tc.net.partition("us", "eu", true)
		us := tc.nodes[0]
		eventually(t, 10*time.Second, "us sends to eu across the cut", func() (bool, string) {
			ps := us.node.ClusterStatus().Peers
			return len(ps) == 1 && ps[0].MessagesSent >= 3, fmt.Sprintf("%+v", ps)
		})
		r, err := http.Get(us.http.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		json.NewDecoder(r.Body).Decode(&body)
		r.Body.Close()
		if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body.Error.Message, "syncing with 1 peers") || r.Header.Get("Retry-After") == "" {
			t.Fatalf("GET /readyz while cut off from its only peer: %d %+v, want 503 syncing", r.StatusCode, body)
		}
		tc.net.partition("us", "eu", false)
		eventually(t, 30*time.Second, "ready once synced", func() (bool, string) {
			ok, why := us.srv.Ready()
			return ok && why == "synced with eu-1", why
		})
		// Readiness stays once reached: a region cut off keeps serving.
		tc.net.partition("us", "eu", true)
		if ok, why := us.srv.Ready(); !ok {
			t.Fatalf("not ready again after a cut: %s", why)
		}
	})
	t.Run("shutting down", func(t *testing.T) {
		node := openReplicating(t, "us-1")
		srv := New(node, Options{ShutdownTimeout: time.Second})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, ln) }()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if ok, why := srv.Ready(); ok || why != "shutting down" {
			t.Fatalf("after shutdown: ready=%v (%s)", ok, why)
		}
	})
}

// openReplicating opens an in-memory node with replication on and no peers.
func openReplicating(t *testing.T, name string) *region.Node {
	t.Helper()
	node, err := region.Open(region.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	if err := node.EnableReplication(region.ReplicationConfig{Self: name, Transport: memTransport{net: newMemNet()}}); err != nil {
		t.Fatal(err)
	}
	return node
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRequestIDs(t *testing.T) {
	var logs syncBuffer
	node, err := region.Open(region.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hs := httptest.NewServer(New(node, Options{Logger: log}).Handler())
	t.Cleanup(hs.Close)

	get := func(id string) string {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/videos/rid/views", nil)
		if id != "" {
			req.Header.Set(HeaderRequestID, id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get(HeaderRequestID)
	}
	a, b := get(""), get("")
	if a == "" || b == "" || a == b {
		t.Errorf("made-up request IDs %q and %q: want two different, non-empty", a, b)
	}
	if got := get("proxy-id-42"); got != "proxy-id-42" {
		t.Errorf("a client's request ID came back as %q", got)
	}
	if got := get("bad id\twith spaces"); got == "" || strings.Contains(got, " ") {
		t.Errorf("an unusable request ID came back as %q, want a made-up one", got)
	}

	found := false
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if rec["msg"] == "http request" && rec["request_id"] == "proxy-id-42" && rec["route"] == "/videos/:videoId/views" && rec["status"] == float64(200) {
			found = true
		}
	}
	if !found {
		t.Errorf("no access log line with request_id proxy-id-42; logs:\n%s", logs.String())
	}
}

// scrapeCluster returns /metrics of a replicating node that has a peer, so
// that every metric family is present.
func scrapeCluster(t *testing.T) (*testCluster, string) {
	t.Helper()
	tc := newTestCluster(t, "us", "eu")
	tc.view(tc.nodes[0], "mv", "u1")
	tc.nodes[0].srv.metrics.RegisterTransport(func() TransportStats { return TransportStats{FramesReceived: 3, RejectedBadMAC: 1} })
	eventually(t, 30*time.Second, "us synced with eu", func() (bool, string) {
		ok, why := tc.nodes[0].srv.Ready()
		return ok, why
	})
	resp, err := http.Get(tc.nodes[0].http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return tc, b.String()
}

func TestMetricsCoverTheIssue(t *testing.T) {
	_, text := scrapeCluster(t)
	expectMetrics(t, text,
		`tally_http_request_duration_seconds_bucket{method="POST",route="/videos/:videoId/views",le=`,
		"tally_http_requests_in_flight",
		`tally_ingest_events_total{fate="counted"} 1`,
		`tally_ingest_events_total{fate="duplicate"} 0`,
		`tally_ingest_events_total{fate="rate_limited"} 0`,
		"tally_claim_conflicts_lost_total 0",
		"tally_expired_records_swept_total",
		"tally_group_commit_batch_mutations_bucket",
		"tally_group_commit_fsync_seconds_bucket",
		`tally_replication_messages_sent_total{peer="eu-1",region="eu"}`,
		`tally_replication_bytes_sent_total{peer="eu-1",region="eu"}`,
		`tally_replication_messages_received_total{peer="eu-1",region="eu"}`,
		"tally_replication_send_errors_total",
		`tally_replication_lag_seconds{peer="eu-1",region="eu"}`,
		`tally_replication_region_lag_seconds{region="eu"}`,
		"tally_badger_lsm_bytes", "tally_badger_vlog_bytes",
		"tally_ready 1",
		`tally_filtered_events_total{reason="rate_limited"} 0`,
		`tally_filtered_events_total{reason="denied"} 0`,
		`tally_http_shed_total{reason="commit_queue"} 0`,
		"tally_http_ingest_inflight_requests 0",
		"tally_admin_auth_failures_total 0",
		`tally_replication_frames_rejected_total{reason="bad_mac"} 1`,
		`tally_replication_frames_rejected_total{reason="too_large"} 0`,
		"tally_replication_frames_received_total 3",
		"tally_replication_connections_refused_total 0",
		"go_gc_duration_seconds", "go_goroutines", "process_resident_memory_bytes",
	)
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

// TestMetricsLint runs Prometheus' own linter (the one behind promtool check
// metrics) on a replicating node's metrics, and promtool itself when it is
// installed.
func TestMetricsLint(t *testing.T) {
	tc, text := scrapeCluster(t)
	mfs, err := tc.nodes[0].srv.metrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; make test installs it when run as root): checked with the Go linter only")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	t.Logf("promtool check metrics: ok %s", bytes.TrimSpace(out))
}
