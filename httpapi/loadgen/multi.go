package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxTargets is the largest number of MultiConfig.Targets accepted.
const MaxTargets = 64

// MultiConfig describes a run spread over several nodes, optionally paced.
//
// Config.Target is ignored and Config.Regions refused (each target gets its
// own workers here, by design, not the nearest); Config.Connections is the number of workers per
// target; every other Config field means what it means for Run. The workers
// of all targets share one user round-robin and one seed space, so fresh
// (video, user) pairs stay distinct across targets.
type MultiConfig struct {
	Config
	// Targets are the base URLs of the nodes, e.g. "http://127.0.0.1:8080".
	Targets []string
	// Rate caps the requests started per second over all targets (0: closed
	// loop, as Run). Requests are started on a fixed schedule (one every
	// 1/Rate seconds, claimed by whichever worker is free); a schedule the
	// workers cannot keep is not caught up in a burst: a late worker starts
	// its request at once and the schedule moves on from there.
	Rate float64
	// Stop, if not nil, ends the run when closed, like the deadline: no new
	// request is started, requests in flight finish and are counted.
	Stop <-chan struct{}
}

// pacer hands out start times 1/rate apart.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

// slot returns when the caller's next request may start.
func (p *pacer) slot(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next.Before(now) {
		p.next = now // no catching up after a stall
	}
	t := p.next
	p.next = p.next.Add(p.interval)
	return t
}

// RunMulti drives every target with mc until the count, the duration or Stop
// ends the run, and returns what happened, summed over all targets. If ctx is
// cancelled it stops early and returns the partial Result with an error
// wrapping ctx.Err().
func RunMulti(ctx context.Context, mc MultiConfig) (Result, error) {
	if len(mc.Regions) > 0 {
		return Result{}, errors.New("loadgen: RunMulti drives each target directly; Config.Regions is for Run")
	}
	if len(mc.Targets) == 0 || len(mc.Targets) > MaxTargets {
		return Result{}, fmt.Errorf("loadgen: want 1..%d targets, got %d", MaxTargets, len(mc.Targets))
	}
	if !(mc.Rate >= 0) || mc.Rate > 1e7 {
		return Result{}, fmt.Errorf("loadgen: invalid rate %v: want 0..1e7 requests/s", mc.Rate)
	}
	bases := make([]string, len(mc.Targets))
	var cfg Config
	for i, t := range mc.Targets {
		c := mc.Config
		c.Target = t
		nc, u, err := c.normalize()
		if err != nil {
			return Result{}, fmt.Errorf("loadgen: target %d: %w", i, err)
		}
		bases[i], cfg = u.String(), nc
	}
	total := cfg.Connections * len(bases)
	client, transport := newHTTPClient(cfg.Timeout, cfg.Connections, total)
	defer transport.CloseIdleConnections()
	var pace *pacer
	if mc.Rate > 0 {
		pace = &pacer{interval: time.Duration(float64(time.Second) / mc.Rate)}
	}
	userOffset := uint64(splitmix(uint64(cfg.Seed)) % uint64(max(cfg.Users, 1)))
	var tickets atomic.Int64
	workers := make([]*worker, 0, total)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for ti, base := range bases {
		run := &runState{cfg: cfg, base: base, client: client, count: int64(cfg.Count), deadline: deadline, userOffset: userOffset}
		for i := range cfg.Connections {
			gi := ti*cfg.Connections + i
			w := newWorker(run, gi)
			w.rng = rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(gi)))
			w.freshNext, w.stride = uint64(gi), uint64(total)
			workers = append(workers, w)
		}
	}
	stop := mc.Stop
	if stop == nil {
		stop = make(chan struct{})
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.pacedLoop(ctx, stop, pace, &tickets) })
	}
	wg.Wait()
	res := merge(cfg, time.Since(start), workers)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("loadgen: run interrupted after %d requests: %w", res.Requests, err)
	}
	return res, nil
}

// pacedLoop is loop with a shared request count, a stop channel and pacing.
func (w *worker) pacedLoop(ctx context.Context, stop <-chan struct{}, pace *pacer, tickets *atomic.Int64) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for ctx.Err() == nil && time.Now().Before(w.run.deadline) {
		select {
		case <-stop:
			return
		default:
		}
		if w.run.count > 0 && tickets.Add(1) > w.run.count {
			return
		}
		if pace != nil {
			at := pace.slot(time.Now())
			if at.After(w.run.deadline) {
				return
			}
			if d := time.Until(at); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case <-timer.C:
				case <-stop:
					return
				case <-ctx.Done():
					return
				}
			}
		}
		w.one(ctx)
	}
}

// errNoTargets is returned by ParseTargets for an empty list.
var errNoTargets = errors.New("no endpoints given")

// ParseTargets splits a comma-separated list of base URLs, dropping empty
// items and trailing slashes, and checks each is an http(s) URL.
func ParseTargets(list string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		c := Config{Target: s, Mode: ModeGet, Connections: 1, Videos: 1, Duration: time.Second}
		_, u, err := c.normalize()
		if err != nil {
			return nil, err
		}
		out = append(out, u.String())
	}
	if len(out) == 0 {
		return nil, errNoTargets
	}
	return out, nil
}
