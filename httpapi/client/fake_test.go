package client

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cluster is the state the fake nodes of all regions share: a view is counted
// once per (video, user), whichever region gets it first, so a resend to
// another region is a duplicate — exactly once across the fake regions.
type cluster struct {
	mu     sync.Mutex
	now    time.Time
	seen   map[[2]string]string         // (video, user) -> region that counted it
	counts map[string]map[string]uint64 // video -> region -> views
	last   map[string]time.Time
}

func newCluster() *cluster {
	return &cluster{
		now:    time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC),
		seen:   map[[2]string]string{},
		counts: map[string]map[string]uint64{},
		last:   map[string]time.Time{},
	}
}

// record counts (video, user) in region unless it was counted before.
func (cl *cluster) record(region, video, user string) (counted bool, count uint64) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	k := [2]string{video, user}
	if _, ok := cl.seen[k]; !ok {
		cl.seen[k] = region
		if cl.counts[video] == nil {
			cl.counts[video] = map[string]uint64{}
		}
		cl.counts[video][region]++
		cl.last[video] = cl.now
		counted = true
	}
	return counted, cl.countLocked(video)
}

func (cl *cluster) countLocked(video string) uint64 {
	var n uint64
	for _, v := range cl.counts[video] {
		n += v
	}
	return n
}

// total is the number of views counted in all regions.
func (cl *cluster) total() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return len(cl.seen)
}

// mode is how a fake node treats an API request (GET /healthz is separate).
type mode int

const (
	modeOK         mode = iota
	mode503             // 503 overloaded, with the node's Retry-After
	mode429             // 429, with the node's Retry-After
	modeClose           // close the connection without an answer
	modeApplyClose      // count the view, then close without an answer (a lost ack)
	modeHang            // never answer (until the client gives up)
	modeApplyHang       // count the view, then never answer
	modeGarbage         // 200 with a body that is not the API's
)

// node is one fake tally node of a region.
type node struct {
	t      *testing.T
	region string
	cl     *cluster
	srv    *httptest.Server
	stop   chan struct{}

	mu          sync.Mutex
	policy      func(hit int64) mode // nil: always modeOK
	retryAfter  string               // sent with 503 and 429
	healthDelay time.Duration
	healthHits  chan struct{} // if set, one value per /healthz (dropped when full)

	apiHits atomic.Int64
}

func newNode(t *testing.T, cl *cluster, region string) *node {
	t.Helper()
	n := &node{t: t, region: region, cl: cl, stop: make(chan struct{}), retryAfter: "1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", n.healthz)
	mux.HandleFunc("POST /videos/{id}/views", n.api(n.postView))
	mux.HandleFunc("GET /videos/{id}/views", n.api(n.getViews))
	mux.HandleFunc("POST /v1/events", n.api(n.postEvents))
	n.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(n.stop)
		n.srv.Close()
	})
	return n
}

// fail makes the next count API requests (all of them if count < 0) fail with m.
func (n *node) fail(m mode, count int64) {
	var left atomic.Int64
	left.Store(count)
	n.setPolicy(func(int64) mode {
		if count < 0 || left.Add(-1) >= 0 {
			return m
		}
		return modeOK
	})
}

func (n *node) setPolicy(p func(hit int64) mode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.policy = p
}

func (n *node) setRetryAfter(v string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.retryAfter = v
}

func (n *node) setHealthDelay(d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.healthDelay = d
}

func (n *node) healthz(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	delay, hits := n.healthDelay, n.healthHits
	n.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-n.stop:
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	if hits != nil {
		select {
		case hits <- struct{}{}:
		default:
		}
	}
}

// api wraps a route: it applies the node's failure mode around handle, which
// does the work (counting views) and returns the answer.
func (n *node) api(handle func(r *http.Request) (int, any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hit := n.apiHits.Add(1)
		n.mu.Lock()
		m, ra := modeOK, n.retryAfter
		if n.policy != nil {
			m = n.policy(hit)
		}
		n.mu.Unlock()
		switch m {
		case mode503, mode429:
			status, code := http.StatusServiceUnavailable, "overloaded"
			if m == mode429 {
				status, code = http.StatusTooManyRequests, "rate_limited"
			}
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			writeErr(w, status, code, "try again later")
			return
		case modeClose:
			n.hangUp(w)
			return
		case modeHang:
			n.hang(r)
			return
		case modeGarbage:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, "<html>hello from a captive portal</html>")
			return
		}
		if ct := r.Header.Get("Content-Type"); r.Method == http.MethodPost && ct != "application/json" {
			writeErr(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "want application/json")
			return
		}
		status, body := handle(r)
		switch m {
		case modeApplyClose:
			n.hangUp(w)
		case modeApplyHang:
			n.hang(r)
		default:
			writeJSON(w, status, body)
		}
	}
}

func (n *node) hangUp(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		n.t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

func (n *node) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-n.stop:
	}
}

type errBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	var b errBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // test server
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") == ""
}

func badInput(code, msg string) (int, any) {
	var b errBody
	b.Error.Code, b.Error.Message = code, msg
	return http.StatusBadRequest, b
}

func (n *node) postView(r *http.Request) (int, any) {
	video := r.PathValue("id")
	if !validID(video) {
		return badInput("invalid_video_id", fmt.Sprintf("videoId %q has characters outside [A-Za-z0-9_.:-]", video))
	}
	var req struct {
		UserID    *string          `json:"userId"`
		Timestamp *json.RawMessage `json:"timestamp"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return badInput("malformed_json", err.Error())
	}
	if req.UserID == nil || !validID(*req.UserID) {
		return badInput("invalid_user_id", "userId is missing or invalid")
	}
	counted, count := n.cl.record(n.region, video, *req.UserID)
	out := map[string]any{"videoId": video, "counted": counted, "viewCount": count}
	if !counted {
		out["reason"] = "duplicate"
	}
	return http.StatusOK, out
}

func (n *node) getViews(r *http.Request) (int, any) {
	video := r.PathValue("id")
	if !validID(video) {
		return badInput("invalid_video_id", "bad videoId")
	}
	n.cl.mu.Lock()
	defer n.cl.mu.Unlock()
	out := map[string]any{"videoId": video, "viewCount": n.cl.countLocked(video), "lastUpdated": nil}
	if last, ok := n.cl.last[video]; ok {
		out["lastUpdated"] = last.Format(time.RFC3339Nano)
		regions := map[string]uint64{}
		for k, v := range n.cl.counts[video] {
			regions[k] = v
		}
		out["regions"] = regions
	}
	return http.StatusOK, out
}

func (n *node) postEvents(r *http.Request) (int, any) {
	var events []struct {
		VideoID   string           `json:"videoId"`
		UserID    string           `json:"userId"`
		Timestamp *json.RawMessage `json:"timestamp"`
	}
	if err := json.NewDecoder(r.Body).Decode(&events); err != nil {
		return badInput("malformed_json", err.Error())
	}
	type nc struct {
		Index   int    `json:"index"`
		VideoID string `json:"videoId"`
		Reason  string `json:"reason"`
		Message string `json:"message,omitempty"`
	}
	out := struct {
		Received   int  `json:"received"`
		Counted    int  `json:"counted"`
		Rejected   int  `json:"rejected"`
		NotCounted []nc `json:"notCounted"`
	}{Received: len(events), NotCounted: []nc{}}
	for i, ev := range events {
		switch {
		case !validID(ev.VideoID):
			out.Rejected++
			out.NotCounted = append(out.NotCounted, nc{i, ev.VideoID, "invalid_video_id", fmt.Sprintf("videoId %q has characters outside [A-Za-z0-9_.:-]", ev.VideoID)})
		case !validID(ev.UserID):
			out.Rejected++
			out.NotCounted = append(out.NotCounted, nc{i, ev.VideoID, "invalid_user_id", "bad userId"})
		default:
			if counted, _ := n.cl.record(n.region, ev.VideoID, ev.UserID); counted {
				out.Counted++
			} else {
				out.NotCounted = append(out.NotCounted, nc{Index: i, VideoID: ev.VideoID, Reason: "duplicate"})
			}
		}
	}
	return http.StatusOK, out
}

// fakeClock is a settable clock for the breakers and Retry-After.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
