package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Probe measures the round trip to every endpoint with GET /healthz
// (Config.ProbeSamples samples each, every one bounded by
// Config.ProbeTimeout; endpoints are probed in parallel, at most 16 at once)
// and folds the samples into each endpoint's moving-average RTT. An endpoint
// none of whose samples got a 200 is marked unhealthy; one that answered is
// marked healthy. Probe returns ctx's error if ctx ended (endpoints whose
// probe was cut short keep their state), an error if no endpoint answered,
// else nil. Probing does not touch the circuit breakers.
func (c *Client) Probe(ctx context.Context) error {
	errs := make([]error, len(c.eps))
	sem := make(chan struct{}, maxProbeConcurrency)
	var wg sync.WaitGroup
	for i, ep := range c.eps {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			errs[i] = c.probeOne(ctx, ep)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	c.probeRounds.Add(1)
	for _, err := range errs {
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("tally client: no endpoint answered /healthz: %w", errors.Join(errs...))
}

// probeOne takes the samples of one endpoint and records them.
func (c *Client) probeOne(ctx context.Context, ep *endpoint) error {
	var samples []time.Duration
	var lastErr error
	for range c.cfg.ProbeSamples {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d, err := c.sample(ctx, ep)
		if err != nil {
			lastErr = err
			continue
		}
		samples = append(samples, d)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ep.probed = true
	if len(samples) == 0 {
		ep.healthy = false
		ep.lastErr = "probe: " + lastErr.Error()
		return lastErr
	}
	ep.healthy = true
	for _, s := range samples {
		if !ep.measured {
			ep.rtt, ep.measured = s, true
			continue
		}
		ep.rtt = time.Duration(ewmaWeight*float64(s) + (1-ewmaWeight)*float64(ep.rtt))
	}
	return nil
}

// sample times one GET /healthz.
func (c *Client) sample(ctx context.Context, ep *endpoint) (time.Duration, error) {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, ep.url+"/healthz", nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	_, err = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
	res.Body.Close() //nolint:errcheck // read-only
	rtt := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %d", req.URL, res.StatusCode)
	}
	return max(rtt, 1), nil // a measured RTT is never 0
}

// Start probes every endpoint at once and then every Config.ProbeInterval,
// in a goroutine that ends when ctx ends; the returned channel is closed
// then. A round starts only after the previous one finished, and each round
// is bounded (see Probe). With ProbeOnDemand, Start does nothing and returns
// a closed channel.
func (c *Client) Start(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if c.cfg.ProbeInterval < 0 {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		c.Probe(ctx) //nolint:errcheck // the outcome is in Endpoints
		t := time.NewTicker(c.cfg.ProbeInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.Probe(ctx) //nolint:errcheck // the outcome is in Endpoints
			}
		}
	}()
	return done
}
