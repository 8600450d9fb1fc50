package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer implements the tally HTTP API in memory: dedup by (video, user,
// UTC day), strict request validation, and optional failures.
type fakeServer struct {
	t *testing.T

	// failEvery > 0 answers every failEvery-th request (over all endpoints)
	// with 503 before looking at it.
	failEvery int64
	// block, if set, is called by every handler first (e.g. to hang).
	block func(r *http.Request)
	// healthDelay slows GET /healthz down (the client's RTT probe).
	healthDelay time.Duration

	seq atomic.Int64

	mu      sync.Mutex
	seen    map[string]bool
	invalid []string
	tally
}

// tally is the server's own count of what it was sent.
type tally struct {
	perVideo   map[string]int64
	viewPosts  int64 // successful POST /videos/{id}/views
	gets       int64 // successful GET /videos/{id}/views
	batches    int64 // successful POST /v1/events
	events     int64 // events in successful batches
	counted    int64
	notCounted int64
	failed     int64
}

func newFakeServer(t *testing.T) *fakeServer {
	return &fakeServer{t: t, seen: map[string]bool{}, tally: tally{perVideo: map[string]int64{}}}
}

// start serves f on a loopback httptest.Server closed at the end of the test.
func (f *fakeServer) start() *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /videos/{videoId}/views", f.wrap(f.postView))
	mux.HandleFunc("GET /videos/{videoId}/views", f.wrap(f.getView))
	mux.HandleFunc("POST /v1/events", f.wrap(f.postEvents))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(f.healthDelay) // test server: an artificial round trip
		writeJSON(w, map[string]string{"status": "ok"})
	})
	srv := httptest.NewServer(mux)
	f.t.Cleanup(srv.Close)
	return srv
}

func (f *fakeServer) wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f.block != nil {
			f.block(r)
		}
		if n := f.seq.Add(1); f.failEvery > 0 && n%f.failEvery == 0 {
			f.mu.Lock()
			f.failed++
			f.mu.Unlock()
			writeError(w, http.StatusServiceUnavailable, "unavailable", "try later")
			return
		}
		h(w, r)
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v) //nolint:errcheck // test server
}

func validID(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '.' || c == ':' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// bad records a malformed request (the test fails on any) and answers 400.
func (f *fakeServer) bad(w http.ResponseWriter, why string) {
	f.mu.Lock()
	f.invalid = append(f.invalid, why)
	f.mu.Unlock()
	writeError(w, http.StatusBadRequest, "invalid", why)
}

// checkTimestamp accepts unix-millisecond timestamps within a minute of now.
func checkTimestamp(ts int64) bool {
	now := time.Now().UnixMilli()
	return ts > now-60_000 && ts < now+60_000
}

// record applies one view under f.mu and reports whether it counted.
func (f *fakeServer) record(video, user string, ts int64) bool {
	day := time.UnixMilli(ts).UTC().Format(time.DateOnly)
	key := video + "\x00" + user + "\x00" + day
	if f.seen[key] {
		f.notCounted++
		return false
	}
	f.seen[key] = true
	f.perVideo[video]++
	f.counted++
	return true
}

func decodeStrict(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("content type %q", ct)
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func (f *fakeServer) postView(w http.ResponseWriter, r *http.Request) {
	video := r.PathValue("videoId")
	var in struct {
		UserID    string `json:"userId"`
		Timestamp int64  `json:"timestamp"`
	}
	if err := decodeStrict(r, &in); err != nil {
		f.bad(w, "view body: "+err.Error())
		return
	}
	if !validID(video) || !validID(in.UserID) || !checkTimestamp(in.Timestamp) {
		f.bad(w, fmt.Sprintf("view fields: %q %+v", video, in))
		return
	}
	f.mu.Lock()
	f.viewPosts++
	counted := f.record(video, in.UserID, in.Timestamp)
	n := f.perVideo[video]
	f.mu.Unlock()
	if counted {
		writeJSON(w, map[string]any{"videoId": video, "counted": true, "viewCount": n})
	} else {
		writeJSON(w, map[string]any{"videoId": video, "counted": false, "viewCount": n, "reason": "duplicate"})
	}
}

func (f *fakeServer) getView(w http.ResponseWriter, r *http.Request) {
	video := r.PathValue("videoId")
	if !validID(video) {
		f.bad(w, "get id "+video)
		return
	}
	f.mu.Lock()
	f.gets++
	n := f.perVideo[video]
	f.mu.Unlock()
	writeJSON(w, map[string]any{"videoId": video, "viewCount": n, "lastUpdated": nil})
}

func (f *fakeServer) postEvents(w http.ResponseWriter, r *http.Request) {
	var in []struct {
		VideoID   string `json:"videoId"`
		UserID    string `json:"userId"`
		Timestamp int64  `json:"timestamp"`
	}
	if err := decodeStrict(r, &in); err != nil {
		f.bad(w, "batch body: "+err.Error())
		return
	}
	if len(in) == 0 || len(in) > 10_000 {
		f.bad(w, fmt.Sprintf("batch of %d", len(in)))
		return
	}
	for _, e := range in {
		if !validID(e.VideoID) || !validID(e.UserID) || !checkTimestamp(e.Timestamp) {
			f.bad(w, fmt.Sprintf("batch event %+v", e))
			return
		}
	}
	type nc struct {
		Index  int    `json:"index"`
		Reason string `json:"reason"`
	}
	out := struct {
		Received   int  `json:"received"`
		Counted    int  `json:"counted"`
		NotCounted []nc `json:"notCounted"`
	}{Received: len(in), NotCounted: []nc{}}
	f.mu.Lock()
	f.batches++
	f.events += int64(len(in))
	for i, e := range in {
		if f.record(e.VideoID, e.UserID, e.Timestamp) {
			out.Counted++
		} else {
			out.NotCounted = append(out.NotCounted, nc{i, "duplicate"})
		}
	}
	f.mu.Unlock()
	writeJSON(w, out)
}

// snapshot returns a copy of the server's counters for comparison.
// It fails the test if any request was malformed.
func (f *fakeServer) snapshot() tally {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.invalid) > 0 {
		f.t.Errorf("server saw %d malformed requests, first: %s", len(f.invalid), f.invalid[0])
	}
	s := f.tally
	s.perVideo = maps.Clone(f.perVideo)
	return s
}

// baseConfig is a small valid run against target.
func baseConfig(target, mode string) Config {
	return Config{
		Target:      target,
		Mode:        mode,
		Connections: 4,
		Duration:    30 * time.Second, // a safety cap; tests stop by Count
		Videos:      100,
		Users:       1_000_000,
		BatchSize:   10,
		Seed:        1,
		Timeout:     5 * time.Second,
	}
}

func mustRun(t *testing.T, cfg Config) Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// checkConsistent checks the identities every Result must satisfy.
func checkConsistent(t *testing.T, r Result) {
	t.Helper()
	if r.Successes+r.Errors != r.Requests {
		t.Errorf("successes %d + errors %d != requests %d", r.Successes, r.Errors, r.Requests)
	}
	var kinds int64
	for _, v := range r.ErrorsByKind {
		kinds += v
	}
	if kinds != r.Errors {
		t.Errorf("errors by kind %v sum to %d, want %d", r.ErrorsByKind, kinds, r.Errors)
	}
	var reasons int64
	for _, v := range r.NotCountedByReason {
		reasons += v
	}
	if reasons != r.ViewsNotCounted {
		t.Errorf("not counted by reason %v sum to %d, want %d", r.NotCountedByReason, reasons, r.ViewsNotCounted)
	}
	if r.Latency.Count != r.Requests {
		t.Errorf("latency count %d != requests %d", r.Latency.Count, r.Requests)
	}
	l := r.Latency
	if r.Requests > 0 && !(l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max && l.Min > 0) {
		t.Errorf("latency not ordered: %+v", l)
	}
}

func TestViewCountStopsExactlyAndMatchesServer(t *testing.T) {
	f := newFakeServer(t)
	srv := f.start()
	cfg := baseConfig(srv.URL, ModeView)
	cfg.Count = 257
	cfg.Connections = 8
	cfg.RepeatFraction = 0.25
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)

	if res.Requests != 257 || s.viewPosts != 257 {
		t.Fatalf("requests: result %d, server %d; want exactly 257", res.Requests, s.viewPosts)
	}
	if res.Errors != 0 || res.Successes != 257 || res.ViewsSent != 257 {
		t.Fatalf("errors %d successes %d sent %d", res.Errors, res.Successes, res.ViewsSent)
	}
	if res.ViewsCounted != s.counted || res.ViewsNotCounted != s.notCounted {
		t.Fatalf("counted/notCounted: result %d/%d, server %d/%d",
			res.ViewsCounted, res.ViewsNotCounted, s.counted, s.notCounted)
	}
	if res.NotCountedByReason["duplicate"] != res.ViewsNotCounted {
		t.Fatalf("reasons %v", res.NotCountedByReason)
	}
	// Repeats are drawn with probability 0.25 once a worker has an
	// acknowledged pair; fresh pairs never collide (257 < Users), so every
	// not-counted view is a repeat. Binomial(~249, 0.25): mean 62, sd 6.8.
	if res.ViewsNotCounted < 30 || res.ViewsNotCounted > 100 {
		t.Fatalf("notCounted %d, want about 25%% of 257", res.ViewsNotCounted)
	}
}

func TestFreshViewsAllCount(t *testing.T) {
	f := newFakeServer(t)
	srv := f.start()
	cfg := baseConfig(srv.URL, ModeView)
	cfg.Count = 300
	cfg.Videos = 1 // all on one video: only distinct users keep pairs apart
	cfg.RepeatFraction = 0
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)
	if res.ViewsCounted != 300 || res.ViewsNotCounted != 0 || s.counted != 300 {
		t.Fatalf("counted %d notCounted %d (server %d): fresh pairs must all count",
			res.ViewsCounted, res.ViewsNotCounted, s.counted)
	}
}

func TestSameSeedSingleConnectionIsDeterministic(t *testing.T) {
	run := func(seed int64) (Result, map[string]int64) {
		f := newFakeServer(t)
		srv := f.start()
		cfg := baseConfig(srv.URL, ModeView)
		cfg.Connections = 1
		cfg.Count = 200
		cfg.Videos = 5
		cfg.Users = 50 // wraps: fresh pairs collide too
		cfg.RepeatFraction = 0.3
		cfg.HotVideoFraction = 0.2
		cfg.Seed = seed
		return mustRun(t, cfg), f.snapshot().perVideo
	}
	a, va := run(7)
	b, vb := run(7)
	if a.ViewsCounted != b.ViewsCounted || a.ViewsNotCounted != b.ViewsNotCounted || fmt.Sprint(va) != fmt.Sprint(vb) {
		t.Fatalf("same seed differs: %d/%d %v vs %d/%d %v",
			a.ViewsCounted, a.ViewsNotCounted, va, b.ViewsCounted, b.ViewsNotCounted, vb)
	}
	if va[HotVideoID] == 0 {
		t.Fatalf("hot video never hit: %v", va)
	}
}

func TestHotVideoFractionOne(t *testing.T) {
	f := newFakeServer(t)
	srv := f.start()
	cfg := baseConfig(srv.URL, ModeView)
	cfg.Count = 100
	cfg.HotVideoFraction = 1
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)
	if len(s.perVideo) != 1 || s.perVideo[HotVideoID] != 100 {
		t.Fatalf("per video %v, want all 100 on %q", s.perVideo, HotVideoID)
	}
}

func TestBatchSums(t *testing.T) {
	f := newFakeServer(t)
	srv := f.start()
	cfg := baseConfig(srv.URL, ModeBatch)
	cfg.Count = 7
	cfg.Connections = 2
	cfg.BatchSize = 50
	cfg.RepeatFraction = 0.2
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)
	if res.Requests != 7 || s.batches != 7 || res.Errors != 0 {
		t.Fatalf("requests %d (server batches %d) errors %d, want 7/7/0", res.Requests, s.batches, res.Errors)
	}
	if res.ViewsSent != 350 || s.events != 350 {
		t.Fatalf("views sent %d, server events %d, want 350", res.ViewsSent, s.events)
	}
	if res.ViewsCounted != s.counted || res.ViewsNotCounted != s.notCounted ||
		res.ViewsCounted+res.ViewsNotCounted != 350 {
		t.Fatalf("counted/notCounted: result %d/%d, server %d/%d",
			res.ViewsCounted, res.ViewsNotCounted, s.counted, s.notCounted)
	}
	// The first batch of each worker has nothing to repeat yet: 250 events
	// at 0.2 give mean 50, sd 6.3.
	if res.ViewsNotCounted < 20 || res.ViewsNotCounted > 90 {
		t.Fatalf("notCounted %d, want about 20%% of the later batches", res.ViewsNotCounted)
	}
}

func TestMixedAndGet(t *testing.T) {
	f := newFakeServer(t)
	srv := f.start()
	cfg := baseConfig(srv.URL, ModeMixed)
	cfg.Count = 300
	cfg.GetRatio = 0.7
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)
	if s.gets+s.viewPosts != 300 || res.ViewsSent != s.viewPosts || res.Successes != 300 {
		t.Fatalf("server gets %d views %d; result sent %d ok %d", s.gets, s.viewPosts, res.ViewsSent, res.Successes)
	}
	if s.gets < 150 || s.gets > 270 { // Binomial(300, 0.7): mean 210, sd 7.9
		t.Fatalf("gets %d of 300, want about 70%%", s.gets)
	}

	cfg.Mode = ModeGet
	cfg.Count = 50
	res = mustRun(t, cfg)
	checkConsistent(t, res)
	if res.Successes != 50 || res.ViewsSent != 0 || f.snapshot().gets != s.gets+50 {
		t.Fatalf("get run: %+v", res)
	}
}

func TestErrorsAreCounted(t *testing.T) {
	f := newFakeServer(t)
	f.failEvery = 3
	srv := f.start()
	cfg := baseConfig(srv.URL, ModeView)
	cfg.Count = 300
	res := mustRun(t, cfg)
	s := f.snapshot()
	checkConsistent(t, res)
	if res.Requests != 300 || res.Errors != 100 || res.ErrorsByKind["http_503"] != 100 || s.failed != 100 {
		t.Fatalf("requests %d errors %d kinds %v (server failed %d), want 300/100/http_503=100",
			res.Requests, res.Errors, res.ErrorsByKind, s.failed)
	}
	if res.ViewsSent != 300 || res.ViewsCounted+res.ViewsNotCounted != 200 || res.ViewsCounted != s.counted {
		t.Fatalf("sent %d counted %d notCounted %d (server counted %d)",
			res.ViewsSent, res.ViewsCounted, res.ViewsNotCounted, s.counted)
	}
	var out bytes.Buffer
	res.Write(&out)
	if !strings.Contains(out.String(), "errors: http_503=100\n") {
		t.Fatalf("report lacks error split:\n%s", out.String())
	}
}

func TestBadResponseIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"videoId":"v1"}`)) //nolint:errcheck // test
	}))
	t.Cleanup(srv.Close)
	cfg := baseConfig(srv.URL, ModeView)
	cfg.Count = 10
	res := mustRun(t, cfg)
	checkConsistent(t, res)
	if res.Errors != 10 || res.ErrorsByKind["bad_response"] != 10 {
		t.Fatalf("errors %v, want bad_response=10", res.ErrorsByKind)
	}
}

// hang returns a block function that reads the request body (so the server
// notices the client going away), signals arrived if non-nil, and waits until
// the client disconnects or the test ends.
func hang(t *testing.T, arrived chan<- struct{}) func(*http.Request) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	return func(r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck // test
		if arrived != nil {
			arrived <- struct{}{}
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
}

func TestTimeoutIsAnError(t *testing.T) {
	f := newFakeServer(t)
	srv := f.start()
	f.block = hang(t, nil) // never answers; set after start so it is released first
	cfg := baseConfig(srv.URL, ModeView)
	cfg.Connections = 1
	cfg.Count = 3
	cfg.Timeout = 50 * time.Millisecond
	res := mustRun(t, cfg)
	checkConsistent(t, res)
	if res.Requests != 3 || res.ErrorsByKind["timeout"] != 3 {
		t.Fatalf("requests %d errors %v, want 3 timeouts", res.Requests, res.ErrorsByKind)
	}
	if res.Latency.Min < 50*time.Millisecond {
		t.Fatalf("a timed-out request took %s < timeout", res.Latency.Min)
	}
}

func TestDurationStops(t *testing.T) {
	f := newFakeServer(t)
	srv := f.start()
	cfg := baseConfig(srv.URL, ModeGet)
	cfg.Connections = 2
	cfg.Duration = 150 * time.Millisecond
	start := time.Now()
	res := mustRun(t, cfg)
	took := time.Since(start)
	checkConsistent(t, res)
	if res.Elapsed < cfg.Duration || took > cfg.Duration+cfg.Timeout {
		t.Fatalf("elapsed %s (took %s), want in [%s, %s]", res.Elapsed, took, cfg.Duration, cfg.Duration+cfg.Timeout)
	}
	if res.Requests == 0 || res.Requests != f.snapshot().gets || res.Errors != 0 {
		t.Fatalf("requests %d, server gets %d, errors %d", res.Requests, f.snapshot().gets, res.Errors)
	}
}

func TestCountDefaultsDurationCap(t *testing.T) {
	cfg := Config{Target: "http://127.0.0.1:1", Mode: ModeView, Connections: 1, Count: 5, Videos: 1, Users: 1}
	n, _, err := cfg.normalize()
	if err != nil {
		t.Fatal(err)
	}
	if n.Duration != DefaultDuration || n.Timeout != DefaultTimeout {
		t.Fatalf("defaults: duration %s timeout %s", n.Duration, n.Timeout)
	}
}

func TestCancelStopsAndIsNotCounted(t *testing.T) {
	arrived := make(chan struct{}, 16)
	f := newFakeServer(t)
	srv := f.start()
	f.block = hang(t, arrived)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-arrived
		cancel()
	}()
	cfg := baseConfig(srv.URL, ModeView)
	cfg.Connections = 1
	res, err := Run(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if res.Requests != 0 || res.Errors != 0 {
		t.Fatalf("aborted request counted: %+v", res)
	}
}

func TestInvalidConfigRejected(t *testing.T) {
	good := baseConfig("http://127.0.0.1:8080", ModeView)
	if err := good.Validate(); err != nil {
		t.Fatalf("base config invalid: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no target":         func(c *Config) { c.Target = "" },
		"bad scheme":        func(c *Config) { c.Target = "ftp://127.0.0.1" },
		"no host":           func(c *Config) { c.Target = "http://" },
		"query":             func(c *Config) { c.Target = "http://h/?a=b" },
		"bad mode":          func(c *Config) { c.Mode = "write" },
		"no mode":           func(c *Config) { c.Mode = "" },
		"zero conns":        func(c *Config) { c.Connections = 0 },
		"too many conns":    func(c *Config) { c.Connections = MaxConnections + 1 },
		"no end":            func(c *Config) { c.Duration, c.Count = 0, 0 },
		"negative count":    func(c *Config) { c.Count = -1 },
		"negative duration": func(c *Config) { c.Duration = -time.Second },
		"too long":          func(c *Config) { c.Duration = MaxDuration + time.Second },
		"negative timeout":  func(c *Config) { c.Timeout = -1 },
		"huge timeout":      func(c *Config) { c.Timeout = time.Hour },
		"no videos":         func(c *Config) { c.Videos = 0 },
		"no users":          func(c *Config) { c.Users = 0 },
		"hot > 1":           func(c *Config) { c.HotVideoFraction = 1.5 },
		"repeat < 0":        func(c *Config) { c.RepeatFraction = -0.1 },
		"get ratio NaN":     func(c *Config) { c.GetRatio = nan() },
		"batch of zero":     func(c *Config) { c.Mode, c.BatchSize = ModeBatch, 0 },
		"batch too big":     func(c *Config) { c.Mode, c.BatchSize = ModeBatch, MaxBatchSize+1 },
	} {
		cfg := good
		mut(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, cfg)
		}
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: Run accepted %+v", name, cfg)
		}
	}
	getNoUsers := good
	getNoUsers.Mode, getNoUsers.Users = ModeGet, 0
	if err := getNoUsers.Validate(); err != nil {
		t.Errorf("get mode needs no users: %v", err)
	}
}

func nan() float64 {
	var zero float64
	return zero / zero
}

func TestWriteReport(t *testing.T) {
	r := Result{
		Mode: ModeView, Connections: 64, Elapsed: 10 * time.Second,
		Requests: 1000, Successes: 1000, ViewsSent: 1000, ViewsCounted: 900, ViewsNotCounted: 100,
		NotCountedByReason: map[string]int64{"duplicate": 90, "rate_limited": 10},
		RequestsPerSec:     100, ViewsPerSec: 100,
		Latency: Latency{Count: 1000, P50: 1200 * time.Microsecond, P90: 2 * time.Millisecond,
			P99: 34 * time.Millisecond, P999: 810 * time.Millisecond, Max: 2 * time.Second},
	}
	var b bytes.Buffer
	r.Write(&b)
	want := "mode=view conns=64 duration=10.00s requests=1000 ok=1000 errors=0 req/s=100.0 views/s=100.0 " +
		"sent=1000 counted=900 notCounted=100 p50=1.20ms p90=2.00ms p99=34.0ms p999=810.0ms max=2.00s\n" +
		"notCounted: duplicate=90 rate_limited=10\n"
	if b.String() != want {
		t.Fatalf("report:\n%q\nwant\n%q", b.String(), want)
	}
}

func TestHistogramWithinOnePercent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := newHistogram()
	var vals []uint64
	for range 20000 {
		// log-uniform over 1ns .. ~100s, plus exact small values
		v := uint64(1) << rng.IntN(37)
		v += rng.Uint64N(v)
		vals = append(vals, v)
		h.record(time.Duration(v))
	}
	slices.Sort(vals)
	n := uint64(len(vals))
	for _, ppm := range []uint64{1, 500_000, 900_000, 990_000, 999_000, 1_000_000} {
		rank := max((n*ppm+999_999)/1_000_000, 1)
		exact := vals[rank-1]
		got := uint64(h.quantile(ppm))
		if got < exact || float64(got) > float64(exact)*(1+1.0/128) {
			t.Errorf("q=%d ppm: got %d, exact %d", ppm, got, exact)
		}
	}
	s := h.summary()
	if uint64(s.Min) != vals[0] || uint64(s.Max) != vals[n-1] || s.Count != int64(n) {
		t.Errorf("summary %+v, want min %d max %d", s, vals[0], vals[n-1])
	}
	// Bucket edges: every value maps to a bucket whose upper edge is >= it,
	// and the bucket after it starts above it.
	for _, v := range []uint64{0, 1, 127, 255, 256, 257, 511, 512, 1 << 40, 1<<63 + 12345, ^uint64(0)} {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets || bucketUpper(i) < v || (i > 0 && bucketUpper(i-1) >= v) {
			t.Errorf("value %d: bucket %d upper %d", v, i, bucketUpper(i))
		}
	}
}

// TestEarlyAnswerToLargeBatch has the server answer 503 without reading large
// request bodies, so the transport may still be sending a body when the
// response arrives; under -race this checks the body buffer is not reused
// while the transport reads it.
func TestEarlyAnswerToLargeBatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "early")
	}))
	t.Cleanup(srv.Close)
	cfg := baseConfig(srv.URL, ModeBatch)
	cfg.Connections = 2
	cfg.Count = 20
	cfg.BatchSize = 5000 // ~350 KB: more than the server drains
	res := mustRun(t, cfg)
	checkConsistent(t, res)
	if res.Requests != 20 || res.Errors != 20 || res.ViewsSent != 20*5000 {
		t.Fatalf("requests %d errors %v sent %d, want 20 failed requests of 5000 views",
			res.Requests, res.ErrorsByKind, res.ViewsSent)
	}
}

func TestFreshBodyReuseOnlyAfterClose(t *testing.T) {
	w := &worker{body: &reqBody{}}
	b := w.freshBody()
	b.buf = append(b.buf, "abc"...)
	b.used = true // handed to a transport that has not closed it
	if w.freshBody() == b {
		t.Fatal("reused a body the transport may still read")
	}
	b2 := w.body
	b2.used = true
	b2.Close() //nolint:errcheck // never fails
	if w.freshBody() != b2 {
		t.Fatal("did not reuse a closed body")
	}
	if len(b2.buf) != 0 || b2.off != 0 || b2.closed.Load() {
		t.Fatal("reused body not reset")
	}
}
