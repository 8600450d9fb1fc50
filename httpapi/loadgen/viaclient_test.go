package loadgen

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallyhq/tally/httpapi/client"
)

// clientConfig is baseConfig sent through the client over regions.
func clientConfig(mode string, regions ...client.Region) Config {
	cfg := baseConfig("", mode)
	cfg.Regions = regions
	return cfg
}

func TestViaClientMatchesServer(t *testing.T) {
	f := newFakeServer(t)
	srv := f.start()
	cfg := clientConfig(ModeView, client.Region{Name: "r1", Endpoints: []string{srv.URL}})
	cfg.Count = 201
	cfg.Connections = 6
	cfg.RepeatFraction = 0.25
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)
	if !res.ViaClient || res.Requests != 201 || s.viewPosts != 201 || res.Errors != 0 || res.ViewsSent != 201 {
		t.Fatalf("via client %v requests %d (server %d) errors %d sent %d; want 201 without errors",
			res.ViaClient, res.Requests, s.viewPosts, res.Errors, res.ViewsSent)
	}
	if res.ViewsCounted != s.counted || res.ViewsNotCounted != s.notCounted || res.NotCountedByReason["duplicate"] != res.ViewsNotCounted {
		t.Fatalf("counted/notCounted: result %d/%d %v, server %d/%d",
			res.ViewsCounted, res.ViewsNotCounted, res.NotCountedByReason, s.counted, s.notCounted)
	}
	if res.ViewsNotCounted < 20 || res.ViewsNotCounted > 90 { // Binomial(~195, 0.25): mean 49, sd 6
		t.Fatalf("notCounted %d, want about 25%% of 201", res.ViewsNotCounted)
	}
	if res.Attempts != 201 || res.Failovers != 0 || res.AnsweredBy["r1"] != 201 {
		t.Fatalf("attempts %d failovers %d answered %v; want 201, 0, r1=201", res.Attempts, res.Failovers, res.AnsweredBy)
	}
	var out bytes.Buffer
	res.Write(&out)
	if !strings.Contains(out.String(), "client: attempts=201 failovers=0\nansweredBy: r1=201\n") {
		t.Fatalf("report lacks the client lines:\n%s", out.String())
	}
}

func TestViaClientBatchAndMixed(t *testing.T) {
	f := newFakeServer(t)
	a, b := f.start(), f.start() // one dedup state behind two endpoints
	regions := []client.Region{{Name: "a", Endpoints: []string{a.URL}}, {Name: "b", Endpoints: []string{b.URL}}}

	cfg := clientConfig(ModeBatch, regions...)
	cfg.Count = 6
	cfg.Connections = 2
	cfg.BatchSize = 40
	cfg.RepeatFraction = 0.2
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)
	if res.Requests != 6 || s.batches != 6 || res.ViewsSent != 240 || s.events != 240 {
		t.Fatalf("requests %d (server %d), views %d (server %d); want 6 and 240", res.Requests, s.batches, res.ViewsSent, s.events)
	}
	if res.ViewsCounted != s.counted || res.ViewsNotCounted != s.notCounted {
		t.Fatalf("counted/notCounted: result %d/%d, server %d/%d", res.ViewsCounted, res.ViewsNotCounted, s.counted, s.notCounted)
	}

	cfg = clientConfig(ModeMixed, regions...)
	cfg.Count = 200
	cfg.GetRatio = 0.5
	res = mustRun(t, cfg)
	checkConsistent(t, res)
	s2 := f.snapshot()
	if res.Successes != 200 || (s2.gets-s.gets)+(s2.viewPosts-s.viewPosts) != 200 || res.ViewsSent != s2.viewPosts-s.viewPosts {
		t.Fatalf("mixed: ok %d sent %d; server gets %d posts %d", res.Successes, res.ViewsSent, s2.gets-s.gets, s2.viewPosts-s.viewPosts)
	}
}

// A nearer region that answers its probes but fails every call: the client
// fails over to the other one, every view is acknowledged there exactly once,
// and the failovers are reported.
func TestViaClientFailsOver(t *testing.T) {
	var failed atomic.Int64
	near := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			writeJSON(w, map[string]string{"status": "ok"})
			return
		}
		failed.Add(1)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "shutting down")
	}))
	t.Cleanup(near.Close)
	f := newFakeServer(t)
	f.healthDelay = 20 * time.Millisecond // so that "near" is the nearest
	far := f.start()

	cfg := clientConfig(ModeView,
		client.Region{Name: "far", Endpoints: []string{far.URL}},
		client.Region{Name: "near", Endpoints: []string{near.URL}})
	cfg.Count = 100
	cfg.Connections = 2
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)
	if res.Errors != 0 || res.Successes != 100 || res.ViewsCounted != 100 || s.counted != 100 {
		t.Fatalf("errors %d ok %d counted %d (server %d); want every view counted once: %v",
			res.Errors, res.Successes, res.ViewsCounted, s.counted, res.ErrorsByKind)
	}
	if got := failed.Load(); got == 0 || res.Failovers != got || res.Attempts != 100+got {
		t.Fatalf("near failed %d calls; failovers %d attempts %d, want %d and %d", got, res.Failovers, res.Attempts, got, 100+got)
	}
	if res.AnsweredBy["far"] != 100 {
		t.Fatalf("answered by %v, want far=100", res.AnsweredBy)
	}
}

func TestViaClientErrorKinds(t *testing.T) {
	f := newFakeServer(t)
	f.failEvery = 1 // every call fails everywhere
	srv := f.start()
	cfg := clientConfig(ModeView, client.Region{Name: "r", Endpoints: []string{srv.URL}})
	cfg.Count = 3
	cfg.Connections = 1
	res := mustRun(t, cfg)
	checkConsistent(t, res)
	// The first call retries its only endpoint and gives up with its 503;
	// once the endpoint's breaker is open, calls fail without a request.
	k := res.ErrorsByKind
	if res.Errors != 3 || k["http_503"] == 0 || k["http_503"]+k["no_endpoint"] != 3 || res.ViewsSent != 3 {
		t.Fatalf("errors %d %v sent %d; want 3 × http_503 or no_endpoint", res.Errors, k, res.ViewsSent)
	}
	for _, tc := range []struct {
		err  error
		kind string
	}{
		{client.ErrNoEndpoint, "no_endpoint"},
		{&client.APIError{Status: 429}, "http_429"},
		{client.ErrBadResponse, "bad_response"},
		{http.ErrHandlerTimeout, "transport"},
	} {
		if got := clientErrorKind(tc.err); got != tc.kind {
			t.Errorf("kind of %v = %q, want %q", tc.err, got, tc.kind)
		}
	}
}

func TestRunMultiRefusesRegions(t *testing.T) {
	cfg := clientConfig(ModeView, client.Region{Name: "r", Endpoints: []string{"http://127.0.0.1:1"}})
	cfg.Count = 1
	if _, err := RunMulti(t.Context(), MultiConfig{Config: cfg, Targets: []string{"http://127.0.0.1:1"}}); err == nil {
		t.Fatal("RunMulti accepted Config.Regions")
	}
	cfg.Regions = []client.Region{{Name: "r"}}
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate accepted a region without endpoints")
	}
}
