package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTimeout         = 2 * time.Second
	DefaultMaxAttempts     = 4
	DefaultBackoffMin      = 50 * time.Millisecond
	DefaultBackoffMax      = time.Second
	DefaultMaxRetryAfter   = 5 * time.Second
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 10 * time.Second
	DefaultProbeInterval   = 10 * time.Second
	DefaultProbeSamples    = 3
)

// ProbeOnDemand as Config.ProbeInterval (any negative value does) turns
// periodic probing off: RTTs are measured only when Probe is called.
const ProbeOnDemand time.Duration = -1

// MaxBatchEvents is the most events the API accepts in one RecordViews call.
const MaxBatchEvents = 10000

const (
	// maxResponseBytes bounds a response body; a batch answer listing 10,000
	// not-counted events with messages stays well below.
	maxResponseBytes = 8 << 20
	// ewmaWeight is the weight of a new RTT sample in the moving average.
	ewmaWeight = 0.3
	// maxProbeConcurrency bounds the endpoints probed at once.
	maxProbeConcurrency = 16
)

// Region is a named group of endpoints.
type Region struct {
	Name string
	// Endpoints are base URLs of tally nodes, e.g. "http://10.0.0.1:8080"; a
	// path, if present, prefixes every request path.
	Endpoints []string
}

// Config configures a Client. Only Regions is required.
type Config struct {
	// Regions lists every endpoint, grouped by region. Their order breaks
	// ties between endpoints of equal (or not yet measured) RTT.
	Regions []Region
	// HTTPClient sends the requests; nil means a client of the package's own
	// (a clone of http.DefaultTransport, redirects not followed). Its Timeout,
	// if any, applies on top of Timeout.
	HTTPClient *http.Client
	// Timeout bounds each attempt, reading the answer included (default 2s).
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one call, the first included
	// (default 4).
	MaxAttempts int
	// BackoffMin and BackoffMax shape the pause before a retry: a uniform
	// draw from [0, min(BackoffMax, BackoffMin·2^(retry-1))] ("full jitter";
	// defaults 50ms and 1s).
	BackoffMin, BackoffMax time.Duration
	// MaxRetryAfter caps how long a Retry-After header keeps an endpoint out
	// of the choice (default 5s).
	MaxRetryAfter time.Duration
	// BreakerFailures is the number of consecutive failures that open an
	// endpoint's circuit breaker (default 5).
	BreakerFailures int
	// BreakerCooldown is how long an open breaker stays open before it lets
	// one trial request through (default 10s).
	BreakerCooldown time.Duration
	// ProbeInterval is the period of the RTT probes run by Start (default
	// 10s); ProbeOnDemand (negative) means only when Probe is called.
	ProbeInterval time.Duration
	// ProbeSamples is the number of GET /healthz samples per endpoint and
	// probe round (default 3).
	ProbeSamples int
	// ProbeTimeout bounds one probe sample (default Timeout).
	ProbeTimeout time.Duration
	// Rand draws the backoff jitter; nil means a generator seeded at random.
	// The Client guards it with a mutex; do not use it elsewhere.
	Rand *rand.Rand
	// Now is the clock of the circuit breakers and Retry-After deadlines
	// (default time.Now). RTTs are always measured on the monotonic clock.
	Now func() time.Time
}

// Client sends tally API calls to the best endpoint and fails over. Create it
// with New; it is safe for concurrent use.
type Client struct {
	cfg Config
	hc  *http.Client
	now func() time.Time
	// sleep waits d or until ctx ends; tests replace it to observe waits.
	sleep func(ctx context.Context, d time.Duration) error

	randMu sync.Mutex
	rng    *rand.Rand

	mu  sync.Mutex // guards the mutable fields of every endpoint
	eps []*endpoint

	calls, attempts, failovers, probeRounds atomic.Uint64
}

// endpoint is one base URL; fields after region are guarded by Client.mu.
type endpoint struct {
	idx    int
	url    string
	region string

	rtt       time.Duration // EWMA of the probe samples; valid if measured
	measured  bool
	probed    bool // a probe round finished for it
	healthy   bool
	br        breaker
	notBefore time.Time // Retry-After: avoid until then
	failures  uint64
	successes uint64
	lastErr   string
}

// New checks cfg, applies the defaults and returns a Client. It sends no
// request: call Probe or Start to measure RTTs.
func New(cfg Config) (*Client, error) {
	if len(cfg.Regions) == 0 {
		return nil, errors.New("tally client: no regions configured")
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"Timeout", cfg.Timeout}, {"BackoffMin", cfg.BackoffMin}, {"BackoffMax", cfg.BackoffMax},
		{"MaxRetryAfter", cfg.MaxRetryAfter}, {"BreakerCooldown", cfg.BreakerCooldown}, {"ProbeTimeout", cfg.ProbeTimeout}} {
		if f.v < 0 {
			return nil, fmt.Errorf("tally client: negative %s %s", f.name, f.v)
		}
	}
	if cfg.MaxAttempts < 0 || cfg.BreakerFailures < 0 || cfg.ProbeSamples < 0 {
		return nil, errors.New("tally client: negative MaxAttempts, BreakerFailures or ProbeSamples")
	}
	setDefault(&cfg.Timeout, DefaultTimeout)
	setDefault(&cfg.MaxAttempts, DefaultMaxAttempts)
	setDefault(&cfg.BackoffMin, DefaultBackoffMin)
	setDefault(&cfg.BackoffMax, DefaultBackoffMax)
	setDefault(&cfg.MaxRetryAfter, DefaultMaxRetryAfter)
	setDefault(&cfg.BreakerFailures, DefaultBreakerFailures)
	setDefault(&cfg.BreakerCooldown, DefaultBreakerCooldown)
	setDefault(&cfg.ProbeInterval, DefaultProbeInterval)
	setDefault(&cfg.ProbeSamples, DefaultProbeSamples)
	setDefault(&cfg.ProbeTimeout, cfg.Timeout)
	if cfg.BackoffMax < cfg.BackoffMin {
		return nil, fmt.Errorf("tally client: BackoffMax %s below BackoffMin %s", cfg.BackoffMax, cfg.BackoffMin)
	}
	c := &Client{cfg: cfg, hc: cfg.HTTPClient, now: cfg.Now, rng: cfg.Rand, sleep: sleepCtx}
	if c.now == nil {
		c.now = time.Now
	}
	if c.rng == nil {
		c.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		c.hc = &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	regions := map[string]bool{}
	urls := map[string]bool{}
	for _, r := range cfg.Regions {
		if r.Name == "" {
			return nil, errors.New("tally client: region without a name")
		}
		if regions[r.Name] {
			return nil, fmt.Errorf("tally client: region %q listed twice", r.Name)
		}
		regions[r.Name] = true
		if len(r.Endpoints) == 0 {
			return nil, fmt.Errorf("tally client: region %q has no endpoints", r.Name)
		}
		for _, raw := range r.Endpoints {
			base, err := normalizeBase(raw)
			if err != nil {
				return nil, fmt.Errorf("tally client: region %q: %w", r.Name, err)
			}
			if urls[base] {
				return nil, fmt.Errorf("tally client: endpoint %q listed twice", base)
			}
			urls[base] = true
			c.eps = append(c.eps, &endpoint{
				idx: len(c.eps), url: base, region: r.Name, healthy: true,
				br: breaker{threshold: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown},
			})
		}
	}
	return c, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// normalizeBase checks a base URL and drops a trailing slash.
func normalizeBase(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid endpoint %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("invalid endpoint %q: want http(s)://host[:port][/path]", raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// CloseIdleConnections closes the idle keep-alive connections of the HTTP client.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Stats are counters over the client's life.
type Stats struct {
	// Calls is the number of API calls (RecordView, RecordViews, Views).
	Calls uint64
	// Attempts is the number of requests they sent.
	Attempts uint64
	// Failovers is the number of retries sent to another endpoint than the
	// attempt before.
	Failovers uint64
	// ProbeRounds is the number of completed probe rounds.
	ProbeRounds uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Calls: c.calls.Load(), Attempts: c.attempts.Load(), Failovers: c.failovers.Load(), ProbeRounds: c.probeRounds.Load()}
}

// EndpointStatus is a snapshot of one endpoint.
type EndpointStatus struct {
	// Name is the endpoint's base URL; Region the region it belongs to.
	Name   string
	Region string
	// RTT is the moving average of the probe round trips, 0 until measured.
	RTT time.Duration
	// Probed is set once a probe round finished for the endpoint.
	Probed bool
	// Healthy is false when the last probe round got no answer; a request it
	// answers makes it healthy again. Endpoints start healthy.
	Healthy bool
	// Breaker is the state the next request sees: an open breaker whose
	// cooldown has passed shows half-open.
	Breaker BreakerState
	// ConsecutiveFailures counts the failures since the last success.
	ConsecutiveFailures int
	// Failures and Successes count attempts over the client's life (4xx
	// answers count as successes: the endpoint works).
	Failures, Successes uint64
	// RetryAfter is when a Retry-After received from it ends (zero if none).
	RetryAfter time.Time
	// LastError describes its last failure, probe or request.
	LastError string
}

// Endpoints returns a snapshot of every endpoint, in configuration order.
func (c *Client) Endpoints() []EndpointStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	out := make([]EndpointStatus, len(c.eps))
	for i, ep := range c.eps {
		out[i] = EndpointStatus{
			Name: ep.url, Region: ep.region, RTT: ep.rtt, Probed: ep.probed, Healthy: ep.healthy,
			Breaker: ep.br.effective(now), ConsecutiveFailures: ep.br.consecutive,
			Failures: ep.failures, Successes: ep.successes, LastError: ep.lastErr,
		}
		if ep.notBefore.After(now) {
			out[i].RetryAfter = ep.notBefore
		}
	}
	return out
}

// ticket is the permission to send one attempt to ep.
type ticket struct {
	ep    *endpoint
	gen   uint64
	trial bool
}

// pick chooses the endpoint for the next attempt of a call and lets it
// through its breaker. Among the endpoints whose breaker allows a request,
// it prefers, in this order: one the call has not tried; a healthy one; one
// not under Retry-After; one outside the regions where the call failed; a
// measured RTT; the lowest RTT; configuration order. wait is how long its
// Retry-After still runs.
func (c *Client) pick(tried []bool, failedRegions map[string]bool) (t ticket, wait time.Duration, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	var best *endpoint
	var bestKey [5]bool
	for _, ep := range c.eps {
		if !ep.br.available(now) {
			continue
		}
		key := [5]bool{tried[ep.idx], !ep.healthy, ep.notBefore.After(now), failedRegions[ep.region], !ep.measured}
		if best == nil || less(key, ep, bestKey, best) {
			best, bestKey = ep, key
		}
	}
	if best == nil {
		return ticket{}, 0, false
	}
	gen, trial := best.br.acquire(now)
	return ticket{ep: best, gen: gen, trial: trial}, max(best.notBefore.Sub(now), 0), true
}

func less(ka [5]bool, a *endpoint, kb [5]bool, b *endpoint) bool {
	for i := range ka {
		if ka[i] != kb[i] {
			return !ka[i]
		}
	}
	if a.rtt != b.rtt {
		return a.rtt < b.rtt
	}
	return a.idx < b.idx
}

// outcome of one attempt, as far as the breaker is concerned.
type outcome int

const (
	outcomeSuccess outcome = iota // the endpoint answered (2xx or a final 4xx)
	outcomeFailure                // transport error, timeout, 5xx, 429, bad body
	outcomeAbandon                // the caller's context ended
)

// settle records the outcome of the attempt t.
func (c *Client) settle(t ticket, o outcome, err error, retryAfter time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ep := t.ep
	switch o {
	case outcomeSuccess:
		ep.successes++
		ep.healthy = true
		ep.br.success(t.gen)
	case outcomeFailure:
		now := c.now()
		ep.failures++
		ep.lastErr = err.Error()
		ep.br.failure(t.gen, now)
		if retryAfter > 0 {
			ep.notBefore = now.Add(min(retryAfter, c.cfg.MaxRetryAfter))
		}
	case outcomeAbandon:
		ep.br.abandon(t.gen, t.trial)
	}
}

// backoff returns the pause before retry number n (1 for the first retry).
func (c *Client) backoff(n int) time.Duration {
	ceil := c.cfg.BackoffMax
	if shift := n - 1; shift < 62 {
		if d := c.cfg.BackoffMin << shift; d > 0 && d>>shift == c.cfg.BackoffMin && d < ceil {
			ceil = d
		}
	}
	if ceil <= 0 {
		return 0
	}
	c.randMu.Lock()
	defer c.randMu.Unlock()
	return time.Duration(c.rng.Int64N(int64(ceil) + 1))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// served tells who answered a call and how it got there.
type served struct {
	Region, Endpoint string
	Attempts         int
	FailedOver       bool
}

// do sends one API call with retries and failover. decode parses a 2xx body
// into the caller's result; an error from it fails the attempt.
func (c *Client) do(ctx context.Context, method, path string, body []byte, decode func([]byte) error) (served, error) {
	c.calls.Add(1)
	var s served
	tried := make([]bool, len(c.eps))
	failedRegions := map[string]bool{}
	var lastErr error
	var first, prev *endpoint
	for attempt := 1; attempt <= c.cfg.MaxAttempts; attempt++ {
		t, wait, ok := c.pick(tried, failedRegions)
		if !ok {
			if lastErr != nil {
				return s, fmt.Errorf("%w; last error: %w", ErrNoEndpoint, lastErr)
			}
			return s, ErrNoEndpoint
		}
		if attempt > 1 {
			wait = max(wait, c.backoff(attempt-1))
		}
		if err := c.sleep(ctx, wait); err != nil {
			c.settle(t, outcomeAbandon, nil, 0)
			return s, joinLast(err, lastErr)
		}
		ep := t.ep
		if first == nil {
			first = ep
		}
		if prev != nil && prev != ep {
			c.failovers.Add(1)
		}
		prev = ep
		c.attempts.Add(1)
		s = served{Region: ep.region, Endpoint: ep.url, Attempts: attempt, FailedOver: ep != first}

		retryAfter, err := c.attempt(ctx, ep, method, path, body, decode)
		var ae *APIError
		switch {
		case err == nil:
			c.settle(t, outcomeSuccess, nil, 0)
			return s, nil
		case errors.As(err, &ae) && !ae.Temporary():
			c.settle(t, outcomeSuccess, nil, 0)
			return s, err
		case ctx.Err() != nil:
			c.settle(t, outcomeAbandon, nil, 0)
			return s, joinLast(ctx.Err(), err)
		}
		c.settle(t, outcomeFailure, err, retryAfter)
		tried[ep.idx] = true
		failedRegions[ep.region] = true
		lastErr = err
	}
	return s, fmt.Errorf("tally client: giving up after %d attempts: %w", s.Attempts, lastErr)
}

func joinLast(err, last error) error {
	if last == nil {
		return err
	}
	return fmt.Errorf("%w (last attempt: %w)", err, last)
}

// attempt sends one request to ep under the per-attempt timeout.
func (c *Client) attempt(ctx context.Context, ep *endpoint, method, path string, body []byte, decode func([]byte) error) (retryAfter time.Duration, err error) {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, ep.url+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tally-client")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, req.URL, err)
	}
	defer res.Body.Close() //nolint:errcheck // read-only
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes+1))
	if err != nil {
		return 0, fmt.Errorf("%s %s: reading answer: %w", method, req.URL, err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		ae := apiError(res, data, ep, c.now())
		return ae.RetryAfter, ae
	}
	if len(data) > maxResponseBytes {
		return 0, fmt.Errorf("%s %s: %w: answer over %d bytes", method, req.URL, ErrBadResponse, maxResponseBytes)
	}
	if err := decode(data); err != nil {
		return 0, fmt.Errorf("%s %s: %w: %w", method, req.URL, ErrBadResponse, err)
	}
	return 0, nil
}

// apiError builds the APIError of a non-2xx answer.
func apiError(res *http.Response, data []byte, ep *endpoint, now time.Time) *APIError {
	ae := &APIError{Status: res.StatusCode, Region: ep.region, Endpoint: ep.url}
	if d, ok := parseRetryAfter(res.Header.Get("Retry-After"), now); ok {
		ae.RetryAfter = d
	}
	var eb struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
		return ae
	}
	snippet := strings.TrimSpace(string(data[:min(len(data), 200)]))
	ae.Message = http.StatusText(res.StatusCode)
	if snippet != "" {
		ae.Message += ": " + snippet
	}
	return ae
}
