package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tallyhq/tally/httpapi/client"
)

// The drill's load: writers that send views through httpapi/client, each a
// fresh (video, user) pair so that the count every video must reach is
// known exactly, plus deliberate repeats of acknowledged pairs, which must
// never count. A fresh pair whose call failed is sent again (by the same
// worker, then by settleViews) until it is acknowledged, so every pair
// ends up counted exactly once if the system is right.

// viewKey is one (video, user) pair.
type viewKey struct{ video, user string }

// writerEvents receives what a writer did with each pair. Implementations
// are safe for concurrent use.
type writerEvents interface {
	// sent is called before a fresh pair is sent for the first time.
	sent(k viewKey)
	// acked is called when a call for a fresh pair was answered counted, or
	// duplicate (an earlier, unanswered attempt counted it).
	acked(k viewKey, region string, at time.Time)
	// repeated is called when a repeat of an acknowledged pair was answered;
	// counted means it was counted again.
	repeated(k viewKey, region string, counted bool)
}

// writerStats are a writer's counters. It is safe for concurrent use.
type writerStats struct {
	mu             sync.Mutex // protects everything below
	calls, ok      int64      // client calls, and those answered
	resends        int64      // calls re-sending a fresh pair whose earlier call failed
	repeats        int64      // calls re-sending an acknowledged pair
	repeatsCounted int64      // repeats answered counted:true
	errors         map[string]int64
	answeredBy     map[string]int64
}

func newWriterStats() *writerStats {
	return &writerStats{errors: map[string]int64{}, answeredBy: map[string]int64{}}
}

// call records one client call's outcome.
func (s *writerStats) call(region string, err error, resend, repeat, repeatCounted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if resend {
		s.resends++
	}
	if err != nil {
		s.errors[drillErrorKind(err)]++
		return
	}
	s.ok++
	s.answeredBy[region]++
	if repeat {
		s.repeats++
		if repeatCounted {
			s.repeatsCounted++
		}
	}
}

// add adds o's counters to s (o and s must differ).
func (s *writerStats) add(o *writerStats) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls += o.calls
	s.ok += o.ok
	s.resends += o.resends
	s.repeats += o.repeats
	s.repeatsCounted += o.repeatsCounted
	for k, v := range o.errors {
		s.errors[k] += v
	}
	for k, v := range o.answeredBy {
		s.answeredBy[k] += v
	}
}

// drillErrorKind names a client error for the report.
func drillErrorKind(err error) string {
	var ae *client.APIError
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		if ae.Code != "" {
			return fmt.Sprintf("http_%d_%s", ae.Status, ae.Code)
		}
		return "http_" + strconv.Itoa(ae.Status)
	case errors.Is(err, client.ErrNoEndpoint):
		return "no_endpoint"
	case errors.Is(err, client.ErrBadResponse):
		return "bad_response"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "transport"
}

// writerConfig describes a writer.
type writerConfig struct {
	API    *client.Client
	Events writerEvents
	Stats  *writerStats
	Videos []string
	// Prefix starts every user ID, which is Prefix-<worker>-<seq>.
	Prefix string
	Conns  int
	// Rate caps the calls started per second over all workers.
	Rate float64
	// Repeat is the fraction of calls that repeat an acknowledged pair.
	Repeat float64
	// MaxCalls and Duration bound the writer: it starts no call after
	// either is reached.
	MaxCalls int64
	Duration time.Duration
	Seed     uint64
}

// viewWriter is a running writer; Stop ends it.
type viewWriter struct {
	cfg      writerConfig
	limiter  *rate.Limiter
	deadline time.Time
	tickets  atomic.Int64
	acks     atomic.Int64
	current  atomic.Pointer[string] // region of the latest answer
	// pauseCtx ends on Stop; it cuts the pauses short, never a call: a call
	// in flight is always finished, so that its outcome is known.
	pauseCtx context.Context
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

// startWriter starts cfg.Conns workers. Calls run under ctx.
func startWriter(ctx context.Context, cfg writerConfig) *viewWriter {
	w := &viewWriter{
		cfg:      cfg,
		limiter:  rate.NewLimiter(rate.Limit(cfg.Rate), max(cfg.Conns, 1)),
		deadline: time.Now().Add(cfg.Duration),
	}
	w.pauseCtx, w.stop = context.WithCancel(ctx)
	for i := range cfg.Conns {
		w.wg.Go(func() { w.worker(ctx, i) })
	}
	return w
}

// Acked is the number of fresh pairs this writer got acknowledged.
func (w *viewWriter) Acked() int64 { return w.acks.Load() }

// Current is the region that answered the writer's latest call: where the
// client sends now ("" before any answer).
func (w *viewWriter) Current() string {
	if r := w.current.Load(); r != nil {
		return *r
	}
	return ""
}

// Stop starts no new call, waits for the calls in flight and returns.
func (w *viewWriter) Stop() {
	w.stop()
	w.wg.Wait()
}

func (w *viewWriter) worker(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(i)))
	var retry []viewKey // fresh pairs whose call failed, oldest first
	var acked []viewKey // acknowledged pairs to repeat
	const ackedCap = 1024
	seq := 0
	for w.pauseCtx.Err() == nil && time.Now().Before(w.deadline) && w.tickets.Add(1) <= w.cfg.MaxCalls {
		if err := w.limiter.Wait(w.pauseCtx); err != nil {
			return
		}
		var k viewKey
		resend, repeat := false, false
		switch {
		case len(retry) > 0:
			k, retry, resend = retry[0], retry[1:], true
		case len(acked) > 0 && rng.Float64() < w.cfg.Repeat:
			k, repeat = acked[rng.IntN(len(acked))], true
		default:
			seq++
			k = viewKey{w.cfg.Videos[rng.IntN(len(w.cfg.Videos))], fmt.Sprintf("%s-%d-%d", w.cfg.Prefix, i, seq)}
			w.cfg.Events.sent(k)
		}
		res, err := w.cfg.API.RecordView(ctx, k.video, k.user, time.Time{})
		if err != nil && ctx.Err() != nil {
			return // interrupted: the pair stays unacknowledged in the ledger
		}
		w.cfg.Stats.call(res.Region, err, resend, repeat, res.Counted)
		if err == nil {
			w.current.Store(&res.Region)
		}
		switch {
		case repeat:
			if err == nil {
				w.cfg.Events.repeated(k, res.Region, res.Counted)
			}
		case err == nil && (res.Counted || res.Reason == client.ReasonDuplicate):
			w.acks.Add(1)
			w.cfg.Events.acked(k, res.Region, time.Now())
			if len(acked) < ackedCap {
				acked = append(acked, k)
			} else {
				acked[rng.IntN(ackedCap)] = k
			}
		default: // failed, or not counted for another reason (rate limited)
			retry = append(retry, k)
		}
		if err != nil {
			// Every endpoint may be down: do not spin on instant failures.
			pause(w.pauseCtx, time.Duration(50+rng.IntN(150))*time.Millisecond)
		}
	}
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// settleViews sends every pair in keys again until it is acknowledged, with
// conns workers, until deadline; it returns the pairs still unacknowledged.
// Re-sending is idempotent: a pair already counted comes back duplicate.
func settleViews(ctx context.Context, api *client.Client, keys []viewKey, ev writerEvents, st *writerStats, conns int, deadline time.Time) []viewKey {
	var mu sync.Mutex
	var left []viewKey
	next := make(chan viewKey)
	var wg sync.WaitGroup
	for range max(conns, 1) {
		wg.Go(func() {
			for k := range next {
				acked := false
				for attempt := 0; !acked && attempt < 100 && ctx.Err() == nil && time.Now().Before(deadline); attempt++ {
					res, err := api.RecordView(ctx, k.video, k.user, time.Time{})
					if err != nil && ctx.Err() != nil {
						break
					}
					st.call(res.Region, err, true, false, false)
					if err == nil && (res.Counted || res.Reason == client.ReasonDuplicate) {
						ev.acked(k, res.Region, time.Now())
						acked = true
						break
					}
					pause(ctx, 200*time.Millisecond)
				}
				if !acked {
					mu.Lock()
					left = append(left, k)
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range keys {
		next <- k
	}
	close(next)
	wg.Wait()
	return left
}

// ---------------------------------------------------------------------------
// tally drill writer: the writer that runs inside a cut region's namespace
// ---------------------------------------------------------------------------

// The drill starts `tally drill writer` inside a region's network namespace
// (ip netns exec), so that views keep arriving in that region while it is
// cut off. It reports on stdout, one line per event:
//
//	sent VIDEO USER                     before a fresh pair is sent
//	ack VIDEO USER REGION UNIXNANO      a fresh pair acknowledged
//	repeat VIDEO USER REGION 0|1        a repeat answered (1: counted again)
//	left VIDEO USER                     a fresh pair it could not get acknowledged
//	stats calls=N ok=N ... errors=K:N,... answeredBy=R:N,...   once, last
//
// It stops starting fresh views when its stdin closes (or a bound is
// reached), then re-sends its unacknowledged pairs for at most --settle.

// lineEvents writes writer events as protocol lines and keeps the set of
// pairs sent but not acknowledged.
type lineEvents struct {
	mu      sync.Mutex // protects w and open
	w       io.Writer
	open    map[viewKey]bool
	lastErr error
}

func (l *lineEvents) printf(format string, args ...any) {
	if _, err := fmt.Fprintf(l.w, format, args...); err != nil && l.lastErr == nil {
		l.lastErr = err
	}
}

func (l *lineEvents) sent(k viewKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open[k] = true
	l.printf("sent %s %s\n", k.video, k.user)
}

func (l *lineEvents) acked(k viewKey, region string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.open, k)
	l.printf("ack %s %s %s %d\n", k.video, k.user, region, at.UnixNano())
}

func (l *lineEvents) repeated(k viewKey, region string, counted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := 0
	if counted {
		c = 1
	}
	l.printf("repeat %s %s %s %d\n", k.video, k.user, region, c)
}

func (l *lineEvents) unacked() []viewKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := slices.Collect(maps.Keys(l.open))
	slices.SortFunc(keys, func(a, b viewKey) int { return strings.Compare(a.video+" "+a.user, b.video+" "+b.user) })
	return keys
}

// runDrillWriter is `tally drill writer` (see above); stdin's end stops it.
func runDrillWriter(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally drill writer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var regions regionsFlag
	fs.Var(&regions, "region", "`name=URL[,URL...]` of a region to write to (repeatable)")
	videos := fs.String("videos", "", "comma-separated video IDs")
	prefix := fs.String("prefix", "w", "user ID prefix (unique per writer)")
	conns := fs.Int("conns", 2, "concurrent calls")
	rateLimit := fs.Float64("rate", 100, "calls started per second at most")
	repeat := fs.Float64("repeat", 0.1, "fraction of calls repeating an acknowledged pair")
	maxCalls := fs.Int64("max-calls", 100000, "stop after this many calls")
	duration := fs.Duration("max-duration", 5*time.Minute, "stop after this long")
	settle := fs.Duration("settle", 20*time.Second, "how long to re-send unacknowledged pairs after stopping")
	timeout := fs.Duration("timeout", 2*time.Second, "per-attempt timeout of the client")
	seed := fs.Uint64("seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	vids := strings.Split(*videos, ",")
	if len(regions) == 0 || *videos == "" || *conns < 1 || *maxCalls < 1 || *duration <= 0 || *rateLimit <= 0 {
		fmt.Fprintln(stderr, "tally drill writer: want --region, --videos, and positive --conns, --rate, --max-calls, --max-duration")
		return 2
	}
	api, err := client.New(drillClientConfig(regions, *timeout, *seed))
	if err != nil {
		fmt.Fprintf(stderr, "tally drill writer: %v\n", err)
		return 2
	}
	defer api.CloseIdleConnections()
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	api.Probe(probeCtx) //nolint:errcheck // the outcome is in the endpoints' state
	api.Start(probeCtx)

	out := bufio.NewWriter(stdout)
	ev := &lineEvents{w: &flushWriter{w: out}, open: map[viewKey]bool{}}
	st := newWriterStats()
	w := startWriter(ctx, writerConfig{
		API: api, Events: ev, Stats: st, Videos: vids, Prefix: *prefix, Conns: *conns,
		Rate: *rateLimit, Repeat: *repeat, MaxCalls: *maxCalls, Duration: *duration, Seed: *seed,
	})
	stdinDone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdin) //nolint:errcheck // any end of stdin means stop
		close(stdinDone)
	}()
	writerDone := make(chan struct{})
	go func() { w.wg.Wait(); close(writerDone) }()
	select {
	case <-stdinDone:
	case <-writerDone:
	case <-ctx.Done():
	}
	w.Stop()
	left := settleViews(ctx, api, ev.unacked(), ev, st, *conns, time.Now().Add(*settle))
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, k := range left {
		ev.printf("left %s %s\n", k.video, k.user)
	}
	cs := api.Stats()
	st.mu.Lock()
	ev.printf("stats calls=%d ok=%d resends=%d repeats=%d repeatsCounted=%d attempts=%d failovers=%d errors=%s answeredBy=%s\n",
		st.calls, st.ok, st.resends, st.repeats, st.repeatsCounted, cs.Attempts, cs.Failovers, kvList(st.errors), kvList(st.answeredBy))
	st.mu.Unlock()
	if ev.lastErr != nil {
		fmt.Fprintf(stderr, "tally drill writer: write report: %v\n", ev.lastErr)
		return 1
	}
	return 0
}

// flushWriter flushes after every write, so each line reaches the drill at
// once (the caller writes whole lines under a lock).
type flushWriter struct{ w *bufio.Writer }

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.w.Flush()
	}
	return n, err
}

// kvList prints m as k:v,k:v sorted by key ("-" if empty).
func kvList(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, ",")
}

// parseKVList reads kvList's output into m (adding).
func parseKVList(s string, m map[string]int64) {
	if s == "-" {
		return
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, ":")
		if n, err := strconv.ParseInt(v, 10, 64); ok && err == nil {
			m[k] += n
		}
	}
}

// drillClientConfig is the client configuration of every drill writer:
// frequent probes and a short breaker cooldown, so that within a drill of
// seconds the client notices a region going and coming back.
func drillClientConfig(regions []client.Region, timeout time.Duration, seed uint64) client.Config {
	return client.Config{
		Regions:         regions,
		Timeout:         timeout,
		MaxAttempts:     4,
		BreakerFailures: 5,
		BreakerCooldown: 3 * time.Second,
		ProbeInterval:   time.Second,
		ProbeSamples:    2,
		ProbeTimeout:    time.Second,
		Rand:            rand.New(rand.NewPCG(seed, 0x64726c6c)),
	}
}
