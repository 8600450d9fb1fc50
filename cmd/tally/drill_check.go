package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// ledger is the drill's record of every fresh pair it sent, which of them
// were acknowledged and when, per video. Every fresh pair must end up
// counted exactly once, so a video's expected count is its number of pairs.
// It is safe for concurrent use.
type ledger struct {
	mu     sync.Mutex       // protects everything below
	pairs  map[viewKey]bool // acknowledged?
	videos map[string]*videoLog
}

// videoLog is one video's part of the ledger.
type videoLog struct {
	pairs int         // distinct fresh pairs sent
	acks  []time.Time // acknowledgement times, sorted
}

func newLedger() *ledger {
	return &ledger{pairs: map[viewKey]bool{}, videos: map[string]*videoLog{}}
}

func (l *ledger) video(v string) *videoLog {
	vl := l.videos[v]
	if vl == nil {
		vl = &videoLog{}
		l.videos[v] = vl
	}
	return vl
}

// sent records a fresh pair (once).
func (l *ledger) sent(k viewKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.pairs[k]; !ok {
		l.pairs[k] = false
		l.video(k.video).pairs++
	}
}

// ack records that pair k was acknowledged at at; later acks of the same
// pair (a resend answered duplicate) change nothing.
func (l *ledger) ack(k viewKey, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acked, known := l.pairs[k]
	if acked {
		return
	}
	vl := l.video(k.video)
	if !known {
		vl.pairs++
	}
	l.pairs[k] = true
	i := sort.Search(len(vl.acks), func(i int) bool { return vl.acks[i].After(at) })
	vl.acks = slices.Insert(vl.acks, i, at)
}

// unacked returns the pairs of videos not acknowledged yet.
func (l *ledger) unacked(videos []string) []viewKey {
	want := map[string]bool{}
	for _, v := range videos {
		want[v] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []viewKey
	for k, acked := range l.pairs {
		if !acked && want[k.video] {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b viewKey) int {
		if c := strings.Compare(a.video, b.video); c != 0 {
			return c
		}
		return strings.Compare(a.user, b.user)
	})
	return out
}

// expected is the number of distinct fresh pairs of video v: the count
// every node must show once all are acknowledged.
func (l *ledger) expected(v string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if vl := l.videos[v]; vl != nil {
		return uint64(vl.pairs)
	}
	return 0
}

// lag is how far behind the acknowledged views a node was that showed count
// views of video v at at: 0 if it showed every view acknowledged by then,
// else the age of the (count+1)-th acknowledgement — at least one of the
// first count+1 acknowledged views was missing, so the node lagged by at
// least that long.
func (l *ledger) lag(v string, count uint64, at time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	vl := l.videos[v]
	if vl == nil {
		return 0
	}
	known := sort.Search(len(vl.acks), func(i int) bool { return vl.acks[i].After(at) })
	if count >= uint64(known) {
		return 0
	}
	return at.Sub(vl.acks[count])
}

// ledgerEvents feeds a writer's events to the ledger (repeats are counted
// in writerStats).
type ledgerEvents struct{ led *ledger }

func (e *ledgerEvents) sent(k viewKey)                             { e.led.sent(k) }
func (e *ledgerEvents) acked(k viewKey, _ string, at time.Time)    { e.led.ack(k, at) }
func (e *ledgerEvents) repeated(_ viewKey, _ string, counted bool) {}

// ---------------------------------------------------------------------------
// Reading counts from every node
// ---------------------------------------------------------------------------

// countReader reads view counts straight from one node (never through the
// failover client: the drill wants to know what each node says).
type countReader struct {
	hc *http.Client
}

func newCountReader() *countReader {
	return &countReader{hc: &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, DisableCompression: true},
	}}
}

// read returns node's count of video.
func (r *countReader) read(ctx context.Context, node *clusterNode, video string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+node.HTTP+"/videos/"+url.PathEscape(video)+"/views", nil)
	if err != nil {
		return 0, err
	}
	res, err := r.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read %s from %s: %w", video, node.Name, err)
	}
	defer res.Body.Close() //nolint:errcheck // read-only
	var body struct {
		ViewCount *uint64 `json:"viewCount"`
	}
	err = json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&body)
	if res.StatusCode != http.StatusOK || err != nil || body.ViewCount == nil {
		return 0, fmt.Errorf("read %s from %s: status %d, body error %v", video, node.Name, res.StatusCode, err)
	}
	return *body.ViewCount, nil
}

// readAll reads every video from every node, nodes in parallel. A node that
// fails is missing from the answer.
func (r *countReader) readAll(ctx context.Context, nodes []*clusterNode, videos []string) map[*clusterNode]map[string]uint64 {
	var mu sync.Mutex
	out := map[*clusterNode]map[string]uint64{}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			counts := map[string]uint64{}
			for _, v := range videos {
				c, err := r.read(ctx, n, v)
				if err != nil {
					return
				}
				counts[v] = c
			}
			mu.Lock()
			out[n] = counts
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// get fetches path from node and decodes its JSON answer into v.
func (r *countReader) get(ctx context.Context, node *clusterNode, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+node.HTTP+path, nil)
	if err != nil {
		return err
	}
	res, err := r.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s on %s: %w", path, node.Name, err)
	}
	defer res.Body.Close() //nolint:errcheck // read-only
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: status %d", path, node.Name, res.StatusCode)
	}
	if v == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 4<<20)).Decode(v); err != nil {
		return fmt.Errorf("GET %s on %s: %w", path, node.Name, err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Staleness
// ---------------------------------------------------------------------------

// stalenessSampler polls every node for every video of a drill and keeps,
// per region, the longest time a node's count lagged the acknowledged
// count (ledger.lag). A node that does not answer (down, cut off) is not
// sampled; the lag shows on its first answer after it is back.
type stalenessSampler struct {
	led      *ledger
	reader   *countReader
	nodes    []*clusterNode
	videos   []string
	interval time.Duration

	mu      sync.Mutex // protects max and samples
	max     map[string]time.Duration
	samples int

	stop context.CancelFunc
	wg   sync.WaitGroup
}

func startSampler(ctx context.Context, led *ledger, reader *countReader, nodes []*clusterNode, videos []string, interval time.Duration) *stalenessSampler {
	s := &stalenessSampler{led: led, reader: reader, nodes: nodes, videos: videos, interval: interval, max: map[string]time.Duration{}}
	ctx, s.stop = context.WithCancel(ctx)
	for _, n := range nodes {
		s.wg.Go(func() { s.poll(ctx, n) })
	}
	return s
}

func (s *stalenessSampler) poll(ctx context.Context, n *clusterNode) {
	for ctx.Err() == nil {
		for _, v := range s.videos {
			at := time.Now()
			c, err := s.reader.read(ctx, n, v)
			if err != nil {
				break // down or cut off: try again next round
			}
			lag := s.led.lag(v, c, at)
			s.mu.Lock()
			s.samples++
			s.max[n.Region] = max(s.max[n.Region], lag)
			s.mu.Unlock()
		}
		pause(ctx, s.interval)
	}
}

// Stop ends the sampling and returns the largest lag seen and its region.
func (s *stalenessSampler) Stop() (time.Duration, string, int) {
	s.stop()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	var worst time.Duration
	region := "-"
	for _, r := range sortedKeys(s.max) {
		if s.max[r] > worst {
			worst, region = s.max[r], r
		}
	}
	return worst, region, s.samples
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ---------------------------------------------------------------------------
// Convergence
// ---------------------------------------------------------------------------

// convergence is the outcome of awaitConvergence.
type convergence struct {
	// Exact: every node showed exactly the expected count of every video.
	Exact bool
	// Agreed: every node showed the same counts, unchanged for the
	// stability period, but not the expected ones (views lost or doubled,
	// which no more replication would fix).
	Agreed bool
	// At is when the final state was first seen.
	At time.Time
	// Lost and Doubled sum, over videos, the largest shortfall and the
	// largest excess of any node against the expected count.
	Lost, Doubled int64
	// Detail describes the mismatches (empty when Exact).
	Detail string
	// Polls is the number of rounds of reads.
	Polls int
}

// awaitConvergence polls every node for every video until each shows the
// ledger's expected count (or all agree on other counts for stable), or until
// timeout; it then compares the last readings with the ledger.
func awaitConvergence(ctx context.Context, led *ledger, reader *countReader, nodes []*clusterNode, videos []string, timeout, stable time.Duration) convergence {
	deadline := time.Now().Add(timeout)
	var c convergence
	var last map[*clusterNode]map[string]uint64
	var agreedSince time.Time
	var agreedOn map[string]uint64
	for {
		c.Polls++
		read := reader.readAll(ctx, nodes, videos)
		last = read
		exact, agreed := len(read) == len(nodes), len(read) == len(nodes)
		var first map[string]uint64
		for _, n := range nodes {
			counts := read[n]
			if counts == nil {
				continue
			}
			if first == nil {
				first = counts
			}
			for _, v := range videos {
				if counts[v] != led.expected(v) {
					exact = false
				}
				if counts[v] != first[v] {
					agreed = false
				}
			}
		}
		now := time.Now()
		if exact {
			c.Exact, c.At = true, now
			break
		}
		switch {
		case !agreed:
			agreedSince, agreedOn = time.Time{}, nil
		case agreedOn == nil || !maps.Equal(agreedOn, first):
			agreedSince, agreedOn = now, first
		case now.Sub(agreedSince) >= stable:
			c.Agreed, c.At = true, agreedSince
		}
		if c.Agreed || ctx.Err() != nil || now.After(deadline) {
			break
		}
		pause(ctx, 100*time.Millisecond)
	}
	if c.At.IsZero() {
		c.At = time.Now()
	}
	var detail []string
	for _, v := range videos {
		want := led.expected(v)
		var short, excess int64
		for _, n := range nodes {
			counts, ok := last[n]
			if !ok {
				detail = appendDetail(detail, fmt.Sprintf("%s unreachable", n.Name))
				continue
			}
			got := counts[v]
			if got < want {
				short = max(short, int64(want-got))
			} else {
				excess = max(excess, int64(got-want))
			}
			if got != want {
				detail = appendDetail(detail, fmt.Sprintf("%s on %s: %d, want %d", v, n.Name, got, want))
			}
		}
		c.Lost += short
		c.Doubled += excess
	}
	if len(detail) > 0 {
		c.Detail = fmt.Sprint(detail)
	}
	return c
}

// appendDetail keeps the first few mismatches for the report.
func appendDetail(d []string, s string) []string {
	const keep = 6
	switch {
	case slices.Contains(d, s):
		return d
	case len(d) < keep:
		return append(d, s)
	case len(d) == keep:
		return append(d, "...")
	}
	return d
}
