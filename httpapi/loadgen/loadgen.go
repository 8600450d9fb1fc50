package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tallyhq/tally/httpapi/client"
)

// Load modes accepted in Config.Mode.
const (
	// ModeView sends one view per request: POST /videos/{id}/views.
	ModeView = "view"
	// ModeGet reads counts: GET /videos/{id}/views.
	ModeGet = "get"
	// ModeBatch sends Config.BatchSize views per request: POST /v1/events.
	ModeBatch = "batch"
	// ModeMixed sends a GET with probability Config.GetRatio, else a view POST.
	ModeMixed = "mixed"
)

// Limits and defaults applied by Config.Validate and Run.
const (
	// DefaultDuration is the time cap used when Config.Duration is zero.
	DefaultDuration = 10 * time.Second
	// MaxDuration is the largest Config.Duration accepted.
	MaxDuration = 10 * time.Minute
	// DefaultTimeout is the per-request timeout used when Config.Timeout is zero.
	DefaultTimeout = 5 * time.Second
	// MaxTimeout is the largest Config.Timeout accepted.
	MaxTimeout = time.Minute
	// MaxConnections is the largest Config.Connections accepted.
	MaxConnections = 1024
	// MaxBatchSize is the largest Config.BatchSize accepted (the API's limit).
	MaxBatchSize = 10000
	// HotVideoID is the video that receives Config.HotVideoFraction of requests.
	HotVideoID = "hot"
)

const (
	// maxResponseBytes bounds how much of one response body is kept for
	// decoding; a batch reply listing 10,000 not-counted events is ~500 KB.
	maxResponseBytes = 4 << 20
	// repeatRing is how many acknowledged (video, user) pairs a worker keeps to
	// draw repeats from.
	repeatRing = 4096
	// hotVideo is the internal video index of HotVideoID.
	hotVideo = -1
)

// Config describes one load run. The zero value is not valid: set Target (or
// Regions), Mode, Connections, Videos, at least one of Duration and Count, and
// (for modes that send views) Users; see Validate.
type Config struct {
	// Target is the base URL of the node, e.g. "http://127.0.0.1:8080". A path,
	// if present, is prefixed to every request path. Ignored when Regions is set.
	Target string
	// Regions, if not empty, sends every request through an httpapi/client
	// Client over these endpoints instead of straight to Target: the client
	// measures round-trip times, sends to the nearest healthy endpoint and
	// fails over (retries with backoff, per-endpoint circuit breakers) when
	// it does not answer. A request's latency is then that of the whole
	// client call, retries included. Without Regions, requests go to Target
	// on the generator's own lean HTTP path (the single-node benchmark).
	Regions []client.Region
	// Mode is one of ModeView, ModeGet, ModeBatch or ModeMixed.
	Mode string
	// Connections is the number of closed-loop workers, each with at most one
	// request in flight; the transport keeps that many keep-alive connections.
	Connections int
	// Duration stops the run: no request is started after it. Zero means
	// DefaultDuration; more than MaxDuration is refused.
	Duration time.Duration
	// Count stops the run after exactly this many requests (0: no count limit).
	// In batch mode a request carries BatchSize views.
	Count int
	// Videos is the number of distinct video IDs, "v0".."v<Videos-1>".
	Videos int
	// HotVideoFraction in [0,1] is the fraction of requests (and of batch
	// events) that go to the single video HotVideoID.
	HotVideoFraction float64
	// Users is the number of distinct user IDs, "u0".."u<Users-1>".
	Users int
	// RepeatFraction in [0,1] is the fraction of views that resend a (video,
	// user) pair the same worker already had acknowledged, which the server
	// should answer counted:false, reason "duplicate".
	RepeatFraction float64
	// BatchSize is the number of events per POST /v1/events request (batch mode
	// only; 1..MaxBatchSize).
	BatchSize int
	// GetRatio in [0,1] is the fraction of GET requests in mixed mode.
	GetRatio float64
	// Seed seeds every worker's generator together with the worker's index.
	Seed int64
	// Timeout bounds each request, including reading its body. Zero means
	// DefaultTimeout; more than MaxTimeout is refused.
	Timeout time.Duration
}

// Validate reports whether c describes a run Run would accept.
func (c Config) Validate() error {
	_, _, err := c.normalize()
	return err
}

// normalize applies defaults, checks every field and parses the target (nil
// when Regions is set: the client checks its endpoints).
func (c Config) normalize() (Config, *url.URL, error) {
	var u *url.URL
	if len(c.Regions) > 0 {
		if _, err := client.New(client.Config{Regions: c.Regions}); err != nil {
			return c, nil, fmt.Errorf("invalid regions: %w", err)
		}
	} else {
		var err error
		if u, err = url.Parse(c.Target); err != nil {
			return c, nil, fmt.Errorf("invalid target %q: %w", c.Target, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return c, nil, fmt.Errorf("invalid target %q: want http(s)://host[:port][/path]", c.Target)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		u.RawPath = ""
	}
	switch c.Mode {
	case ModeView, ModeGet, ModeBatch, ModeMixed:
	default:
		return c, nil, fmt.Errorf("invalid mode %q: want %s, %s, %s or %s", c.Mode, ModeView, ModeGet, ModeBatch, ModeMixed)
	}
	if c.Connections < 1 || c.Connections > MaxConnections {
		return c, nil, fmt.Errorf("invalid connections %d: want 1..%d", c.Connections, MaxConnections)
	}
	if c.Count < 0 {
		return c, nil, fmt.Errorf("invalid count %d: want >= 0", c.Count)
	}
	if c.Duration < 0 || c.Duration > MaxDuration {
		return c, nil, fmt.Errorf("invalid duration %s: want 0..%s", c.Duration, MaxDuration)
	}
	if c.Duration == 0 && c.Count == 0 {
		return c, nil, errors.New("neither duration nor count set: the run would have no end")
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Timeout < 0 || c.Timeout > MaxTimeout {
		return c, nil, fmt.Errorf("invalid timeout %s: want 0..%s", c.Timeout, MaxTimeout)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Videos < 1 {
		return c, nil, fmt.Errorf("invalid videos %d: want >= 1", c.Videos)
	}
	if c.Mode != ModeGet && c.Users < 1 {
		return c, nil, fmt.Errorf("invalid users %d: want >= 1", c.Users)
	}
	if c.Mode == ModeBatch && (c.BatchSize < 1 || c.BatchSize > MaxBatchSize) {
		return c, nil, fmt.Errorf("invalid batch size %d: want 1..%d", c.BatchSize, MaxBatchSize)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"hot video fraction", c.HotVideoFraction}, {"repeat fraction", c.RepeatFraction}, {"get ratio", c.GetRatio}} {
		if !(f.v >= 0 && f.v <= 1) { // also rejects NaN
			return c, nil, fmt.Errorf("invalid %s %v: want 0..1", f.name, f.v)
		}
	}
	return c, u, nil
}

// Result is the outcome of a run. See the package documentation for the exact
// meaning of each figure.
type Result struct {
	// Mode and Connections echo the Config.
	Mode        string
	Connections int
	// Elapsed is the wall time from start until the last worker stopped.
	Elapsed time.Duration
	// Requests is the number of completed requests: Successes + Errors.
	Requests int64
	// Successes is the number of requests answered 200 with a valid body.
	Successes int64
	// Errors is the number of failed requests, split in ErrorsByKind.
	Errors int64
	// ErrorsByKind splits Errors: "http_<status>", "timeout", "transport",
	// "bad_response" (status 200 with a body that does not match the API),
	// and for client runs "no_endpoint" (every circuit breaker open).
	ErrorsByKind map[string]int64
	// ViewsSent is the number of view events in completed requests.
	ViewsSent int64
	// ViewsCounted and ViewsNotCounted come from successful response bodies.
	ViewsCounted    int64
	ViewsNotCounted int64
	// NotCountedByReason splits ViewsNotCounted by the server's reason.
	NotCountedByReason map[string]int64
	// RequestsPerSec is Requests / Elapsed.
	RequestsPerSec float64
	// ViewsPerSec is (ViewsCounted + ViewsNotCounted) / Elapsed.
	ViewsPerSec float64
	// Latency summarises the latency of every completed request.
	Latency Latency

	// ViaClient is set when the run went through httpapi/client
	// (Config.Regions); the fields below are filled only then.
	ViaClient bool
	// Attempts is the number of HTTP requests the client sent, retries
	// included; Failovers the number of retries it sent to another endpoint
	// than the attempt before (client.Stats).
	Attempts, Failovers int64
	// AnsweredBy counts successful requests by the region that answered.
	AnsweredBy map[string]int64
}

// Latency summarises request latencies. Percentiles are nearest-rank, reported
// as the upper edge of their histogram bucket clamped to Max: never below the
// true value, at most 0.78% above it. Count, Min, Mean and Max are exact.
type Latency struct {
	// Count is the number of latencies recorded (= Result.Requests).
	Count int64
	// Min and Max are the extreme latencies; Mean is the arithmetic mean.
	Min, Mean, Max time.Duration
	// P50, P90, P99 and P999 are the 50th, 90th, 99th and 99.9th percentiles.
	P50, P90, P99, P999 time.Duration
}

// Write prints r as one line of key=value pairs, followed by a line splitting
// the errors and one splitting the not-counted views when there are any.
func (r Result) Write(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "mode=%s conns=%d duration=%.2fs requests=%d ok=%d errors=%d req/s=%.1f views/s=%.1f sent=%d counted=%d notCounted=%d",
		r.Mode, r.Connections, r.Elapsed.Seconds(), r.Requests, r.Successes, r.Errors,
		r.RequestsPerSec, r.ViewsPerSec, r.ViewsSent, r.ViewsCounted, r.ViewsNotCounted)
	l := r.Latency
	fmt.Fprintf(&b, " p50=%s p90=%s p99=%s p999=%s max=%s\n",
		formatLatency(l.P50), formatLatency(l.P90), formatLatency(l.P99), formatLatency(l.P999), formatLatency(l.Max))
	writeKinds(&b, "errors:", r.ErrorsByKind)
	writeKinds(&b, "notCounted:", r.NotCountedByReason)
	if r.ViaClient {
		fmt.Fprintf(&b, "client: attempts=%d failovers=%d\n", r.Attempts, r.Failovers)
		writeKinds(&b, "answeredBy:", r.AnsweredBy)
	}
	io.WriteString(w, b.String()) //nolint:errcheck // best-effort report
}

// writeKinds appends "label k1=v1 k2=v2\n" with keys sorted, if m is non-empty.
func writeKinds(b *strings.Builder, label string, m map[string]int64) {
	if len(m) == 0 {
		return
	}
	b.WriteString(label)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(b, " %s=%d", k, m[k])
	}
	b.WriteByte('\n')
}

// formatLatency prints d in milliseconds below one second, else in seconds.
func formatLatency(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d < 10*time.Millisecond:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	case d < time.Second:
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	default:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	}
}

// Run drives the target (or, with Config.Regions, the regions through
// httpapi/client) with cfg until the count or the duration is reached, and
// returns what happened. If ctx is cancelled it stops early and returns the
// partial Result with an error wrapping ctx.Err().
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg, target, err := cfg.normalize()
	if err != nil {
		return Result{}, fmt.Errorf("loadgen: %w", err)
	}
	run := &runState{cfg: cfg, count: int64(cfg.Count)}
	if len(cfg.Regions) > 0 {
		stop, err := run.startClient(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("loadgen: %w", err)
		}
		defer stop()
	} else {
		hc, transport := newHTTPClient(cfg.Timeout, cfg.Connections, cfg.Connections)
		defer transport.CloseIdleConnections()
		run.base, run.client = target.String(), hc
	}
	// The user round-robin starts at a Seed-dependent offset so that runs
	// with different seeds send different fresh pairs.
	run.userOffset = uint64(splitmix(uint64(cfg.Seed)) % uint64(max(cfg.Users, 1)))
	workers := make([]*worker, cfg.Connections)
	for i := range workers {
		workers[i] = newWorker(run, i)
	}
	start := time.Now()
	run.deadline = start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.loop(ctx) })
	}
	wg.Wait()
	res := merge(cfg, time.Since(start), workers)
	if run.api != nil {
		st := run.api.Stats()
		res.ViaClient, res.Attempts, res.Failovers = true, int64(st.Attempts), int64(st.Failovers)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("loadgen: run interrupted after %d requests: %w", res.Requests, err)
	}
	return res, nil
}

// splitmix is the SplitMix64 finaliser, used to derive offsets from a seed.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// runState is what all workers of one run share; only tickets is written.
// Either base and client (the direct path) or api (Config.Regions) is set.
type runState struct {
	cfg        Config
	base       string
	client     *http.Client
	api        *client.Client
	deadline   time.Time
	count      int64
	tickets    atomic.Int64
	userOffset uint64
}

// pair is one (video, user) view; video hotVideo means HotVideoID.
type pair struct {
	video int
	user  int
}

// pendingEvent is a view of the request in flight, with whether it was
// acknowledged as stored (so it may be repeated later).
type pendingEvent struct {
	pair
	rejected bool
}

// stats are one worker's counters.
type stats struct {
	requests, successes, errors    int64
	errorKinds                     map[string]int64
	viewsSent, counted, notCounted int64
	reasons                        map[string]int64
	answeredBy                     map[string]int64 // client runs only
}

// Response shapes: only the fields the generator checks.
type (
	viewResponse struct {
		Counted *bool  `json:"counted"`
		Reason  string `json:"reason"`
	}
	getResponse struct {
		ViewCount *int64 `json:"viewCount"`
	}
	batchResponse struct {
		Received   *int64 `json:"received"`
		Counted    *int64 `json:"counted"`
		NotCounted []struct {
			Index  int    `json:"index"`
			Reason string `json:"reason"`
		} `json:"notCounted"`
	}
)

// worker is one closed-loop client. Everything in it is owned by its goroutine,
// except a body handed to the transport (see reqBody).
type worker struct {
	run    *runState
	cfg    *Config
	rng    *rand.Rand
	header http.Header // read-only once built; shared by all its requests

	freshNext uint64 // this worker's next slot in the user round-robin
	stride    uint64

	ring    []pair // acknowledged pairs to draw repeats from
	ringPos int
	pending []pendingEvent

	body *reqBody
	path []byte
	resp []byte
	hist histogram
	st   stats

	viewResp  viewResponse
	getResp   getResponse
	batchResp batchResponse
}

func newWorker(run *runState, index int) *worker {
	w := &worker{
		run:       run,
		cfg:       &run.cfg,
		rng:       rand.New(rand.NewPCG(uint64(run.cfg.Seed), uint64(index))),
		header:    http.Header{"Content-Type": {"application/json"}},
		freshNext: uint64(index),
		stride:    uint64(run.cfg.Connections),
		ring:      make([]pair, 0, repeatRing),
		body:      &reqBody{},
		path:      make([]byte, 0, 64+len(run.base)),
		resp:      make([]byte, 0, 512),
		hist:      newHistogram(),
		st: stats{
			errorKinds: map[string]int64{},
			reasons:    map[string]int64{},
			answeredBy: map[string]int64{},
		},
	}
	if run.cfg.Mode == ModeBatch {
		w.pending = make([]pendingEvent, 0, run.cfg.BatchSize)
		w.body.buf = make([]byte, 0, run.cfg.BatchSize*72+2)
	} else {
		w.pending = make([]pendingEvent, 0, 1)
		w.body.buf = make([]byte, 0, 64)
	}
	return w
}

// loop sends requests until the count, the deadline or ctx says stop.
func (w *worker) loop(ctx context.Context) {
	for ctx.Err() == nil && time.Now().Before(w.run.deadline) {
		if w.run.count > 0 && w.run.tickets.Add(1) > w.run.count {
			return
		}
		w.one(ctx)
	}
}

// newHTTPClient is the generator's client: direct connections (no proxy, no
// redirects, no compression), at most perHost connections to each target and
// total idle connections in all. Close the transport's idle connections when done.
func newHTTPClient(timeout time.Duration, perHost, total int) (*http.Client, *http.Transport) {
	transport := &http.Transport{
		Proxy: nil, // always talk to the target directly
		DialContext: (&net.Dialer{
			Timeout:   timeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        total,
		MaxIdleConnsPerHost: perHost,
		MaxConnsPerHost:     perHost,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is an error, not followed
		},
	}, transport
}

// one sends one request of the configured mode.
func (w *worker) one(ctx context.Context) {
	if w.run.api != nil {
		w.oneViaClient(ctx)
		return
	}
	switch w.cfg.Mode {
	case ModeView:
		w.view(ctx)
	case ModeGet:
		w.get(ctx)
	case ModeBatch:
		w.batch(ctx)
	case ModeMixed:
		if w.rng.Float64() < w.cfg.GetRatio {
			w.get(ctx)
		} else {
			w.view(ctx)
		}
	}
}

// pickVideo returns a video index, hotVideo for the hot one.
func (w *worker) pickVideo() int {
	if w.cfg.HotVideoFraction > 0 && w.rng.Float64() < w.cfg.HotVideoFraction {
		return hotVideo
	}
	return w.rng.IntN(w.cfg.Videos)
}

// pickPair returns a repeat of an acknowledged pair with probability
// RepeatFraction (if there is one), else a fresh pair.
func (w *worker) pickPair() pair {
	if w.cfg.RepeatFraction > 0 && len(w.ring) > 0 && w.rng.Float64() < w.cfg.RepeatFraction {
		return w.ring[w.rng.IntN(len(w.ring))]
	}
	user := int((w.run.userOffset + w.freshNext) % uint64(w.cfg.Users))
	w.freshNext += w.stride
	return pair{video: w.pickVideo(), user: user}
}

// remember adds an acknowledged pair to the repeat ring.
func (w *worker) remember(p pair) {
	if len(w.ring) < cap(w.ring) {
		w.ring = append(w.ring, p)
		return
	}
	w.ring[w.ringPos] = p
	w.ringPos = (w.ringPos + 1) % len(w.ring)
}

func appendVideoID(b []byte, video int) []byte {
	if video == hotVideo {
		return append(b, HotVideoID...)
	}
	return strconv.AppendInt(append(b, 'v'), int64(video), 10)
}

func appendUserID(b []byte, user int) []byte {
	return strconv.AppendInt(append(b, 'u'), int64(user), 10)
}

// videoURL returns <base>/videos/<id>/views.
func (w *worker) videoURL(video int) string {
	b := append(w.path[:0], w.run.base...)
	b = append(b, "/videos/"...)
	b = appendVideoID(b, video)
	b = append(b, "/views"...)
	w.path = b
	return string(b)
}

// freshBody returns a body whose buffer the worker may overwrite: the previous
// one if the transport has closed it, else a new one (the old one stays with
// the transport, which may still be reading it).
func (w *worker) freshBody() *reqBody {
	if !w.body.closed.Load() && w.body.used {
		w.body = &reqBody{buf: make([]byte, 0, cap(w.body.buf))}
	}
	w.body.off = 0
	w.body.used = false
	w.body.closed.Store(false)
	w.body.buf = w.body.buf[:0]
	return w.body
}

func (w *worker) view(ctx context.Context) {
	p := w.pickPair()
	body := w.freshBody()
	b := append(body.buf, `{"userId":"`...)
	b = appendUserID(b, p.user)
	b = append(b, `","timestamp":`...)
	b = strconv.AppendInt(b, time.Now().UnixMilli(), 10)
	body.buf = append(b, '}')

	resp, ok := w.do(ctx, http.MethodPost, w.videoURL(p.video), body)
	if !ok {
		return
	}
	w.st.viewsSent++
	if resp == nil {
		return
	}
	w.viewResp = viewResponse{}
	if err := json.Unmarshal(resp, &w.viewResp); err != nil || w.viewResp.Counted == nil {
		w.fail("bad_response")
		return
	}
	w.st.successes++
	if *w.viewResp.Counted {
		w.st.counted++
		w.remember(p)
		return
	}
	w.st.notCounted++
	w.st.reasons[reasonKey(w.viewResp.Reason)]++
	if w.viewResp.Reason == "duplicate" {
		w.remember(p)
	}
}

func (w *worker) get(ctx context.Context) {
	resp, ok := w.do(ctx, http.MethodGet, w.videoURL(w.pickVideo()), nil)
	if !ok || resp == nil {
		return
	}
	w.getResp = getResponse{}
	if err := json.Unmarshal(resp, &w.getResp); err != nil || w.getResp.ViewCount == nil {
		w.fail("bad_response")
		return
	}
	w.st.successes++
}

func (w *worker) batch(ctx context.Context) {
	body := w.freshBody()
	b := append(body.buf, '[')
	now := time.Now().UnixMilli()
	w.pending = w.pending[:0]
	for i := range w.cfg.BatchSize {
		p := w.pickPair()
		w.pending = append(w.pending, pendingEvent{pair: p})
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"videoId":"`...)
		b = appendVideoID(b, p.video)
		b = append(b, `","userId":"`...)
		b = appendUserID(b, p.user)
		b = append(b, `","timestamp":`...)
		b = strconv.AppendInt(b, now, 10)
		b = append(b, '}')
	}
	body.buf = append(b, ']')

	path := append(w.path[:0], w.run.base...)
	w.path = append(path, "/v1/events"...)
	resp, ok := w.do(ctx, http.MethodPost, string(w.path), body)
	if !ok {
		return
	}
	n := int64(len(w.pending))
	w.st.viewsSent += n
	if resp == nil {
		return
	}
	r := &w.batchResp
	r.Received, r.Counted, r.NotCounted = nil, nil, r.NotCounted[:0]
	if err := json.Unmarshal(resp, r); err != nil || r.Received == nil || r.Counted == nil ||
		*r.Received != n || *r.Counted+int64(len(r.NotCounted)) != n {
		w.fail("bad_response")
		return
	}
	for _, nc := range r.NotCounted {
		if nc.Index < 0 || nc.Index >= len(w.pending) {
			w.fail("bad_response")
			return
		}
	}
	w.st.successes++
	w.st.counted += *r.Counted
	w.st.notCounted += int64(len(r.NotCounted))
	for _, nc := range r.NotCounted {
		w.st.reasons[reasonKey(nc.Reason)]++
		if nc.Reason != "duplicate" {
			w.pending[nc.Index].rejected = true
		}
	}
	for _, e := range w.pending {
		if !e.rejected {
			w.remember(e.pair)
		}
	}
}

// reasonKey names a not-counted reason for the report.
func reasonKey(reason string) string {
	if reason == "" {
		return "unspecified"
	}
	return reason
}

// fail records one failed request of the given kind.
func (w *worker) fail(kind string) {
	w.st.errors++
	w.st.errorKinds[kind]++
}

// do sends one request and reads its whole response. ok is false if ctx was
// cancelled: the request is then not counted at all. Otherwise the request is
// counted and its latency recorded; resp is the body of a 200 response, or nil
// after recording an error.
func (w *worker) do(ctx context.Context, method, url string, body *reqBody) (resp []byte, ok bool) {
	var rc io.Reader
	if body != nil {
		body.used = true
		rc = body
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rc)
	if err != nil {
		// Only a malformed URL gets here; the target was validated.
		if body != nil {
			body.Close() //nolint:errcheck // never fails
		}
		w.st.requests++
		w.fail("transport")
		return nil, true
	}
	if body != nil {
		req.ContentLength = int64(len(body.buf))
		req.Header = w.header
	}

	start := time.Now()
	res, err := w.run.client.Do(req)
	status, tooLarge := 0, false
	if err == nil {
		status = res.StatusCode
		w.resp, tooLarge, err = readBody(res.Body, w.resp, maxResponseBytes)
		res.Body.Close() //nolint:errcheck // fully read or abandoned
	}
	lat := time.Since(start)

	if err != nil && ctx.Err() != nil {
		return nil, false
	}
	w.st.requests++
	w.hist.record(lat)
	switch {
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			w.fail("timeout")
		} else {
			w.fail("transport")
		}
	case status != http.StatusOK:
		w.fail("http_" + strconv.Itoa(status))
	case tooLarge:
		w.fail("bad_response")
	default:
		return w.resp, true
	}
	return nil, true
}

// readBody reads r to the end into buf[:0], keeping at most limit bytes; the
// rest of an over-long body is drained and tooLarge set.
func readBody(r io.Reader, buf []byte, limit int) (_ []byte, tooLarge bool, _ error) {
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= limit {
				if _, err := io.Copy(io.Discard, r); err != nil {
					return buf, true, fmt.Errorf("draining response: %w", err)
				}
				return buf, true, nil
			}
			buf = slices.Grow(buf, min(max(cap(buf), 512), limit-len(buf)))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, false, nil
		}
		if err != nil {
			return buf, false, fmt.Errorf("reading response: %w", err)
		}
	}
}

// reqBody is a reusable request body. The transport may keep reading a body
// after Client.Do returns (for instance when the server answers before reading
// all of it), but always closes it when done; the worker reuses the buffer only
// once closed is set, and otherwise gives the transport this body for good.
type reqBody struct {
	buf    []byte
	off    int
	used   bool // handed to the transport since the last reset (worker-owned)
	closed atomic.Bool
}

// Read implements io.Reader.
func (b *reqBody) Read(p []byte) (int, error) {
	if b.off >= len(b.buf) {
		return 0, io.EOF
	}
	n := copy(p, b.buf[b.off:])
	b.off += n
	return n, nil
}

// Close implements io.Closer: it marks the buffer free for reuse.
func (b *reqBody) Close() error {
	b.closed.Store(true)
	return nil
}

// merge sums the workers' counters and histograms.
func merge(cfg Config, elapsed time.Duration, workers []*worker) Result {
	r := Result{
		Mode:               cfg.Mode,
		Connections:        cfg.Connections,
		Elapsed:            elapsed,
		ErrorsByKind:       map[string]int64{},
		NotCountedByReason: map[string]int64{},
		AnsweredBy:         map[string]int64{},
	}
	h := newHistogram()
	for _, w := range workers {
		s := &w.st
		r.Requests += s.requests
		r.Successes += s.successes
		r.Errors += s.errors
		r.ViewsSent += s.viewsSent
		r.ViewsCounted += s.counted
		r.ViewsNotCounted += s.notCounted
		for k, v := range s.errorKinds {
			r.ErrorsByKind[k] += v
		}
		for k, v := range s.reasons {
			r.NotCountedByReason[k] += v
		}
		for k, v := range s.answeredBy {
			r.AnsweredBy[k] += v
		}
		h.merge(&w.hist)
	}
	if secs := elapsed.Seconds(); secs > 0 {
		r.RequestsPerSec = float64(r.Requests) / secs
		r.ViewsPerSec = float64(r.ViewsCounted+r.ViewsNotCounted) / secs
	}
	r.Latency = h.summary()
	return r
}

// Histogram layout: values below 2*subBuckets nanoseconds have a bucket each;
// above, every power of two [2^k, 2^(k+1)) is split into subBuckets equal
// buckets, so a bucket's width is at most 1/subBuckets of its lower edge.
const (
	subBits    = 7
	subBuckets = 1 << subBits
	numBuckets = (64-subBits)*subBuckets + subBuckets // index of 2^64-1 is 7423
)

// histogram is a log-linear latency histogram over nanoseconds.
type histogram struct {
	counts   []uint64
	n        uint64
	sum      float64 // nanoseconds; float to never overflow
	min, max uint64
}

func newHistogram() histogram {
	return histogram{counts: make([]uint64, numBuckets), min: math.MaxUint64}
}

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < 2*subBuckets {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // ≥ 1; v>>e is in [subBuckets, 2*subBuckets)
	return e*subBuckets + int(v>>e)
}

// bucketUpper returns the largest value in bucket i.
func bucketUpper(i int) uint64 {
	if i < 2*subBuckets {
		return uint64(i)
	}
	e := i/subBuckets - 1
	m := uint64(i%subBuckets + subBuckets)
	return (m+1)<<e - 1
}

func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// quantile returns the nearest-rank quantile ppm/1e6 (see Latency).
func (h *histogram) quantile(ppm uint64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max((h.n*ppm+999_999)/1_000_000, 1) // ceil, in integers
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *histogram) summary() Latency {
	if h.n == 0 {
		return Latency{}
	}
	return Latency{
		Count: int64(h.n),
		Min:   time.Duration(h.min),
		Mean:  time.Duration(h.sum / float64(h.n)),
		P50:   h.quantile(500_000),
		P90:   h.quantile(900_000),
		P99:   h.quantile(990_000),
		P999:  h.quantile(999_000),
		Max:   time.Duration(h.max),
	}
}
