package loadgen

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestNearestRank(t *testing.T) {
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, ms(i))
	}
	for _, c := range []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{[]time.Duration{ms(7)}, 0.5, ms(7)},
		{[]time.Duration{ms(7)}, 0.99, ms(7)},
		{hundred, 0.50, ms(50)},
		{hundred, 0.90, ms(90)},
		{hundred, 0.99, ms(99)},
		{hundred, 1, ms(100)},
		{hundred, 0.001, ms(1)},
		{[]time.Duration{ms(1), ms(2), ms(3)}, 0.5, ms(2)},
		{[]time.Duration{ms(1), ms(2), ms(3), ms(4)}, 0.5, ms(2)},
	} {
		if got := NearestRank(c.in, c.q); got != c.want {
			t.Errorf("NearestRank(%d values, %v) = %v, want %v", len(c.in), c.q, got, c.want)
		}
	}
	var twoHundred []time.Duration
	for i := 1; i <= 200; i++ {
		twoHundred = append(twoHundred, ms(i))
	}
	if got := NearestRank(twoHundred, 0.99); got != ms(198) {
		t.Errorf("p99 of 1..200ms = %v, want 198ms", got)
	}
}

func TestSummarizeSortsACopy(t *testing.T) {
	in := []time.Duration{ms(30), ms(10), ms(20), ms(40)}
	orig := slices.Clone(in)
	s := Summarize(in)
	if !slices.Equal(in, orig) {
		t.Errorf("Summarize modified its input: %v", in)
	}
	want := Summary{Count: 4, Min: ms(10), Mean: ms(25), P50: ms(20), P90: ms(40), P99: ms(40), Max: ms(40)}
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if (Summarize(nil) != Summary{}) {
		t.Errorf("Summarize(nil) not zero")
	}
}

// fakeCluster serves n endpoints over one shared store; a view written at
// one endpoint becomes visible at endpoint j after delay[j] (at once at the
// writer), or never if delay[j] < 0.
type fakeCluster struct {
	mu      sync.Mutex
	written map[string]time.Time
	users   map[string]bool
	delay   []time.Duration
	refuse  bool // answer every write counted:false
	urls    []string
	gets    []int
}

func newFakeCluster(t *testing.T, delay ...time.Duration) *fakeCluster {
	fc := &fakeCluster{written: map[string]time.Time{}, users: map[string]bool{}, delay: delay, gets: make([]int, len(delay))}
	for j := range delay {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /videos/{videoId}/views", func(w http.ResponseWriter, r *http.Request) {
			var in struct {
				UserID string `json:"userId"`
			}
			if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&in) != nil || in.UserID == "" {
				writeError(w, http.StatusBadRequest, "malformed_json", "bad body")
				return
			}
			v := r.PathValue("videoId")
			fc.mu.Lock()
			defer fc.mu.Unlock()
			if fc.refuse || fc.users[in.UserID] {
				writeJSON(w, map[string]any{"videoId": v, "counted": false, "viewCount": 0, "reason": "rate_limited"})
				return
			}
			fc.users[in.UserID] = true
			fc.written[v+"@"+string(rune('0'+j))] = time.Now()
			fc.written[v] = time.Now()
			writeJSON(w, map[string]any{"videoId": v, "counted": true, "viewCount": 1})
		})
		mux.HandleFunc("GET /videos/{videoId}/views", func(w http.ResponseWriter, r *http.Request) {
			v := r.PathValue("videoId")
			fc.mu.Lock()
			defer fc.mu.Unlock()
			fc.gets[j]++
			at, ok := fc.written[v]
			_, mine := fc.written[v+"@"+string(rune('0'+j))]
			n := 0
			if ok && (mine || fc.delay[j] >= 0 && time.Since(at) >= fc.delay[j]) {
				n = 1
			}
			writeJSON(w, map[string]any{"videoId": v, "viewCount": n, "lastUpdated": nil})
		})
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		fc.urls = append(fc.urls, srv.URL)
	}
	return fc
}

func TestVisibilityMeasuresTheSlowestEndpoint(t *testing.T) {
	fc := newFakeCluster(t, 0, ms(20), ms(60))
	res, err := RunVisibility(context.Background(), VisibilityConfig{
		Endpoints: fc.urls, Probes: 6, Gap: -1, RunID: "t1", PollInterval: ms(1), ProbeTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Probes) != 6 || res.Complete != 6 || res.TimedOut != 0 || res.Failed != 0 {
		t.Fatalf("probes %d complete %d timedOut %d failed %d: %+v", len(res.Probes), res.Complete, res.TimedOut, res.Failed, res.Probes)
	}
	for _, p := range res.Probes {
		if p.Writer != p.Index%3 || p.Seen[p.Writer] != -1 {
			t.Errorf("probe %d: writer %d, seen at writer %v", p.Index, p.Writer, p.Seen[p.Writer])
		}
		if p.Video != "probe-t1-"+string(rune('0'+p.Index)) {
			t.Errorf("probe %d video %q", p.Index, p.Video)
		}
		// The slowest non-writer endpoint decides: 60ms unless endpoint 2
		// wrote it, then 20ms. The clock starts a little before the ack
		// (the fake stamps the write before answering).
		want := ms(60)
		if p.Writer == 2 {
			want = ms(20)
		}
		if p.Visible < want-ms(10) || p.Visible > want+ms(500) {
			t.Errorf("probe %d (writer %d): visible after %v, want about %v", p.Index, p.Writer, p.Visible, want)
		}
		if slices.Max(p.Seen) != p.Visible {
			t.Errorf("probe %d: visible %v is not the max of %v", p.Index, p.Visible, p.Seen)
		}
	}
	if res.Visible.Count != 6 || res.Ack.Count != 6 || res.PerEndpoint[2].Count != 4 || res.PerEndpoint[0].Count != 4 {
		t.Errorf("summaries: %+v %+v %+v", res.Visible, res.Ack, res.PerEndpoint)
	}
	var b strings.Builder
	res.Write(&b, fc.urls)
	if !strings.Contains(b.String(), "probes=6 complete=6 timedOut=0 failed=0") {
		t.Errorf("report: %s", b.String())
	}
}

func TestVisibilityTimeoutAndFailure(t *testing.T) {
	fc := newFakeCluster(t, 0, -1)
	res, err := RunVisibility(context.Background(), VisibilityConfig{
		Endpoints: fc.urls, Probes: 2, Gap: -1, RunID: "t2", ProbeTimeout: ms(100),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Probe 0 writes at endpoint 0; endpoint 1 never sees it. Probe 1
	// writes at endpoint 1, and endpoint 0 sees it at once.
	if res.Complete != 1 || res.TimedOut != 1 || res.Failed != 0 {
		t.Fatalf("complete %d timedOut %d failed %d: %+v", res.Complete, res.TimedOut, res.Failed, res.Probes)
	}
	if p := res.Probes[0]; !p.TimedOut || !strings.Contains(p.Err, "endpoint 1: not seen") {
		t.Errorf("probe 0: %+v", p)
	}
	if res.Ack.Count != 2 || res.Visible.Count != 1 {
		t.Errorf("ack %+v visible %+v", res.Ack, res.Visible)
	}

	fc.mu.Lock()
	fc.refuse = true
	fc.mu.Unlock()
	res, err = RunVisibility(context.Background(), VisibilityConfig{Endpoints: fc.urls, Probes: 3, Gap: -1, RunID: "t3"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 3 || res.Complete != 0 || !strings.Contains(res.Probes[0].Err, "not counted") {
		t.Errorf("refused writes: %+v", res)
	}
}

func TestVisibilityBounded(t *testing.T) {
	fc := newFakeCluster(t, 0, ms(5))
	start := time.Now()
	res, err := RunVisibility(context.Background(), VisibilityConfig{
		Endpoints: fc.urls, Probes: MaxProbes, MaxDuration: ms(200), RunID: "t4", Gap: ms(2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second || len(res.Probes) == 0 || len(res.Probes) >= MaxProbes {
		t.Errorf("cap: %d probes in %v", len(res.Probes), el)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(ms(100), cancel)
	res, err = RunVisibility(ctx, VisibilityConfig{Endpoints: fc.urls, Probes: MaxProbes, RunID: "t5"})
	if err == nil || len(res.Probes) >= MaxProbes {
		t.Errorf("cancel: err %v after %d probes", err, len(res.Probes))
	}
}

func TestVisibilityRejectsBadConfig(t *testing.T) {
	for _, c := range []VisibilityConfig{
		{Endpoints: []string{"http://127.0.0.1:1"}},
		{Endpoints: []string{"http://127.0.0.1:1", "ftp://x"}},
		{Endpoints: []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}, Probes: -1},
		{Endpoints: []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}, MaxDuration: time.Hour},
		{Endpoints: []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}, RunID: strings.Repeat("x", 81)},
	} {
		if _, err := RunVisibility(context.Background(), c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestParseTargets(t *testing.T) {
	got, err := ParseTargets(" http://127.0.0.1:1/ ,,http://127.0.0.1:2")
	if err != nil || !slices.Equal(got, []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}) {
		t.Errorf("ParseTargets = %q, %v", got, err)
	}
	for _, bad := range []string{"", " , ", "127.0.0.1:1", "http://x/?q=1"} {
		if _, err := ParseTargets(bad); err == nil {
			t.Errorf("ParseTargets(%q) accepted", bad)
		}
	}
}

func TestRunMultiSpreadsDistinctPairs(t *testing.T) {
	f := newFakeServer(t)
	var urls []string
	for range 3 {
		urls = append(urls, f.start().URL)
	}
	cfg := baseConfig("", ModeView)
	cfg.Count = 300
	res, err := RunMulti(context.Background(), MultiConfig{Config: cfg, Targets: urls})
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, res)
	s := f.snapshot()
	// One shared store: a pair sent to two targets would be a duplicate.
	if res.Requests != 300 || s.viewPosts != 300 || s.counted != 300 || res.ViewsCounted != 300 || res.Errors != 0 {
		t.Errorf("requests %d, server posts %d counted %d, result counted %d errors %d",
			res.Requests, s.viewPosts, s.counted, res.ViewsCounted, res.Errors)
	}
}

func TestRunMultiPacesAndStops(t *testing.T) {
	var mu sync.Mutex
	perTarget := map[string]int{}
	var urls []string
	for i := range 3 {
		f := newFakeServer(t)
		f.block = func(*http.Request) {
			mu.Lock()
			perTarget[string(rune('a'+i))]++
			mu.Unlock()
		}
		urls = append(urls, f.start().URL)
	}
	cfg := baseConfig("", ModeMixed)
	cfg.GetRatio = 0.5
	cfg.Duration = time.Second
	res, err := RunMulti(context.Background(), MultiConfig{Config: cfg, Targets: urls, Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, res)
	// About 100 requests in 1s; at most one per 10ms slot plus the first.
	if res.Requests > 102 || res.Requests < 30 || res.Errors != 0 {
		t.Errorf("paced at 100/s for 1s: %d requests, %d errors", res.Requests, res.Errors)
	}
	mu.Lock()
	if len(perTarget) != 3 {
		t.Errorf("requests per target: %v", perTarget)
	}
	mu.Unlock()

	stop := make(chan struct{})
	cfg.Duration = 30 * time.Second
	time.AfterFunc(ms(150), func() { close(stop) })
	start := time.Now()
	res, err = RunMulti(context.Background(), MultiConfig{Config: cfg, Targets: urls, Stop: stop})
	if err != nil || time.Since(start) > 5*time.Second || res.Requests == 0 {
		t.Errorf("stop: err %v, %d requests in %v", err, res.Requests, time.Since(start))
	}
	checkConsistent(t, res)

	if _, err := RunMulti(context.Background(), MultiConfig{Config: cfg}); err == nil {
		t.Error("no targets accepted")
	}
	if _, err := RunMulti(context.Background(), MultiConfig{Config: cfg, Targets: urls, Rate: -1}); err == nil {
		t.Error("negative rate accepted")
	}
}
