package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOverload offers a real node more ingest than it can take, for a
// bounded time: hundreds of clients sending batches and single views
// without pause, far more at once than its in-flight bounds.
//
// A warm-up first has every client's users counted once (each client
// resends the same users), so the dedup state has its final size before
// the overload starts; memory that grows during the overload would then be
// the overload's doing. The node must shed (503 or 429, with Retry-After,
// nothing counted), stay up and answer reads, keep what its requests hold
// within its in-flight budget (sampled from its metrics) and its memory
// bounded (peak RSS under overloadMaxRSS), and keep every view it acknowledged:
// after a SIGKILL and a restart, each video counts at least the users
// acknowledged as counted and at most those plus the users of unanswered
// requests; the audit of its raw event log finds no mismatch.
func TestOverload(t *testing.T) {
	now := time.Now().UTC()
	if next := now.Truncate(24 * time.Hour).Add(24 * time.Hour); next.Sub(now) < 10*time.Minute {
		t.Skipf("less than 10 minutes to UTC midnight (%s); the test would straddle a dedup window", now.Format(time.TimeOnly))
	}
	const (
		batchWorkers = 192
		viewWorkers  = 64
		batchSize    = 1000 // users of a batch client, all in each of its batches
		viewUsers    = 50   // users of a single-view client, cycled
		inflightMax  = 64 << 20
		// overloadMaxRSS bounds the node's peak resident memory: what the
		// in-flight budget lets requests hold, with the garbage
		// collector's headroom (GOGC=100 lets the heap reach twice what is
		// live), the dedup state, and Badger's write path under a
		// sustained write rate (memtable flushes and compactions build
		// tables in memory: 100-300 MiB in heap profiles, growing with the
		// rate the node manages to write). Runs peak at 500-770 MiB.
		overloadMaxRSS = 1 << 30
	)
	duration, maxRequests, warmup := 15*time.Second, 5000, 90*time.Second
	if testing.Short() {
		duration = 6 * time.Second
	}
	bin := buildTally(t)
	dir := filepath.Join(t.TempDir(), "data")
	// Bounds well under the offered concurrency (256 clients; admitted at
	// once they would hold several hundred MiB), so the node must shed;
	// --max-inflight-per-client is high since every client is 127.0.0.1.
	flags := []string{"--max-inflight", "16", "--max-inflight-bytes", strconv.Itoa(inflightMax),
		"--max-inflight-per-client", "1000", "--max-pending", "100000"}
	p := startTally(t, bin, dir, flags...)
	pid := p.cmd.Process.Pid

	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512},
	}
	defer client.CloseIdleConnections()
	workers := make([]*overloadClient, batchWorkers+viewWorkers)
	for w := range workers {
		oc := &overloadClient{url: p.url, client: client, video: fmt.Sprintf("ov-%03d", w),
			counted: map[int]bool{}, unanswered: map[int]bool{}}
		if w < batchWorkers {
			oc.batch = make([]int, batchSize)
			for j := range oc.batch {
				oc.batch[j] = j
			}
		} else {
			oc.users = viewUsers
		}
		workers[w] = oc
	}
	run := func(phase func(oc *overloadClient)) {
		var wg sync.WaitGroup
		for _, oc := range workers {
			wg.Add(1)
			go func() { defer wg.Done(); phase(oc) }()
		}
		wg.Wait()
	}

	// Warm-up: every user counted once (a shed request is sent again).
	warmEnd := time.Now().Add(warmup)
	run(func(oc *overloadClient) {
		for oc.sent < oc.warmRequests() && time.Now().Before(warmEnd) {
			if oc.send() == http.StatusOK {
				oc.sent++
			}
		}
	})
	for _, oc := range workers {
		if oc.sent < oc.warmRequests() {
			t.Fatalf("warm-up: %s got %d of %d requests through in %v", oc.video, oc.sent, oc.warmRequests(), warmup)
		}
	}
	_, warmAnon, _, err := procMemory(pid)
	if err != nil {
		t.Fatalf("read the node's memory: %v", err)
	}

	// The overload: every client sends without pause, for a bounded time
	// and number of requests; the node's memory is sampled meanwhile.
	for _, oc := range workers {
		oc.accepted, oc.shed, oc.noRetryAfter, oc.requests = 0, 0, 0, 0
	}
	var peakAnon, peakInflight atomic.Int64
	stopSampling, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, anon, _, err := procMemory(pid); err == nil && anon > peakAnon.Load() {
				peakAnon.Store(anon)
			}
			if text, err := getText(client, p.url+"/metrics"); err == nil {
				if v, ok := metricValue(text, "tally_http_ingest_inflight_bytes"); ok && int64(v) > peakInflight.Load() {
					peakInflight.Store(int64(v))
				}
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()
	deadline := time.Now().Add(duration)
	run(func(oc *overloadClient) {
		for i := 0; i < maxRequests && time.Now().Before(deadline); i++ {
			oc.send()
		}
	})
	close(stopSampling)
	<-sampled
	_, _, peak, err := procMemory(pid)
	if err != nil {
		t.Fatalf("read the node's memory: %v", err)
	}

	var requests, accepted, shed, noRetryAfter, counted, unanswered int
	for _, oc := range workers {
		requests, accepted, shed, noRetryAfter = requests+oc.requests, accepted+oc.accepted, shed+oc.shed, noRetryAfter+oc.noRetryAfter
		counted, unanswered = counted+len(oc.counted), unanswered+len(oc.unanswered)
		for status, body := range oc.other {
			t.Errorf("%s: unexpected answer %d: %.200s", oc.video, status, body)
		}
	}
	t.Logf("overload: %d requests in %v from %d clients: %d accepted, %d shed (503/429); %d distinct views counted in all, %d users in unanswered requests",
		requests, duration, len(workers), accepted, shed, counted, unanswered)
	t.Logf("node memory: peak RSS %.1f MiB; anonymous RSS %.1f MiB after the warm-up, peak %.1f MiB during the overload; in-flight requests held at most %.1f MiB (budget %d MiB)",
		float64(peak)/(1<<20), float64(warmAnon)/(1<<20), float64(peakAnon.Load())/(1<<20), float64(peakInflight.Load())/(1<<20), inflightMax>>20)
	switch {
	case shed == 0:
		t.Fatalf("nothing was shed: the offered load did not exceed the node's bounds")
	case accepted == 0:
		t.Fatalf("nothing was accepted under overload")
	case noRetryAfter > 0:
		t.Errorf("%d shed answers without Retry-After", noRetryAfter)
	case peakInflight.Load() == 0 || peakInflight.Load() > inflightMax:
		t.Errorf("in-flight requests held at most %d bytes by the node's metrics; want some, within the %d budget", peakInflight.Load(), inflightMax)
	case peak > overloadMaxRSS:
		t.Errorf("peak RSS %d MiB, over the %d MiB bound", peak>>20, overloadMaxRSS>>20)
	}
	// Still up: it answers health checks and reads.
	for _, path := range []string{"/healthz", "/readyz"} {
		if err := get200(client, p.url+path); err != nil {
			t.Fatalf("after the overload: %v", err)
		}
	}

	// Every acknowledged view is durable: kill -9, restart, count.
	p.kill()
	if f := os.Getenv("TALLY_OVERLOAD_LOG"); f != "" {
		// The node's log of the overload (run with GODEBUG=gctrace=1 to see its heap).
		if err := os.WriteFile(f, []byte(p.output.String()), 0o644); err != nil {
			t.Errorf("write the node's log: %v", err)
		}
	}
	p = startTally(t, bin, dir, flags...)
	for _, oc := range workers {
		upper := len(oc.counted)
		for u := range oc.unanswered {
			if !oc.counted[u] {
				upper++
			}
		}
		if c := int(p.count(oc.video)); c < len(oc.counted) || c > upper {
			t.Errorf("%s: %d views after the restart; %d users were acknowledged as counted, %d at most may count", oc.video, c, len(oc.counted), upper)
		}
	}
	requireCleanAudit(t, []string{p.url}, crashAdminToken, 1)
	p.terminate()
}

// overloadClient is one client of TestOverload: it sends its batch of users
// (batch clients), or its users' views one at a time (view clients), to one
// video, and keeps what the node answered. It is used by one goroutine.
type overloadClient struct {
	url    string
	client *http.Client
	video  string
	batch  []int // the users of each batch; nil for a view client
	users  int   // a view client's users, cycled
	next   int   // a view client's next user
	sent   int   // warm-up requests accepted

	counted    map[int]bool // users acknowledged as counted
	unanswered map[int]bool // users of requests without an answer
	other      map[int]string

	requests, accepted, shed, noRetryAfter int
}

// warmRequests is how many accepted requests count every user once.
func (oc *overloadClient) warmRequests() int {
	if oc.batch != nil {
		return 1
	}
	return oc.users
}

// send sends one request and returns its status (0 if unanswered).
func (oc *overloadClient) send() int {
	users := oc.batch
	var req *http.Request
	if users != nil {
		var b bytes.Buffer
		b.WriteByte('[')
		for j, u := range users {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"videoId":%q,"userId":"u-%d"}`, oc.video, u)
		}
		b.WriteByte(']')
		req, _ = http.NewRequest(http.MethodPost, oc.url+"/v1/events", &b)
	} else {
		users = []int{oc.next % oc.users}
		oc.next++
		req, _ = http.NewRequest(http.MethodPost, oc.url+"/videos/"+oc.video+"/views", strings.NewReader(fmt.Sprintf(`{"userId":"u-%d"}`, users[0])))
	}
	req.Header.Set("Content-Type", "application/json")
	oc.requests++
	lost := func() int {
		for _, u := range users {
			oc.unanswered[u] = true
		}
		return 0
	}
	resp, err := oc.client.Do(req)
	if err != nil {
		return lost()
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return lost()
	case resp.StatusCode == http.StatusOK:
		var a struct {
			Counted    json.RawMessage `json:"counted"`
			NotCounted []struct {
				Index int `json:"index"`
			} `json:"notCounted"`
		}
		if err := json.Unmarshal(body, &a); err != nil {
			oc.unexpected(resp.StatusCode, body)
			return lost()
		}
		oc.accepted++
		if oc.batch == nil {
			if string(a.Counted) == "true" {
				oc.counted[users[0]] = true
			}
			return resp.StatusCode
		}
		not := map[int]bool{}
		for _, nc := range a.NotCounted {
			not[nc.Index] = true
		}
		for j, u := range users {
			if !not[j] {
				oc.counted[u] = true
			}
		}
	case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests:
		oc.shed++
		if resp.Header.Get("Retry-After") == "" {
			oc.noRetryAfter++
		}
	default:
		oc.unexpected(resp.StatusCode, body)
		return lost()
	}
	return resp.StatusCode
}

func (oc *overloadClient) unexpected(status int, body []byte) {
	if oc.other == nil {
		oc.other = map[int]string{}
	}
	oc.other[status] = string(body)
}

// procMemory reads a process's resident set size, the anonymous part of
// it, and its peak (VmRSS, RssAnon and VmHWM in /proc/PID/status), in bytes.
func procMemory(pid int) (rss, anon, peak int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read process status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &rss
		case "RssAnon":
			dst = &anon
		case "VmHWM":
			dst = &peak
		default:
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, 0, fmt.Errorf("%s: %q", name, val)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, fmt.Errorf("read process status: %w", err)
	}
	if peak == 0 {
		return 0, 0, 0, fmt.Errorf("no VmHWM in /proc/%d/status (not Linux?)", pid)
	}
	return rss, anon, peak, nil
}
