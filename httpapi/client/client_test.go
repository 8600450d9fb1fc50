package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"
)

// testCtx bounds every test: nothing may wait longer than this.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// regionsOf groups the nodes into regions, in order of first appearance.
func regionsOf(nodes ...*node) []Region {
	var out []Region
	at := map[string]int{}
	for _, n := range nodes {
		i, ok := at[n.region]
		if !ok {
			i = len(out)
			at[n.region] = i
			out = append(out, Region{Name: n.region})
		}
		out[i].Endpoints = append(out[i].Endpoints, n.srv.URL)
	}
	return out
}

// waits records the pauses the client takes between attempts.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

// newClient builds a client over nodes with fast test defaults.
func newClient(t *testing.T, cfg Config, nodes ...*node) (*Client, *waits) {
	t.Helper()
	cfg.Regions = regionsOf(nodes...)
	setDefault(&cfg.Timeout, time.Second)
	setDefault(&cfg.BackoffMin, time.Millisecond)
	setDefault(&cfg.BackoffMax, 2*time.Millisecond)
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(1, 2))
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := &waits{}
	c.sleep = func(ctx context.Context, d time.Duration) error {
		if d > 0 {
			w.mu.Lock()
			w.d = append(w.d, d)
			w.mu.Unlock()
		}
		return sleepCtx(ctx, d)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c, w
}

func statusOf(t *testing.T, c *Client, n *node) EndpointStatus {
	t.Helper()
	for _, s := range c.Endpoints() {
		if s.Name == n.srv.URL {
			return s
		}
	}
	t.Fatalf("no endpoint %s", n.srv.URL)
	return EndpointStatus{}
}

func TestNearestEndpointByRTT(t *testing.T) {
	ctx := testCtx(t)
	cl := newCluster()
	us, eu, ap := newNode(t, cl, "us"), newNode(t, cl, "eu"), newNode(t, cl, "ap")
	us.setHealthDelay(40 * time.Millisecond)
	ap.setHealthDelay(40 * time.Millisecond)
	c, _ := newClient(t, Config{ProbeSamples: 3}, us, eu, ap)

	// Before any probe, configuration order decides.
	if r, err := c.RecordView(ctx, "v1", "before", time.Time{}); err != nil || r.Region != "us" {
		t.Fatalf("before probing: region %q, err %v; want us (first configured)", r.Region, err)
	}
	if err := c.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Endpoints()
	if len(st) != 3 || st[0].Region != "us" || st[1].Region != "eu" || st[2].Region != "ap" {
		t.Fatalf("Endpoints not in configuration order: %+v", st)
	}
	for _, s := range st {
		if !s.Probed || !s.Healthy || s.RTT <= 0 || s.Breaker != BreakerClosed {
			t.Errorf("endpoint %+v: want probed, healthy, measured, closed", s)
		}
	}
	if st[0].RTT < 40*time.Millisecond || st[2].RTT < 40*time.Millisecond {
		t.Errorf("slow endpoints measured below their 40ms delay: us %s ap %s", st[0].RTT, st[2].RTT)
	}
	if st[1].RTT >= st[0].RTT || st[1].RTT >= st[2].RTT {
		t.Errorf("eu RTT %s not below us %s and ap %s", st[1].RTT, st[0].RTT, st[2].RTT)
	}

	usHits, apHits := us.apiHits.Load(), ap.apiHits.Load()
	for i := range 5 {
		r, err := c.RecordView(ctx, "v1", fmt.Sprintf("u%d", i), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if r.Region != "eu" || r.Endpoint != eu.srv.URL || r.Attempts != 1 || r.FailedOver || !r.Counted || r.VideoID != "v1" {
			t.Fatalf("view %d: %+v; want counted by eu in one attempt", i, r)
		}
	}
	if us.apiHits.Load() != usHits || ap.apiHits.Load() != apHits {
		t.Errorf("slow endpoints got API requests after probing")
	}
}

func TestFailover(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    mode
		applied bool // the first region counted the view before failing
	}{
		{"503", mode503, false},
		{"429", mode429, false},
		{"connection closed", modeClose, false},
		{"timeout", modeHang, false},
		{"200 with garbage", modeGarbage, false},
		{"answer lost after counting", modeApplyClose, true},
		{"timeout after counting", modeApplyHang, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			cl := newCluster()
			us, eu := newNode(t, cl, "us"), newNode(t, cl, "eu")
			us.fail(tc.mode, -1)
			c, w := newClient(t, Config{Timeout: 500 * time.Millisecond}, us, eu)

			start := time.Now()
			r, err := c.RecordView(ctx, "v1", "alice", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("failover took %s", elapsed)
			}
			if r.Region != "eu" || r.Endpoint != eu.srv.URL || r.Attempts != 2 || !r.FailedOver {
				t.Fatalf("got %+v; want answered by eu on attempt 2 after failover", r)
			}
			// Exactly once across regions: a view the first region counted
			// comes back from the second as a duplicate.
			wantCounted, wantReason := !tc.applied, ""
			if tc.applied {
				wantReason = ReasonDuplicate
			}
			if r.Counted != wantCounted || r.Reason != wantReason || r.ViewCount != 1 {
				t.Errorf("got counted=%v reason=%q count=%d; want counted=%v reason=%q count=1", r.Counted, r.Reason, r.ViewCount, wantCounted, wantReason)
			}
			if n := cl.total(); n != 1 {
				t.Errorf("cluster counted %d views; want exactly 1", n)
			}
			if s := c.Stats(); s.Failovers != 1 || s.Calls != 1 || s.Attempts != 2 {
				t.Errorf("stats %+v; want 1 call, 2 attempts, 1 failover", s)
			}
			st := statusOf(t, c, us)
			if st.Failures != 1 || st.ConsecutiveFailures != 1 || st.LastError == "" || st.Breaker != BreakerClosed {
				t.Errorf("us status %+v; want one failure recorded, breaker still closed", st)
			}
			// With another endpoint at hand, Retry-After is not waited for:
			// only the backoff (at most BackoffMax) is.
			for _, d := range w.all() {
				if d > 2*time.Millisecond {
					t.Errorf("waited %s before failing over; want only the backoff", d)
				}
			}
			if tc.mode == mode503 || tc.mode == mode429 {
				if st.RetryAfter.IsZero() {
					t.Errorf("us status %+v: Retry-After not recorded", st)
				}
				// us is under Retry-After: the next call goes to eu at once.
				hits := us.apiHits.Load()
				r, err := c.RecordView(ctx, "v1", "bob", time.Time{})
				if err != nil || r.Region != "eu" || r.Attempts != 1 || us.apiHits.Load() != hits {
					t.Errorf("call during Retry-After: %+v, %v; want eu in one attempt, us untouched", r, err)
				}
			}
		})
	}
}

func TestFailoverPrefersAnotherRegion(t *testing.T) {
	ctx := testCtx(t)
	cl := newCluster()
	us1, us2, eu := newNode(t, cl, "us"), newNode(t, cl, "us"), newNode(t, cl, "eu")
	us1.fail(modeClose, -1)
	c, _ := newClient(t, Config{}, us1, us2, eu)
	r, err := c.RecordView(ctx, "v1", "alice", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Region != "eu" || r.Endpoint != eu.srv.URL || r.Attempts != 2 {
		t.Fatalf("got %+v; want eu on attempt 2 (another region after us failed)", r)
	}
	if n := us2.apiHits.Load(); n != 0 {
		t.Errorf("us-2 got %d requests; want none", n)
	}
}

func TestBreakerOpensAndHalfOpens(t *testing.T) {
	ctx := testCtx(t)
	clock := newFakeClock()
	cl := newCluster()
	us, eu := newNode(t, cl, "us"), newNode(t, cl, "eu")
	us.setRetryAfter("") // the breaker alone keeps us out
	us.fail(mode503, -1)
	c, _ := newClient(t, Config{BreakerFailures: 2, BreakerCooldown: time.Minute, Now: clock.Now}, us, eu)

	user := 0
	view := func(wantRegion string, wantAttempts int) {
		t.Helper()
		user++
		r, err := c.RecordView(ctx, "v1", fmt.Sprintf("u%d", user), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Region != wantRegion || r.Attempts != wantAttempts {
			t.Fatalf("view %d: %+v; want region %s in %d attempts", user, r, wantRegion, wantAttempts)
		}
	}
	wantBreaker := func(want BreakerState, failures int) {
		t.Helper()
		if st := statusOf(t, c, us); st.Breaker != want || st.ConsecutiveFailures != failures {
			t.Fatalf("us breaker %s with %d consecutive failures; want %s with %d", st.Breaker, st.ConsecutiveFailures, want, failures)
		}
	}

	view("eu", 2) // us fails once
	wantBreaker(BreakerClosed, 1)
	view("eu", 2) // twice: open
	wantBreaker(BreakerOpen, 2)
	hits := us.apiHits.Load()
	view("eu", 1) // us is skipped
	if us.apiHits.Load() != hits {
		t.Fatal("a request went through an open breaker")
	}
	clock.Advance(time.Minute - time.Second)
	wantBreaker(BreakerOpen, 2)
	view("eu", 1)
	clock.Advance(time.Second)
	wantBreaker(BreakerHalfOpen, 2)

	// The trial request succeeds: closed again.
	us.fail(modeOK, 0)
	view("us", 1)
	wantBreaker(BreakerClosed, 0)

	// Open it again, and let the trial fail: open for another cooldown.
	us.fail(mode503, -1)
	view("eu", 2)
	view("eu", 2)
	wantBreaker(BreakerOpen, 2)
	clock.Advance(time.Minute)
	wantBreaker(BreakerHalfOpen, 2)
	hits = us.apiHits.Load()
	view("eu", 2) // trial on us fails, eu answers
	if us.apiHits.Load() != hits+1 {
		t.Fatalf("us got %d requests in half-open; want exactly the trial", us.apiHits.Load()-hits)
	}
	wantBreaker(BreakerOpen, 3)
	view("eu", 1)
	if us.apiHits.Load() != hits+1 {
		t.Fatal("a request went through the reopened breaker")
	}
	if st := statusOf(t, c, us); st.Failures != 5 || st.Successes != 1 {
		t.Errorf("us status %+v; want 5 failures, 1 success", st)
	}
}

func TestBreakerSingleTrial(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := breaker{threshold: 2, cooldown: time.Second}
	g0, _ := b.acquire(now)
	g1, _ := b.acquire(now)
	b.failure(g0, now)
	b.failure(g1, now)
	if b.available(now) || b.effective(now) != BreakerOpen {
		t.Fatalf("breaker %+v: want open", b)
	}
	later := now.Add(time.Second)
	if !b.available(later) || b.effective(later) != BreakerHalfOpen {
		t.Fatalf("breaker %+v after cooldown: want half-open and available", b)
	}
	gt, trial := b.acquire(later)
	if !trial {
		t.Fatal("first request after cooldown is not the trial")
	}
	if b.available(later) {
		t.Fatal("a second request may go through while the trial is in flight")
	}
	b.success(g0) // a stale success from before the breaker opened
	if b.effective(later) != BreakerHalfOpen {
		t.Fatalf("a stale success changed the breaker: %s", b.effective(later))
	}
	b.abandon(gt, true) // the caller gave up: the trial slot is free again
	if !b.available(later) {
		t.Fatal("trial slot not freed by abandon")
	}
	gt, _ = b.acquire(later)
	b.success(gt)
	if b.effective(later) != BreakerClosed || b.consecutive != 0 {
		t.Fatalf("breaker %+v after a successful trial: want closed", b)
	}
}

func TestAllBreakersOpen(t *testing.T) {
	ctx := testCtx(t)
	clock := newFakeClock()
	us := newNode(t, newCluster(), "us")
	us.fail(mode503, -1)
	c, _ := newClient(t, Config{BreakerFailures: 1, Now: clock.Now, MaxAttempts: 3}, us)
	r, err := c.RecordView(ctx, "v1", "alice", time.Time{})
	var ae *APIError
	if !errors.Is(err, ErrNoEndpoint) || !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Fatalf("err %v; want ErrNoEndpoint wrapping the 503", err)
	}
	if r.Attempts != 1 || us.apiHits.Load() != 1 {
		t.Errorf("%d attempts, %d requests; want 1", r.Attempts, us.apiHits.Load())
	}
	if _, err := c.Views(ctx, "v1"); !errors.Is(err, ErrNoEndpoint) {
		t.Errorf("Views with every breaker open: %v; want ErrNoEndpoint", err)
	}
}

func TestNoRetryOn4xx(t *testing.T) {
	ctx := testCtx(t)
	cl := newCluster()
	us, eu := newNode(t, cl, "us"), newNode(t, cl, "eu")
	c, w := newClient(t, Config{BreakerFailures: 1}, us, eu)
	for _, tc := range []struct {
		video, user, code string
	}{
		{"v1", "bad user", CodeInvalidUserID},
		{"v 2", "alice", CodeInvalidVideoID},
	} {
		r, err := c.RecordView(ctx, tc.video, tc.user, time.Time{})
		var ae *APIError
		if !errors.As(err, &ae) {
			t.Fatalf("err %v (%T); want *APIError", err, err)
		}
		if ae.Status != http.StatusBadRequest || ae.Code != tc.code || ae.Message == "" || ae.Region != "us" || ae.Endpoint != us.srv.URL {
			t.Errorf("APIError %+v; want 400 %s from us", ae, tc.code)
		}
		if ae.Temporary() || r.Attempts != 1 || r.FailedOver {
			t.Errorf("result %+v: a 400 was retried", r)
		}
	}
	if us.apiHits.Load() != 2 || eu.apiHits.Load() != 0 || len(w.all()) != 0 {
		t.Errorf("requests us=%d eu=%d waits=%v; want 2, 0, none", us.apiHits.Load(), eu.apiHits.Load(), w.all())
	}
	if st := statusOf(t, c, us); st.Breaker != BreakerClosed || st.Failures != 0 || st.Successes != 2 {
		t.Errorf("us status %+v: a 400 counted against the breaker", st)
	}
	if cl.total() != 0 {
		t.Errorf("an invalid view was counted")
	}
}

func TestRetryAfterHonouredAndCapped(t *testing.T) {
	for _, m := range []mode{mode503, mode429} {
		t.Run(fmt.Sprint(m), func(t *testing.T) {
			ctx := testCtx(t)
			clock := newFakeClock() // frozen: the wait is exactly the capped Retry-After
			us := newNode(t, newCluster(), "us")
			us.setRetryAfter("3")
			us.fail(m, 1)
			const capped = 50 * time.Millisecond
			c, w := newClient(t, Config{MaxRetryAfter: capped, Now: clock.Now}, us)
			start := time.Now()
			r, err := c.RecordView(ctx, "v1", "alice", time.Time{})
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if r.Attempts != 2 || r.Region != "us" || !r.Counted || r.FailedOver {
				t.Fatalf("got %+v; want counted by us on attempt 2", r)
			}
			if got := w.all(); !reflect.DeepEqual(got, []time.Duration{capped}) {
				t.Errorf("waits %v; want [%s] (Retry-After 3s capped)", got, capped)
			}
			if elapsed < capped || elapsed > 2*time.Second {
				t.Errorf("call took %s; want at least the %s cap and far below the 3s asked", elapsed, capped)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"1", time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"99999999999999999", 24 * time.Hour, true},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestGiveUpAfterMaxAttempts(t *testing.T) {
	ctx := testCtx(t)
	cl := newCluster()
	us, eu := newNode(t, cl, "us"), newNode(t, cl, "eu")
	for _, n := range []*node{us, eu} {
		n.setRetryAfter("")
		n.fail(mode503, -1)
	}
	c, _ := newClient(t, Config{MaxAttempts: 3}, us, eu)
	r, err := c.RecordView(ctx, "v1", "alice", time.Time{})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != CodeOverloaded || !ae.Temporary() {
		t.Fatalf("err %v; want the last 503 overloaded as *APIError", err)
	}
	if r.Attempts != 3 || us.apiHits.Load() != 2 || eu.apiHits.Load() != 1 {
		t.Errorf("attempts %d (us %d, eu %d); want 3 (us, eu, us)", r.Attempts, us.apiHits.Load(), eu.apiHits.Load())
	}
	if s := c.Stats(); s.Failovers != 2 {
		t.Errorf("stats %+v; want 2 failovers", s)
	}
}

func TestCallerDeadline(t *testing.T) {
	ctx := testCtx(t)
	us := newNode(t, newCluster(), "us")
	us.fail(modeHang, -1)
	c, _ := newClient(t, Config{Timeout: 10 * time.Second, BreakerFailures: 1}, us)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.RecordView(cctx, "v1", "alice", time.Time{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v; want the caller's deadline", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("returned after %s", elapsed)
	}
	// The caller gave up: that says nothing about the endpoint.
	if st := statusOf(t, c, us); st.Failures != 0 || st.Breaker != BreakerClosed {
		t.Errorf("us status %+v; want no failure recorded", st)
	}
}

func TestRecordViewsBatch(t *testing.T) {
	ctx := testCtx(t)
	cl := newCluster()
	us, eu := newNode(t, cl, "us"), newNode(t, cl, "eu")
	c, _ := newClient(t, Config{}, us, eu)
	ts := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	r, err := c.RecordViews(ctx, []Event{
		{VideoID: "v1", UserID: "u1", Timestamp: ts},
		{VideoID: "v1", UserID: "u1"},
		{VideoID: "v 2", UserID: "u2"},
		{VideoID: "v3", UserID: "u3"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := BatchResult{
		Received: 4, Counted: 2, Rejected: 1,
		NotCounted: []NotCounted{
			{Index: 1, VideoID: "v1", Reason: ReasonDuplicate},
			{Index: 2, VideoID: "v 2", Reason: CodeInvalidVideoID, Message: `videoId "v 2" has characters outside [A-Za-z0-9_.:-]`},
		},
		Region: "us", Endpoint: us.srv.URL, Attempts: 1,
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got  %+v\nwant %+v", r, want)
	}

	// The answer of a batch is lost after us counted it: the resend to eu
	// finds every view counted already.
	us.fail(modeApplyClose, 1)
	r, err = c.RecordViews(ctx, []Event{{VideoID: "v4", UserID: "u1"}, {VideoID: "v4", UserID: "u2"}})
	if err != nil {
		t.Fatal(err)
	}
	want = BatchResult{
		Received: 2, Counted: 0,
		NotCounted: []NotCounted{{Index: 0, VideoID: "v4", Reason: ReasonDuplicate}, {Index: 1, VideoID: "v4", Reason: ReasonDuplicate}},
		Region:     "eu", Endpoint: eu.srv.URL, Attempts: 2, FailedOver: true,
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got  %+v\nwant %+v", r, want)
	}
	if n := cl.total(); n != 4 {
		t.Errorf("cluster counted %d views; want 4", n)
	}

	// An empty batch is a valid request.
	r, err = c.RecordViews(ctx, nil)
	if err != nil || r.Received != 0 || r.NotCounted == nil || len(r.NotCounted) != 0 {
		t.Errorf("empty batch: %+v, %v", r, err)
	}
}

func TestViewsDecodesRegions(t *testing.T) {
	ctx := testCtx(t)
	cl := newCluster()
	cl.record("us", "v1", "a")
	cl.record("eu", "v1", "b")
	cl.record("eu", "v1", "c")
	us, eu := newNode(t, cl, "us"), newNode(t, cl, "eu")
	us.fail(modeClose, 1)
	c, _ := newClient(t, Config{}, us, eu)

	got, err := c.Views(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got.LastUpdated == nil || !got.LastUpdated.Equal(cl.now) {
		t.Fatalf("lastUpdated %v; want %s", got.LastUpdated, cl.now)
	}
	want := Count{VideoID: "v1", ViewCount: 3, LastUpdated: got.LastUpdated, Regions: map[string]uint64{"us": 1, "eu": 2},
		Region: "eu", Endpoint: eu.srv.URL, Attempts: 2, FailedOver: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	got, err = c.Views(ctx, "never-seen")
	if err != nil {
		t.Fatal(err)
	}
	if got.VideoID != "never-seen" || got.ViewCount != 0 || got.LastUpdated != nil || got.Regions != nil || got.Region != "us" {
		t.Errorf("never seen: %+v", got)
	}
}

func TestProbeMarksUnreachable(t *testing.T) {
	ctx := testCtx(t)
	cl := newCluster()
	us, eu, ap := newNode(t, cl, "us"), newNode(t, cl, "eu"), newNode(t, cl, "ap")
	us.srv.Close()                      // refuses connections
	eu.setHealthDelay(10 * time.Second) // answers too late
	c, _ := newClient(t, Config{ProbeTimeout: 200 * time.Millisecond, ProbeSamples: 2}, us, eu, ap)
	if err := c.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{us, eu} {
		if st := statusOf(t, c, n); st.Healthy || !st.Probed || st.LastError == "" {
			t.Errorf("%s: %+v; want probed and unhealthy", n.region, st)
		}
	}
	if st := statusOf(t, c, ap); !st.Healthy || st.RTT <= 0 {
		t.Errorf("ap: %+v; want healthy with an RTT", st)
	}
	r, err := c.RecordView(ctx, "v1", "alice", time.Time{})
	if err != nil || r.Region != "ap" || r.Attempts != 1 {
		t.Fatalf("got %+v, %v; want ap (the only healthy endpoint) in one attempt", r, err)
	}

	ap.srv.Close()
	if err := c.Probe(ctx); err == nil {
		t.Error("Probe with no endpoint answering returned nil")
	}
	// Unhealthy endpoints are still tried when nothing better is left.
	eu.setHealthDelay(0)
	r, err = c.RecordView(ctx, "v1", "bob", time.Time{})
	if err != nil || r.Region != "eu" {
		t.Fatalf("got %+v, %v; want eu after us and ap refused", r, err)
	}
	if st := statusOf(t, c, eu); !st.Healthy {
		t.Errorf("eu answered a request but is still unhealthy: %+v", st)
	}
}

func TestStartProbesUntilCancelled(t *testing.T) {
	cl := newCluster()
	us := newNode(t, cl, "us")
	us.healthHits = make(chan struct{}, 100)
	c, _ := newClient(t, Config{ProbeInterval: 5 * time.Millisecond, ProbeSamples: 1}, us)

	ctx, cancel := context.WithCancel(testCtx(t))
	done := c.Start(ctx)
	deadline := time.After(10 * time.Second)
	for i := range 3 { // the first round and two periodic ones
		select {
		case <-us.healthHits:
		case <-deadline:
			t.Fatalf("only %d probes in 10s", i)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Start's goroutine still runs 10s after its context ended")
	}
	if st := statusOf(t, c, us); !st.Probed || st.RTT <= 0 {
		t.Errorf("status %+v after probing", st)
	}

	// On demand: Start does nothing.
	c2, _ := newClient(t, Config{ProbeInterval: ProbeOnDemand}, us)
	select {
	case <-c2.Start(t.Context()):
	default:
		t.Fatal("Start with ProbeOnDemand returned an open channel")
	}
}

// TestConcurrentExactlyOnce runs many callers through flaky regions while the
// prober runs: every call must succeed, and the cluster must count each
// (video, user) pair exactly once.
func TestConcurrentExactlyOnce(t *testing.T) {
	ctx := testCtx(t)
	cl := newCluster()
	us, eu, ap := newNode(t, cl, "us"), newNode(t, cl, "eu"), newNode(t, cl, "ap")
	us.setRetryAfter("")
	us.setPolicy(func(hit int64) mode {
		return [...]mode{modeApplyClose, mode503, modeOK}[hit%3]
	})
	eu.setPolicy(func(hit int64) mode {
		if hit%5 == 0 {
			return modeClose
		}
		return modeOK
	})
	c, _ := newClient(t, Config{BreakerFailures: 3, BreakerCooldown: 20 * time.Millisecond, ProbeInterval: 5 * time.Millisecond, ProbeSamples: 1, MaxAttempts: 6}, us, eu, ap)
	pctx, stop := context.WithCancel(ctx)
	done := c.Start(pctx)

	const workers, perWorker = 16, 30
	type pair struct{ video, user string }
	var mu sync.Mutex
	distinct := map[pair]bool{}
	counted := 0
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range perWorker {
				p := pair{fmt.Sprintf("v%d", i%5), fmt.Sprintf("u%d", (g*7+i)%40)}
				r, err := c.RecordView(ctx, p.video, p.user, time.Now())
				if err != nil {
					t.Errorf("RecordView(%v): %v", p, err)
					return
				}
				if i%10 == 0 {
					if _, err := c.Views(ctx, p.video); err != nil {
						t.Errorf("Views: %v", err)
					}
					_ = c.Endpoints()
				}
				mu.Lock()
				distinct[p] = true
				if r.Counted {
					counted++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("prober did not stop")
	}
	if n := cl.total(); n != len(distinct) {
		t.Errorf("cluster counted %d views; want %d (one per pair)", n, len(distinct))
	}
	if counted > len(distinct) {
		t.Errorf("%d answers counted:true for %d pairs", counted, len(distinct))
	}
	if s := c.Stats(); s.Failovers == 0 || s.Calls < workers*perWorker {
		t.Errorf("stats %+v; want failovers under faults", s)
	}
}

func TestNewValidates(t *testing.T) {
	ok := []Region{{Name: "us", Endpoints: []string{"http://127.0.0.1:1"}}}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no regions", Config{}},
		{"unnamed region", Config{Regions: []Region{{Endpoints: []string{"http://a"}}}}},
		{"empty region", Config{Regions: []Region{{Name: "us"}}}},
		{"duplicate region", Config{Regions: append(ok, ok[0])}},
		{"duplicate endpoint", Config{Regions: append(ok, Region{Name: "eu", Endpoints: []string{"http://127.0.0.1:1/"}})}},
		{"bad scheme", Config{Regions: []Region{{Name: "us", Endpoints: []string{"ftp://a"}}}}},
		{"no host", Config{Regions: []Region{{Name: "us", Endpoints: []string{"http://"}}}}},
		{"query", Config{Regions: []Region{{Name: "us", Endpoints: []string{"http://a/?x=1"}}}}},
		{"negative timeout", Config{Regions: ok, Timeout: -1}},
		{"negative attempts", Config{Regions: ok, MaxAttempts: -1}},
		{"backoff max below min", Config{Regions: ok, BackoffMin: time.Second, BackoffMax: time.Millisecond}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, tc.cfg)
		}
	}
	c, err := New(Config{Regions: ok})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.Timeout != DefaultTimeout || c.cfg.MaxAttempts != DefaultMaxAttempts || c.cfg.ProbeInterval != DefaultProbeInterval ||
		c.cfg.BreakerFailures != DefaultBreakerFailures || c.cfg.ProbeTimeout != DefaultTimeout {
		t.Errorf("defaults not applied: %+v", c.cfg)
	}
	st := c.Endpoints()
	if len(st) != 1 || st[0].Name != "http://127.0.0.1:1" || st[0].Region != "us" || !st[0].Healthy || st[0].Probed || st[0].Breaker != BreakerClosed {
		t.Errorf("initial status %+v", st)
	}
}

func TestBackoffFullJitter(t *testing.T) {
	c, err := New(Config{Regions: []Region{{Name: "us", Endpoints: []string{"http://a"}}},
		BackoffMin: 10 * time.Millisecond, BackoffMax: 80 * time.Millisecond, Rand: rand.New(rand.NewPCG(7, 7))})
	if err != nil {
		t.Fatal(err)
	}
	for n, ceil := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond, 4: 80 * time.Millisecond, 10: 80 * time.Millisecond, 100: 80 * time.Millisecond} {
		var top time.Duration
		for range 200 {
			d := c.backoff(n)
			if d < 0 || d > ceil {
				t.Fatalf("backoff(%d) = %s; want within [0, %s]", n, d, ceil)
			}
			top = max(top, d)
		}
		if top < ceil/2 {
			t.Errorf("backoff(%d): largest of 200 draws %s; want spread up to %s", n, top, ceil)
		}
	}
	// Seeded: the same seed gives the same draws.
	c2, _ := New(Config{Regions: c.cfg.Regions, BackoffMin: 10 * time.Millisecond, BackoffMax: 80 * time.Millisecond, Rand: rand.New(rand.NewPCG(7, 7))})
	c3, _ := New(Config{Regions: c.cfg.Regions, BackoffMin: 10 * time.Millisecond, BackoffMax: 80 * time.Millisecond, Rand: rand.New(rand.NewPCG(7, 7))})
	for i := range 20 {
		if a, b := c2.backoff(i+1), c3.backoff(i+1); a != b {
			t.Fatalf("draw %d: %s != %s with the same seed", i, a, b)
		}
	}
}
