package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tallyhq/tally/httpapi"
	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

// The benchmarks below run a durable node (Badger on disk, fsync per group
// commit) behind the real HTTP API in this process and drive it over loopback
// with the comparison benchmark's lean client, so that
//
//	go test -run NONE -bench HTTP -benchmem -cpuprofile cpu.out -memprofile mem.out ./cmd/tally/
//
// profiles the whole ingest and read paths, HTTP included. allocs/op counts
// every allocation of the process (the client's too, which are few) per
// request; the batch benchmark reports per view as well. cpu-µs/op is the
// process's CPU time (user and system: server, node, and the lean client)
// per request, which a machine shared with other work does not inflate as
// it does ns/op. The tests check
// that the comparison benchmark's clients and generator measure what they
// claim: every answer checked against the dedup rule, every count against
// the server's own.

// benchNode starts a durable node on a folder of tb's behind the real HTTP
// API on 127.0.0.1 and returns its address; both stop at the end of tb.
func benchNode(tb testing.TB) (addr string, node *region.Node, obs *batchObserver) {
	tb.Helper()
	return benchNodeWith(tb, func(*region.Config) {})
}

// benchNodeWith is benchNode with the node's configuration changed by set.
func benchNodeWith(tb testing.TB, set func(*region.Config)) (addr string, node *region.Node, obs *batchObserver) {
	tb.Helper()
	cfg := region.DefaultConfig()
	set(&cfg)
	cfg.DataDir = tb.TempDir()
	metrics := httpapi.NewMetrics()
	obs = &batchObserver{Metrics: metrics}
	cfg.Observer = obs
	node, err := region.Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		node.Close()
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- httpapi.New(node, httpapi.Options{Metrics: metrics}).Serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			tb.Errorf("serve: %v", err)
		}
		if err := node.Close(); err != nil {
			tb.Errorf("close node: %v", err)
		}
	})
	return ln.Addr().String(), node, obs
}

// batchObserver passes a node's measurements on to its metrics, and sums
// the group commits for the benchmarks' reports.
type batchObserver struct {
	*httpapi.Metrics
	mu                     sync.Mutex // protects the fields below
	batches, tickets, muts int
	write, sync, maxSync   time.Duration
	syncs                  []time.Duration // every batch's, for percentiles
}

func (o *batchObserver) Batch(st store.BatchStats) {
	o.Metrics.Batch(st)
	o.mu.Lock()
	o.batches++
	o.tickets += st.Tickets
	o.muts += st.Mutations
	o.write += st.Write
	o.sync += st.Sync
	o.maxSync = max(o.maxSync, st.Sync)
	o.syncs = append(o.syncs, st.Sync)
	o.mu.Unlock()
}

// summary describes the group commits so far.
func (o *batchObserver) summary() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.batches == 0 {
		return "no group commit"
	}
	n := time.Duration(o.batches)
	syncs := slices.Sorted(slices.Values(o.syncs))
	return fmt.Sprintf("%d group commits: %.1f requests and %.1f mutations each, write %s, fsync %s (p50 %s, p90 %s, p99 %s, max %s) on average",
		o.batches, float64(o.tickets)/float64(o.batches), float64(o.muts)/float64(o.batches), o.write/n, o.sync/n,
		quantile(syncs, 0.5), quantile(syncs, 0.9), quantile(syncs, 0.99), o.maxSync)
}

// benchHTTP runs b.N operations over conns connections and returns the
// process's CPU time they took (0 where the platform cannot tell).
func benchHTTP(b *testing.B, addr string, conns int, op func(c *httpCmpClient, i int) error) time.Duration {
	b.Helper()
	var next atomic.Int64
	clients := make([]*httpCmpClient, conns)
	for i := range clients {
		clients[i] = &httpCmpClient{c: newBenchConn(addr, 30*time.Second)}
	}
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, cpuOK := processCPU()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := op(c, i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	cpu1, _ := processCPU()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	// CPU per request tells more than ns/op on a machine shared with other
	// work: it is the cost, the wall time is also the wait for a core.
	if !cpuOK {
		return 0
	}
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	return cpu1 - cpu0
}

// BenchmarkHTTPViewDurable: single durable views, 64 connections, every
// view a fresh user (counted). Sub-benchmarks: spread over 10,000 videos,
// and all on one hot video.
func BenchmarkHTTPViewDurable(b *testing.B) {
	for _, mix := range []struct {
		name   string
		videos int
	}{{"spread", 10000}, {"hot", 1}} {
		b.Run(mix.name, func(b *testing.B) {
			addr, _, obs := benchNode(b)
			run := strconv.FormatInt(time.Now().UnixNano(), 36)
			benchHTTP(b, addr, 64, func(c *httpCmpClient, i int) error {
				_, err := c.view(context.Background(), "v"+strconv.Itoa(i%mix.videos), "u"+run+strconv.Itoa(i))
				return err
			})
			b.Log(obs.summary())
		})
	}
}

// BenchmarkHTTPViewCeiling: the durable ceiling of bench compare
// (newEchoCeilingOn) under BenchmarkHTTPViewDurable's load: echo, and one
// raw event record per view through the group committer to Badger on disk.
func BenchmarkHTTPViewCeiling(b *testing.B) {
	st, err := store.Open(store.DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	obs := &batchObserver{Metrics: httpapi.NewMetrics()}
	com := store.NewCommitter(st, store.CommitterConfig{Observe: obs.Batch})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: newEchoCeilingOn(com), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	b.Cleanup(func() {
		srv.Close()
		if err := com.Close(); err != nil {
			b.Errorf("close committer: %v", err)
		}
		if err := st.Close(); err != nil {
			b.Errorf("close store: %v", err)
		}
	})
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	benchHTTP(b, ln.Addr().String(), 64, func(c *httpCmpClient, i int) error {
		_, err := c.view(context.Background(), "v"+strconv.Itoa(i%10000), "u"+run+strconv.Itoa(i))
		return err
	})
	b.Log(obs.summary())
}

// BenchmarkHTTPGet: reads of 10,000 videos held in memory, 64 connections.
func BenchmarkHTTPGet(b *testing.B) {
	addr, node, _ := benchNode(b)
	views := make([]region.View, 10000)
	for i := range views {
		views[i] = region.View{Video: "v" + strconv.Itoa(i), User: "u"}
	}
	if _, err := node.RecordViews(context.Background(), views); err != nil {
		b.Fatal(err)
	}
	benchHTTP(b, addr, 64, func(c *httpCmpClient, i int) error {
		return c.get(context.Background(), "v"+strconv.Itoa(i%10000))
	})
}

// BenchmarkHTTPBatch: POST /v1/events of 1,000 fresh views each, 4
// connections; reports views/s. Sub-benchmarks: every view on one hot video,
// every view spread over 10,000 videos, and half of each.
func BenchmarkHTTPBatch(b *testing.B) {
	for _, mix := range []struct {
		name  string
		every int // every view whose index is a multiple of it goes to the hot video; 0: none
	}{{"hot", 1}, {"spread", 0}, {"half", 2}} {
		b.Run(mix.name, func(b *testing.B) { benchHTTPBatch(b, mix.every) })
	}
}

func benchHTTPBatch(b *testing.B, hotEvery int) {
	addr, _, obs := benchNode(b)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	const size = 1000
	cpu := benchHTTP(b, addr, 4, func(c *httpCmpClient, i int) error {
		pairs := make([]cmpPair, size)
		for j := range pairs {
			k := i*size + j
			pairs[j] = cmpPair{video: "v" + strconv.Itoa(k%10000), user: "u" + run + strconv.Itoa(k)}
			if hotEvery > 0 && j%hotEvery == 0 {
				pairs[j].video = "hot"
			}
		}
		_, err := c.batch(context.Background(), pairs)
		return err
	})
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "views/s")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*size), "cpu-ns/view")
	}
	b.Log(obs.summary())
}

// TestBenchConn: the lean client reads answers with a length and chunked
// ones, sends bodies whole, keeps one connection alive, and dials again
// after a transport error.
func TestBenchConn(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 10_000) // written without a length: chunked
	mux := http.NewServeMux()
	mux.HandleFunc("GET /len", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("GET /chunked", func(w http.ResponseWriter, r *http.Request) {
		for _, part := range []string{"one,", "two,", "three"} {
			io.WriteString(w, part)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) { w.Write(big) })
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "content type "+r.Header.Get("Content-Type"), http.StatusUnsupportedMediaType)
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("GET /drop", func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	})
	var conns atomic.Int32
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c := newBenchConn(ln.Addr().String(), 10*time.Second)
	defer c.close()
	for _, tc := range []struct {
		method, path string
		body         []byte
		status       int
		want         []byte
	}{
		{"GET", "/len", nil, 200, []byte("hello")},
		{"GET", "/chunked", nil, 200, []byte("one,two,three")},
		{"GET", "/big", nil, 200, big},
		{"POST", "/echo", []byte(`{"userId":"u"}`), 201, []byte(`{"userId":"u"}`)},
		{"GET", "/missing", nil, 404, []byte("404 page not found\n")},
		{"GET", "/len", nil, 200, []byte("hello")},
	} {
		status, body, err := c.do(tc.method, tc.path, tc.body)
		if err != nil || status != tc.status || !bytes.Equal(body, tc.want) {
			t.Fatalf("%s %s: %d %.60q %v; want %d %.60q", tc.method, tc.path, status, body, err, tc.status, tc.want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 6 requests; want 1, kept alive", n)
	}
	if _, _, err := c.do("GET", "/drop", nil); err == nil {
		t.Fatal("a connection closed without an answer: no error")
	}
	if status, body, err := c.do("GET", "/len", nil); err != nil || status != 200 || string(body) != "hello" {
		t.Fatalf("after a dropped connection: %d %q %v", status, body, err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections after one was dropped; want 2", n)
	}
}

// TestBenchCompareAcrossDedupWindows: resends of pairs acknowledged in an
// earlier dedup window are counted again, rightly; the generator resends
// only within the window a pair was acknowledged in, and does not judge an
// answer whose request a window ended during, so it finds no answer against
// the dedup rule while windows pass (runs across midnight UTC found
// thousands with tally's default window of a day).
func TestBenchCompareAcrossDedupWindows(t *testing.T) {
	const window = time.Second // the shortest tally takes
	addr, _, _ := benchNodeWith(t, func(c *region.Config) { c.DedupWindow = window })
	if got := dedupWindowOf([]string{"--log-level", "warn", "--dedup-window", "1s"}); got != window {
		t.Fatalf("dedupWindowOf: %v, want %v", got, window)
	}
	if got := dedupWindowOf([]string{"-dedup-window=1s"}); got != window {
		t.Fatalf("dedupWindowOf with =: %v, want %v", got, window)
	}
	tally := cmpSystem{name: "tally", pid: os.Getpid(), dedups: true,
		newClient: func() cmpClient { return &httpCmpClient{c: newBenchConn(addr, 30*time.Second)} }}
	for id, run := range []string{"view", "batch"} {
		rc := cmpRunConfig{mix: cmpMix{Name: "w", Hot: 0.5}, run: run, conns: 4, videos: 5, runID: id, repeat: 0.5, batch: 20,
			duration: 2500 * time.Millisecond, seed: 3, window: window}
		res := cmpRun(context.Background(), rc, tally)
		if res.Ops == 0 || res.Errors != 0 || res.Wrong != 0 {
			t.Fatalf("%s across windows of %v: %d ops, %d errors (%s), %d answers against the dedup rule",
				run, window, res.Ops, res.Errors, res.FirstErr, res.Wrong)
		}
	}
}

// TestBenchCompareAgainstTally: the comparison generator, on a real durable
// node, gets no error and no answer against the dedup rule, and the views it
// saw counted are exactly what the node counts; the echo ceiling answers
// both routes; tally's own p99 is read from its histogram.
func TestBenchCompareAgainstTally(t *testing.T) {
	addr, node, _ := benchNode(t)
	ceiling := &http.Server{Handler: newEchoCeiling(), ReadHeaderTimeout: 10 * time.Second}
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ceiling.Serve(eln)
	t.Cleanup(func() { ceiling.Close() })

	tally := cmpSystem{name: "tally", pid: os.Getpid(), batches: true, dedups: true, metrics: "http://" + addr + "/metrics",
		newClient: func() cmpClient { return &httpCmpClient{c: newBenchConn(addr, 30*time.Second)} }}
	echoSys := cmpSystem{name: "echo", pid: os.Getpid(),
		newClient: func() cmpClient { return &httpCmpClient{c: newBenchConn(eln.Addr().String(), 30*time.Second)} }}
	mix := cmpMix{Name: "t", Hot: 0.5}
	const videos = 20
	counted := int64(0)
	for id, run := range []string{"view", "batch", "get"} {
		rc := cmpRunConfig{mix: mix, run: run, conns: 4, videos: videos, runID: id, repeat: 0.2, batch: 50,
			duration: 300 * time.Millisecond, seed: 1}
		route, method := cmpRoute(run)
		h0, _ := scrapeRun(tally.metrics, route, method)
		res := cmpRun(context.Background(), rc, tally)
		h1, _ := scrapeRun(tally.metrics, route, method)
		if res.Ops == 0 || res.Errors != 0 || res.Wrong != 0 || !res.Checked {
			t.Fatalf("%s on tally: %d ops, %d errors (%s), %d wrong", run, res.Ops, res.Errors, res.FirstErr, res.Wrong)
		}
		if n := h1[math.Inf(1)] - h0[math.Inf(1)]; n != float64(res.Ops) {
			t.Errorf("%s on tally: its request histogram saw %v requests, the generator made %d", run, n, res.Ops)
		}
		if run != "get" && res.Counted == 0 {
			t.Errorf("%s on tally: nothing counted of %d views", run, res.Views)
		}
		counted += res.Counted
	}
	total := uint64(0)
	for _, v := range append([]string{mix.Name + "-hot"}, videoNames(mix.Name, videos)...) {
		c, err := node.Count(v, region.EventView)
		if err != nil {
			t.Fatal(err)
		}
		total += c.Value
	}
	if total != uint64(counted) {
		t.Fatalf("the node counts %d views; the generator saw %d counted", total, counted)
	}
	for _, run := range []string{"view", "get"} {
		res := cmpRun(context.Background(), cmpRunConfig{mix: mix, run: run, conns: 2, videos: videos, runID: 10,
			repeat: 0.2, duration: 100 * time.Millisecond, seed: 1}, echoSys)
		if res.Ops == 0 || res.Errors != 0 || res.Checked || res.Wrong != 0 {
			t.Fatalf("%s on the echo ceiling: %d ops, %d errors (%s), checked %v", run, res.Ops, res.Errors, res.FirstErr, res.Checked)
		}
	}
}

// TestBenchCompareAgainstRedis: the seeds' design as the benchmark drives it
// (redis-server with appendfsync always, the dedup script by EVALSHA, one
// pipeline per batch) follows the dedup rule, and its INCR counters sum to
// what the generator saw counted. Skipped without redis-server (make
// bench-compare installs it).
func TestBenchCompareAgainstRedis(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skipf("redis-server not installed (the Debian package redis-server): %v", err)
	}
	ctx := testCtxB(t)
	var log lockedBuffer
	rp, rc, _, err := startRedis(ctx, bin, t.TempDir(), 4, &log)
	if rp != nil {
		t.Cleanup(func() { rp.stop(10 * time.Second) })
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Cleanup(func() { rc.Close() })
	sha, err := rc.ScriptLoad(ctx, seedsDedupScript).Result()
	if err != nil {
		t.Fatal(err)
	}
	sys := cmpSystem{name: "redis+lua", pid: rp.cmd.Process.Pid, batches: true, dedups: true,
		newClient: func() cmpClient { return &redisCmpClient{rc: rc, sha: sha} }}
	mix := cmpMix{Name: "r", Hot: 0.5}
	const videos = 20
	counted := int64(0)
	for id, run := range []string{"view", "batch", "get"} {
		res := cmpRun(ctx, cmpRunConfig{mix: mix, run: run, conns: 4, videos: videos, runID: id, repeat: 0.2, batch: 50,
			duration: 300 * time.Millisecond, seed: 1}, sys)
		if res.Ops == 0 || res.Errors != 0 || res.Wrong != 0 {
			t.Fatalf("%s on redis: %d ops, %d errors (%s), %d wrong", run, res.Ops, res.Errors, res.FirstErr, res.Wrong)
		}
		counted += res.Counted
	}
	total := int64(0)
	for _, v := range append([]string{mix.Name + "-hot"}, videoNames(mix.Name, videos)...) {
		n, err := rc.Get(ctx, "views:"+v).Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		total += n
	}
	if total != counted {
		t.Fatalf("redis counts %d views; the generator saw %d counted", total, counted)
	}
}

// videoNames are the spread videos of a mix.
func videoNames(mix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = mix + "-v" + strconv.Itoa(i)
	}
	return out
}

// testCtxB bounds a test's waits.
func testCtxB(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestBenchParseMixes(t *testing.T) {
	got, err := parseMixes("spread=0, hot=1,half=0.5")
	if err != nil || len(got) != 3 || got[0] != (cmpMix{"spread", 0}) || got[1] != (cmpMix{"hot", 1}) || got[2] != (cmpMix{"half", 0.5}) {
		t.Fatalf("parseMixes: %v, %v", got, err)
	}
	for _, bad := range []string{"", "x", "=0.5", "x=2", "x=-0.1", "x=NaN", "x=0.5,"} {
		if _, err := parseMixes(bad); err == nil {
			t.Errorf("parseMixes(%q): no error", bad)
		}
	}
}

func TestBenchHistogramQuantile(t *testing.T) {
	before := map[float64]float64{0.001: 10, 0.005: 10, 0.01: 10, math.Inf(1): 10}
	after := map[float64]float64{0.001: 60, 0.005: 105, 0.01: 110, math.Inf(1): 110}
	// 100 new observations: 50 ≤ 1 ms, 95 ≤ 5 ms, 100 ≤ 10 ms.
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, time.Millisecond}, {0.9, 5 * time.Millisecond}, {0.99, 10 * time.Millisecond}} {
		if got := histogramQuantile(before, after, c.q); got != c.want {
			t.Errorf("q%v = %v, want %v", c.q, got, c.want)
		}
	}
	// Beyond the last finite bound, or no new observation: unknown (0).
	tail := map[float64]float64{0.001: 10, math.Inf(1): 110}
	if got := histogramQuantile(before, tail, 0.99); got != 0 {
		t.Errorf("q0.99 in the +Inf bucket = %v, want 0", got)
	}
	if got := histogramQuantile(before, before, 0.5); got != 0 {
		t.Errorf("no new observation: %v, want 0", got)
	}
}

// TestBenchProcStats: the CPU and memory readings of the benchmark see this
// process working and holding memory.
func TestBenchProcStats(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); errors.Is(err, os.ErrNotExist) {
		t.Skip("no /proc")
	}
	if rss := procRSS(os.Getpid()); rss <= 0 {
		t.Fatalf("RSS of this process: %d", rss)
	}
	cpu0 := procCPU(os.Getpid())
	deadline := time.Now().Add(20 * time.Second)
	x := 0
	for procCPU(os.Getpid()) < cpu0+20*time.Millisecond { // two clock ticks of CPU at least
		if time.Now().After(deadline) {
			t.Fatalf("CPU time did not grow past %v", cpu0)
		}
		for i := range 1_000_000 {
			x += i
		}
	}
	_ = x
	if procCPU(1<<30) != 0 || procRSS(1<<30) != 0 || procWriteBytes(1<<30) != -1 {
		t.Error("readings of a process that does not exist are not 0 (-1 for its disk writes)")
	}
	if w0 := procWriteBytes(os.Getpid()); w0 >= 0 {
		// A file next to the test, not in TMPDIR, which may be in RAM.
		f, err := os.CreateTemp(".", "procio-*")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(f.Name())
		if _, err := f.Write(bytes.Repeat([]byte("x"), 256<<10)); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		switch w1 := procWriteBytes(os.Getpid()); {
		case w1 == w0:
			t.Logf("write_bytes did not move over a written and fsynced file: this file system keeps files in RAM")
		case w1 < w0+256<<10:
			t.Errorf("write_bytes went %d -> %d over a written and fsynced 256 KiB file", w0, w1)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), bytes.Repeat([]byte("x"), 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := dirBytes(dir); n < 64<<10 {
		t.Fatalf("dirBytes = %d, want at least %d", n, 64<<10)
	}
	if !strings.HasSuffix(mib(3<<20), " MiB") {
		t.Errorf("mib = %q", mib(3<<20))
	}
}
