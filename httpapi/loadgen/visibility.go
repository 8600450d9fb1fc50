package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults and limits of VisibilityConfig.
const (
	DefaultProbes           = 200
	MaxProbes               = 100_000
	DefaultVisibilityCap    = 2 * time.Minute
	DefaultProbeTimeout     = 10 * time.Second
	DefaultPollInterval     = time.Millisecond
	DefaultProbeGap         = 50 * time.Millisecond
	maxVisibilityEndpoints  = MaxTargets
	maxProbeResponseBytes   = 64 << 10
	defaultProbeHTTPTimeout = 5 * time.Second
)

// VisibilityConfig describes an ack-to-visibility measurement: probes write
// one view of a fresh video to one endpoint (rotating over Endpoints) and
// time how long until every other endpoint serves it.
type VisibilityConfig struct {
	// Endpoints are the base URLs of the nodes (at least two).
	Endpoints []string
	// Probes is the number of probes (0: DefaultProbes).
	Probes int
	// MaxDuration caps the whole measurement: no probe starts after it
	// (0: DefaultVisibilityCap). A probe under way ends within ProbeTimeout.
	MaxDuration time.Duration
	// ProbeTimeout is how long a probe waits for every endpoint to see its
	// view after the acknowledgement (0: DefaultProbeTimeout).
	ProbeTimeout time.Duration
	// PollInterval is the pause between two reads of the probe's video at one
	// endpoint (0: DefaultPollInterval). Each endpoint is polled by its own
	// goroutine.
	PollInterval time.Duration
	// Gap is the upper bound of the random pause between two probes, which
	// keeps probes from falling into step with the replication ticker
	// (0: DefaultProbeGap; negative: no pause).
	Gap time.Duration
	// RunID names the run in the probes' video and user IDs,
	// "probe-<RunID>-<i>" and "probe-<RunID>-u<i>" (default: the start time).
	RunID string
	// Seed seeds the pauses between probes.
	Seed int64
	// RequestTimeout bounds each HTTP request (0: 5s).
	RequestTimeout time.Duration
}

// Probe is the outcome of one probe.
type Probe struct {
	Index  int
	Video  string
	Writer int // index in Endpoints of the node written to
	// Ack is the round trip of the POST that wrote the view.
	Ack time.Duration
	// Seen[j] is, for endpoint j, first-seen − ack: from the moment the
	// write's answer was read to the moment the first answer of endpoint j
	// with viewCount ≥ 1 was read, 0 if it already showed it at the first
	// read. -1 for the writer and for endpoints that never showed it.
	Seen []time.Duration
	// Visible is the maximum of Seen: ack-to-visibility in every region.
	// Valid only if Err is empty.
	Visible time.Duration
	// Err is empty for a complete probe; else why it failed. TimedOut tells
	// a probe whose view was acknowledged but not seen everywhere in time.
	Err      string
	TimedOut bool
}

// Summary is an exact summary of a set of durations. Percentiles are
// nearest-rank: the smallest value such that at least q of all are ≤ it.
type Summary struct {
	Count                         int
	Min, Mean, P50, P90, P99, Max time.Duration
}

// Summarize returns the exact Summary of ds (ds is not modified).
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var total float64
	for _, d := range s {
		total += float64(d)
	}
	return Summary{
		Count: len(s),
		Min:   s[0],
		Mean:  time.Duration(total / float64(len(s))),
		P50:   NearestRank(s, 0.50),
		P90:   NearestRank(s, 0.90),
		P99:   NearestRank(s, 0.99),
		Max:   s[len(s)-1],
	}
}

// NearestRank returns the q-quantile (0 < q ≤ 1) of sorted by the
// nearest-rank method: sorted[ceil(q·n)−1]. It returns 0 for an empty slice.
func NearestRank(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// ceil(q·n) in integers of parts per million, to avoid 0.99·100 = 99.00000000000001.
	ppm := int64(q*1e6 + 0.5)
	rank := int((int64(n)*ppm + 999_999) / 1_000_000)
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// String prints s as "n=.. p50=.. p90=.. p99=.. max=..".
func (s Summary) String() string {
	return fmt.Sprintf("n=%d min=%s p50=%s p90=%s p99=%s max=%s mean=%s", s.Count,
		formatLatency(s.Min), formatLatency(s.P50), formatLatency(s.P90), formatLatency(s.P99),
		formatLatency(s.Max), formatLatency(s.Mean))
}

// VisibilityResult is the outcome of RunVisibility.
type VisibilityResult struct {
	Probes []Probe
	// Complete, TimedOut and Failed split the probes: seen everywhere,
	// acknowledged but not seen everywhere within ProbeTimeout, and not
	// acknowledged as counted (or interrupted).
	Complete, TimedOut, Failed int
	// Visible summarises Probe.Visible over complete probes; Ack the write
	// round trips of acknowledged probes.
	Visible, Ack Summary
	// PerEndpoint[j] summarises Seen[j] over complete probes where j was
	// not the writer.
	PerEndpoint []Summary
	Elapsed     time.Duration
}

// Write prints r in a few key=value lines.
func (r VisibilityResult) Write(w io.Writer, endpoints []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "probes=%d complete=%d timedOut=%d failed=%d elapsed=%.1fs\n",
		len(r.Probes), r.Complete, r.TimedOut, r.Failed, r.Elapsed.Seconds())
	fmt.Fprintf(&b, "visibility %s\n", r.Visible)
	fmt.Fprintf(&b, "ack        %s\n", r.Ack)
	for j, s := range r.PerEndpoint {
		name := fmt.Sprint(j)
		if j < len(endpoints) {
			name = endpoints[j]
		}
		fmt.Fprintf(&b, "  seen at %-28s %s\n", name, s)
	}
	for _, p := range r.Probes {
		if p.Err != "" {
			fmt.Fprintf(&b, "  probe %d (%s, writer %d): %s\n", p.Index, p.Video, p.Writer, p.Err)
		}
	}
	io.WriteString(w, b.String()) //nolint:errcheck // best-effort report
}

// RunVisibility runs the probes one after the other. It returns an error
// only for an invalid config or a cancelled ctx (with the probes so far).
func RunVisibility(ctx context.Context, cfg VisibilityConfig) (VisibilityResult, error) {
	if len(cfg.Endpoints) < 2 || len(cfg.Endpoints) > maxVisibilityEndpoints {
		return VisibilityResult{}, fmt.Errorf("loadgen: visibility needs 2..%d endpoints, got %d", maxVisibilityEndpoints, len(cfg.Endpoints))
	}
	if cfg.Probes < 0 || cfg.Probes > MaxProbes {
		return VisibilityResult{}, fmt.Errorf("loadgen: invalid probes %d: want 0..%d", cfg.Probes, MaxProbes)
	}
	if cfg.MaxDuration < 0 || cfg.MaxDuration > MaxDuration || cfg.ProbeTimeout < 0 || cfg.ProbeTimeout > MaxDuration ||
		cfg.PollInterval < 0 || cfg.PollInterval > time.Second || cfg.RequestTimeout < 0 || cfg.RequestTimeout > MaxTimeout {
		return VisibilityResult{}, errors.New("loadgen: visibility durations out of range")
	}
	eps, err := ParseTargets(strings.Join(cfg.Endpoints, ","))
	if err != nil {
		return VisibilityResult{}, fmt.Errorf("loadgen: %w", err)
	}
	if len(eps) != len(cfg.Endpoints) {
		return VisibilityResult{}, errors.New("loadgen: empty endpoint")
	}
	cfg.Endpoints = eps
	if cfg.Probes == 0 {
		cfg.Probes = DefaultProbes
	}
	if cfg.MaxDuration == 0 {
		cfg.MaxDuration = DefaultVisibilityCap
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Gap == 0 {
		cfg.Gap = DefaultProbeGap
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = defaultProbeHTTPTimeout
	}
	if cfg.RunID == "" {
		cfg.RunID = time.Now().UTC().Format("20060102T150405.000")
	}
	cfg.RunID = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, cfg.RunID)
	if len(cfg.RunID) > 80 {
		return VisibilityResult{}, errors.New("loadgen: run ID over 80 bytes")
	}

	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: cfg.RequestTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	p := &prober{
		cfg:    cfg,
		client: &http.Client{Transport: transport, Timeout: cfg.RequestTimeout},
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x70726f6265))
	start := time.Now()
	deadline := start.Add(cfg.MaxDuration)
	var res VisibilityResult
	for i := 0; i < cfg.Probes && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		res.Probes = append(res.Probes, p.probe(ctx, i))
		if cfg.Gap > 0 && i+1 < cfg.Probes {
			t := time.NewTimer(time.Duration(rng.Int64N(int64(cfg.Gap))))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
	}
	res.Elapsed = time.Since(start)
	res.summarize(len(cfg.Endpoints))
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("loadgen: visibility interrupted after %d probes: %w", len(res.Probes), err)
	}
	return res, nil
}

// summarize fills the counts and summaries from r.Probes.
func (r *VisibilityResult) summarize(endpoints int) {
	r.Complete, r.TimedOut, r.Failed = 0, 0, 0
	var vis, ack []time.Duration
	per := make([][]time.Duration, endpoints)
	for _, p := range r.Probes {
		switch {
		case p.Err == "":
			r.Complete++
			vis = append(vis, p.Visible)
			for j, d := range p.Seen {
				if j != p.Writer && j < endpoints && d >= 0 {
					per[j] = append(per[j], d)
				}
			}
		case p.TimedOut:
			r.TimedOut++
		default:
			r.Failed++
		}
		if p.Err == "" || p.TimedOut {
			ack = append(ack, p.Ack)
		}
	}
	r.Visible, r.Ack = Summarize(vis), Summarize(ack)
	r.PerEndpoint = make([]Summary, endpoints)
	for j := range per {
		r.PerEndpoint[j] = Summarize(per[j])
	}
}

type prober struct {
	cfg    VisibilityConfig
	client *http.Client
}

// probe writes one view at endpoint i mod n and waits for the others.
func (pr *prober) probe(ctx context.Context, i int) Probe {
	n := len(pr.cfg.Endpoints)
	p := Probe{
		Index:  i,
		Video:  fmt.Sprintf("probe-%s-%d", pr.cfg.RunID, i),
		Writer: i % n,
		Seen:   make([]time.Duration, n),
	}
	for j := range p.Seen {
		p.Seen[j] = -1
	}
	user := fmt.Sprintf("probe-%s-u%d", pr.cfg.RunID, i)
	body := `{"userId":"` + user + `"}`
	sent := time.Now()
	status, raw, err := pr.do(ctx, http.MethodPost, pr.url(p.Writer, p.Video), body)
	acked := time.Now()
	p.Ack = acked.Sub(sent)
	if err != nil {
		p.Err = "write: " + err.Error()
		return p
	}
	var vr struct {
		Counted   *bool  `json:"counted"`
		ViewCount uint64 `json:"viewCount"`
		Reason    string `json:"reason"`
	}
	if status != http.StatusOK {
		p.Err = fmt.Sprintf("write: HTTP %d: %.200s", status, raw)
		return p
	}
	if err := json.Unmarshal(raw, &vr); err != nil || vr.Counted == nil {
		p.Err = fmt.Sprintf("write: bad response %.200q", raw)
		return p
	}
	if !*vr.Counted || vr.ViewCount < 1 {
		p.Err = fmt.Sprintf("write: not counted (reason %q, viewCount %d)", vr.Reason, vr.ViewCount)
		return p
	}

	pctx, cancel := context.WithDeadline(ctx, acked.Add(pr.cfg.ProbeTimeout))
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]string, n)
	for j := range n {
		if j == p.Writer {
			continue
		}
		wg.Go(func() {
			seenAt, err := pr.await(pctx, j, p.Video)
			if err != nil {
				errs[j] = err.Error()
				return
			}
			p.Seen[j] = max(seenAt.Sub(acked), 0)
		})
	}
	wg.Wait()
	var missing []string
	for j := range n {
		if j == p.Writer {
			continue
		}
		if p.Seen[j] < 0 {
			missing = append(missing, fmt.Sprintf("endpoint %d: %s", j, errs[j]))
			continue
		}
		p.Visible = max(p.Visible, p.Seen[j])
	}
	if len(missing) > 0 {
		p.Err = "not visible everywhere: " + strings.Join(missing, "; ")
		p.TimedOut = ctx.Err() == nil
	}
	return p
}

// await polls endpoint j for video until it reports viewCount ≥ 1 and
// returns when that answer was read.
func (pr *prober) await(ctx context.Context, j int, video string) (time.Time, error) {
	url := pr.url(j, video)
	var last string
	for polls := 0; ; polls++ {
		status, raw, err := pr.do(ctx, http.MethodGet, url, "")
		at := time.Now()
		switch {
		case err != nil:
			last = err.Error()
		case status != http.StatusOK:
			last = fmt.Sprintf("HTTP %d", status)
		default:
			var gr struct {
				ViewCount *uint64 `json:"viewCount"`
			}
			if err := json.Unmarshal(raw, &gr); err != nil || gr.ViewCount == nil {
				last = fmt.Sprintf("bad response %.100q", raw)
			} else if *gr.ViewCount >= 1 {
				return at, nil
			} else {
				last = "viewCount 0"
			}
		}
		t := time.NewTimer(pr.cfg.PollInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return time.Time{}, fmt.Errorf("not seen after %d reads (last: %s)", polls+1, last)
		}
	}
}

func (pr *prober) url(j int, video string) string {
	return pr.cfg.Endpoints[j] + "/videos/" + video + "/views"
}

// do sends one request and reads at most maxProbeResponseBytes of the answer.
func (pr *prober) do(ctx context.Context, method, url, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := pr.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxProbeResponseBytes))
	if err != nil {
		return 0, nil, err
	}
	io.Copy(io.Discard, res.Body) //nolint:errcheck // drain for keep-alive
	return res.StatusCode, raw, nil
}
