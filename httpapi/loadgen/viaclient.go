package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/tallyhq/tally/httpapi/client"
)

// clientProbeInterval is how often a client run re-measures the endpoints'
// round trips: often enough that an endpoint that went away is marked
// unhealthy (and one that came back is preferred again) within a short run.
const clientProbeInterval = 2 * time.Second

// startClient builds the httpapi/client Client of a run over cfg.Regions,
// measures every endpoint once and keeps probing in the background. The
// returned function stops the probes and closes idle connections.
func (r *runState) startClient(ctx context.Context) (stop func(), err error) {
	endpoints := 0
	for _, reg := range r.cfg.Regions {
		endpoints += len(reg.Endpoints)
	}
	// Every worker may end up on one endpoint (the nearest, or the last one
	// standing), so each gets a connection per worker.
	hc, transport := newHTTPClient(r.cfg.Timeout, r.cfg.Connections, r.cfg.Connections*endpoints)
	api, err := client.New(client.Config{
		Regions:       r.cfg.Regions,
		HTTPClient:    hc,
		Timeout:       r.cfg.Timeout,
		ProbeInterval: clientProbeInterval,
		Rand:          rand.New(rand.NewPCG(uint64(r.cfg.Seed), ^uint64(0))), // no worker has this stream
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	// The first measurement happens before the clock starts; an endpoint that
	// does not answer it is simply not preferred (its requests fail over).
	api.Probe(ctx) //nolint:errcheck // the outcome is in the endpoints' state
	probeCtx, cancel := context.WithCancel(ctx)
	done := api.Start(probeCtx)
	r.api = api
	return func() {
		cancel()
		<-done
		transport.CloseIdleConnections()
	}, nil
}

// oneViaClient sends one request of the configured mode through the client.
func (w *worker) oneViaClient(ctx context.Context) {
	switch w.cfg.Mode {
	case ModeView:
		w.viewViaClient(ctx)
	case ModeGet:
		w.getViaClient(ctx)
	case ModeBatch:
		w.batchViaClient(ctx)
	case ModeMixed:
		if w.rng.Float64() < w.cfg.GetRatio {
			w.getViaClient(ctx)
		} else {
			w.viewViaClient(ctx)
		}
	}
}

// finish records a completed client call as do does for a direct request:
// ok is false if ctx was cancelled (the call is then not counted at all);
// otherwise its latency is recorded and, if err is not nil, its error kind.
func (w *worker) finish(ctx context.Context, start time.Time, err error, region string) (ok bool) {
	lat := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return false
	}
	w.st.requests++
	w.hist.record(lat)
	if err != nil {
		w.fail(clientErrorKind(err))
		return true
	}
	w.st.successes++
	w.st.answeredBy[region]++
	return true
}

// clientErrorKind names a client error for Result.ErrorsByKind.
func clientErrorKind(err error) string {
	var ae *client.APIError
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		return "http_" + strconv.Itoa(ae.Status)
	case errors.Is(err, client.ErrBadResponse):
		return "bad_response"
	case errors.Is(err, client.ErrNoEndpoint):
		return "no_endpoint"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "transport"
}

func (w *worker) videoID(video int) string {
	w.path = appendVideoID(w.path[:0], video)
	return string(w.path)
}

func (w *worker) userID(user int) string {
	w.path = appendUserID(w.path[:0], user)
	return string(w.path)
}

func (w *worker) viewViaClient(ctx context.Context) {
	p := w.pickPair()
	start := time.Now()
	res, err := w.run.api.RecordView(ctx, w.videoID(p.video), w.userID(p.user), start)
	if !w.finish(ctx, start, err, res.Region) {
		return
	}
	w.st.viewsSent++
	if err != nil {
		return
	}
	if res.Counted {
		w.st.counted++
		w.remember(p)
		return
	}
	w.st.notCounted++
	w.st.reasons[reasonKey(res.Reason)]++
	if res.Reason == client.ReasonDuplicate {
		w.remember(p)
	}
}

func (w *worker) getViaClient(ctx context.Context) {
	start := time.Now()
	res, err := w.run.api.Views(ctx, w.videoID(w.pickVideo()))
	w.finish(ctx, start, err, res.Region)
}

func (w *worker) batchViaClient(ctx context.Context) {
	now := time.Now()
	w.pending = w.pending[:0]
	events := make([]client.Event, w.cfg.BatchSize)
	for i := range events {
		p := w.pickPair()
		w.pending = append(w.pending, pendingEvent{pair: p})
		events[i] = client.Event{VideoID: w.videoID(p.video), UserID: w.userID(p.user), Timestamp: now}
	}
	start := time.Now()
	res, err := w.run.api.RecordViews(ctx, events)
	if !w.finish(ctx, start, err, res.Region) {
		return
	}
	w.st.viewsSent += int64(len(events))
	if err != nil {
		return
	}
	// The client checked the figures and the indexes against the batch.
	w.st.counted += int64(res.Counted)
	w.st.notCounted += int64(len(res.NotCounted))
	for _, nc := range res.NotCounted {
		w.st.reasons[reasonKey(nc.Reason)]++
		if nc.Reason != client.ReasonDuplicate {
			w.pending[nc.Index].rejected = true
		}
	}
	for _, e := range w.pending {
		if !e.rejected {
			w.remember(e.pair)
		}
	}
}
