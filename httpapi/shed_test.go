package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallyhq/tally/region"
)

// heldRequest is an ingest request whose body the test keeps open, so the
// request stays in flight (admitted, reading its body) until released.
type heldRequest struct {
	w    *io.PipeWriter
	done chan response
}

// hold starts a POST whose body is only sent by release. contentLength < 0
// sends it chunked.
func (e *testEnv) hold(path string, contentLength int64) *heldRequest {
	e.t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, e.url+path, pr)
	if err != nil {
		e.t.Fatal(err)
	}
	req.ContentLength = contentLength
	req.Header.Set("Content-Type", "application/json")
	h := &heldRequest{w: pw, done: make(chan response, 1)}
	go func() {
		resp, err := e.client.Do(req)
		if err != nil {
			h.done <- response{status: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		h.done <- response{status: resp.StatusCode, header: resp.Header, body: b}
	}()
	return h
}

// release sends body and returns the answer.
func (h *heldRequest) release(t *testing.T, body string) response {
	t.Helper()
	go func() {
		io.WriteString(h.w, body)
		h.w.Close()
	}()
	select {
	case r := <-h.done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("held request never answered")
		return response{}
	}
}

// awaitInflight polls until the server has n ingest requests in flight.
func (e *testEnv) awaitInflight(n int64) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, _ := e.api.admission.inflight()
		if r == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d ingest requests in flight, want %d", r, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantRetryAfter(t *testing.T, r response) {
	t.Helper()
	if r.header.Get("Retry-After") == "" {
		t.Fatalf("%s without Retry-After", r)
	}
}

func TestShedOverInflightRequests(t *testing.T) {
	e := newEnvWith(t, nil, func(o *Options) { o.MaxInflight = 2 })
	body := `{"userId":"held"}`
	a := e.hold("/videos/s1/views", int64(len(body)))
	b := e.hold("/videos/s2/views", int64(len(body)))
	e.awaitInflight(2)

	before := e.sideEffects()
	r := e.postView("s3", `{"userId":"u"}`)
	wantError(t, r, http.StatusServiceUnavailable, CodeOverloaded)
	wantRetryAfter(t, r)
	r = e.postEvents(strings.NewReader(`[{"videoId":"s3","userId":"u"}]`))
	wantError(t, r, http.StatusServiceUnavailable, CodeOverloaded)
	if after := e.sideEffects(); after != before {
		t.Fatalf("a shed request changed the node: %+v -> %+v", before, after)
	}
	// Reads are not shed.
	if c := e.count("s3"); c != 0 {
		t.Fatalf("count %d", c)
	}

	for _, h := range []*heldRequest{a, b} {
		if r := h.release(t, body); r.status != http.StatusOK {
			t.Fatalf("held request: %s", r)
		}
	}
	e.awaitInflight(0)
	if got := e.view("s3", "u"); !got.Counted {
		t.Fatalf("after the load went: %+v", got)
	}
	if text := scrape(t, e); !strings.Contains(text, `tally_http_shed_total{reason="inflight_requests"} 2`) {
		t.Errorf("/metrics does not count the 2 shed requests")
	}
}

func TestShedOverInflightBytes(t *testing.T) {
	// The budget holds one batch of unknown length (charged the most a
	// batch may take) and nothing more.
	e := newEnvWith(t, nil, func(o *Options) { o.MaxInflightBytes = batchCost(&http.Request{ContentLength: -1}) })
	big := e.hold("/v1/events", -1)
	e.awaitInflight(1)
	r := e.postView("b1", `{"userId":"u"}`)
	wantError(t, r, http.StatusServiceUnavailable, CodeOverloaded)
	wantRetryAfter(t, r)
	if r := big.release(t, `[{"videoId":"b1","userId":"u0"}]`); r.status != http.StatusOK {
		t.Fatalf("held batch: %s", r)
	}
	e.awaitInflight(0)
	if got := e.view("b1", "u1"); !got.Counted || got.ViewCount != 2 {
		t.Fatalf("after the batch: %+v", got)
	}
	if text := scrape(t, e); !strings.Contains(text, `tally_http_shed_total{reason="inflight_bytes"} 1`) {
		t.Errorf("/metrics does not count the shed request")
	}
}

func TestTooManyRequestsPerClient(t *testing.T) {
	e := newEnvWith(t, nil, func(o *Options) { o.MaxInflightPerClient = 1 })
	body := `{"userId":"held"}`
	h := e.hold("/videos/c1/views", int64(len(body)))
	e.awaitInflight(1)
	r := e.postView("c1", `{"userId":"u"}`)
	wantError(t, r, http.StatusTooManyRequests, CodeTooManyRequests)
	wantRetryAfter(t, r)
	if r := h.release(t, body); r.status != http.StatusOK {
		t.Fatalf("held request: %s", r)
	}
	e.awaitInflight(0)
	if got := e.view("c1", "u"); !got.Counted {
		t.Fatalf("after the first request ended: %+v", got)
	}
}

func TestShedWhenCommitQueueFull(t *testing.T) {
	// A commit queue of one mutation cannot take a view (two mutations).
	e := newEnv(t, func(c *region.Config) { c.MaxPending = 1 })
	r := e.postView("q1", `{"userId":"u"}`)
	wantError(t, r, http.StatusServiceUnavailable, CodeOverloaded)
	wantRetryAfter(t, r)
	// (The video's counter may be cached, at 0: that is a read, not a count.)
	if after := e.sideEffects(); after.ingested != 0 || after.claims != 0 || e.count("q1") != 0 {
		t.Fatalf("a shed view changed the node: %+v", after)
	}
	if text := scrape(t, e); !strings.Contains(text, `tally_http_shed_total{reason="commit_queue"} 1`) {
		t.Errorf("/metrics does not count the shed view")
	}
}

func TestBatchCost(t *testing.T) {
	for _, tc := range []struct {
		length int64
		want   int64
	}{
		{100, decodeFactor*100 + requestOverhead},
		{1 << 20, 1<<20 + MaxBatchEvents*batchEventCost + requestOverhead},
		{-1, MaxBatchBody + MaxBatchEvents*batchEventCost + requestOverhead},
		{MaxBatchBody + 1, MaxBatchBody + MaxBatchEvents*batchEventCost + requestOverhead},
	} {
		if got := batchCost(&http.Request{ContentLength: tc.length}); got != tc.want {
			t.Errorf("batchCost(%d) = %d, want %d", tc.length, got, tc.want)
		}
	}
}

// serveReal runs the API through Serve on a loopback listener, with its
// timeouts, and returns its address.
func serveReal(t *testing.T, o Options) (string, *testEnv) {
	t.Helper()
	e := newEnv(t, nil)
	o.Metrics = NewMetrics()
	srv := New(e.node, o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), e
}

// awaitClosed waits until the server closes c, and says how long it took.
func awaitClosed(t *testing.T, c net.Conn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(within))
	_, err := io.Copy(io.Discard, c) // returns once the server closes
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
	return time.Since(start)
}

// TestSlowlorisTimesOut opens connections that send headers or a body a
// byte at a time, and idle ones, more than the connection limit allows:
// each is cut off by its timeout, and an ordinary client is served
// throughout (once a slot frees).
func TestSlowlorisTimesOut(t *testing.T) {
	const limit = 8
	addr, e := serveReal(t, Options{
		MaxConns: limit, ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: time.Second, IdleTimeout: time.Second,
	})
	var wg sync.WaitGroup
	type result struct {
		kind string
		took time.Duration
	}
	results := make(chan result, 3*limit)
	drip := func(c net.Conn, s string) {
		for i := 0; i < len(s); i++ {
			if _, err := c.Write([]byte{s[i]}); err != nil {
				return // closed by the server: the point
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	slow := []struct {
		kind string
		send func(c net.Conn)
	}{
		{"slow headers", func(c net.Conn) {
			drip(c, "POST /videos/slow/views HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: "+strings.Repeat("a", 200)+"\r\n\r\n")
		}},
		{"slow body", func(c net.Conn) {
			body := `{"userId":"slowloris"}` + strings.Repeat(" ", 200)
			fmt.Fprintf(c, "POST /videos/slow/views HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
			drip(c, body)
		}},
		{"silent", func(net.Conn) {}},
	}
	for i := range 2 * limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := slow[i%len(slow)]
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer c.Close()
			go s.send(c)
			results <- result{s.kind, awaitClosed(t, c, 30*time.Second)}
		}()
	}
	// An ordinary client gets its answer while the slow ones come and go.
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://"+addr+"/videos/fast/views", "application/json", strings.NewReader(`{"userId":"u"}`))
	if err != nil {
		t.Fatalf("ordinary client: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ordinary client: %s", resp.Status)
	}
	wg.Wait()
	close(results)
	worst := map[string]time.Duration{}
	for r := range results {
		worst[r.kind] = max(worst[r.kind], r.took)
	}
	t.Logf("longest a slow connection stayed open, by kind: %v", worst)
	if c := e.count("slow"); c != 0 {
		t.Fatalf("a slowloris view was counted: %d", c)
	}
}

// TestBoundedHeaders: headers over the limit are refused, not buffered.
func TestBoundedHeaders(t *testing.T) {
	addr, _ := serveReal(t, Options{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 2*maxHeaderBytes))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized headers: %s", resp.Status)
	}
}
