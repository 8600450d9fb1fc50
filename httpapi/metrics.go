package httpapi

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

// Metrics holds a node's Prometheus collectors in a registry of its own (no
// global state). It implements region.Observer: pass it in region.Config so
// the node reports group commits and ingest fates.
type Metrics struct {
	Registry *prometheus.Registry

	requests *prometheus.CounterVec   // by route, method, code
	latency  *prometheus.HistogramVec // by route, method
	// children caches the request counter and latency histogram of each
	// (route, method, code): WithLabelValues hashes its labels every time.
	childMu     sync.RWMutex
	children    map[requestLabels]requestChildren
	inflight    prometheus.Gauge
	ingested    *prometheus.CounterVec // by fate
	batchSize   prometheus.Histogram
	batchWaits  prometheus.Histogram
	fsync       prometheus.Histogram
	batchWrite  prometheus.Histogram
	batchErrors prometheus.Counter
	filtered    *prometheus.CounterVec // by reason: rate_limited, denied
	shed        *prometheus.CounterVec // by reason: see the shed* constants
	adminDenied prometheus.Counter

	// fates mirrors ingested, indexed by store.Fate, for the dashboard's
	// ingest rate (reading a Prometheus counter back is not its purpose).
	fates [store.FateReapplied + 1]atomic.Uint64
	// ingestedBy and filteredBy hold the children of ingested and filtered
	// made at start, by fate (nil for the others): Ingested runs once per
	// event, and WithLabelValues hashes its label every time.
	ingestedBy, filteredBy [store.FateReapplied + 1]prometheus.Counter
}

var _ region.Observer = (*Metrics)(nil)

// NewMetrics creates the collectors, with Go runtime and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_http_requests_total", Help: "HTTP requests answered, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tally_http_request_duration_seconds", Help: "HTTP request latency, by route template and method.",
			// 25µs .. ~4.6s, each bound √2 times the last: a p99 read off
			// the buckets is within a factor √2 (..., 6.4, 9.05, 12.8ms, ...).
			Buckets: prometheus.ExponentialBuckets(25e-6, math.Sqrt2, 36),
		}, []string{"route", "method"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tally_http_requests_in_flight", Help: "HTTP requests being answered now.",
		}),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_ingest_events_total", Help: "Events ingested, by fate: counted, duplicate (dedup), rate_limited.",
		}, []string{"fate"}),

		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tally_group_commit_batch_mutations", Help: "Badger entries written per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16),
		}),
		batchWaits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tally_group_commit_batch_requests", Help: "Ingest requests released per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tally_group_commit_fsync_seconds", Help: "Time of the fsync ending each group commit.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 18),
		}),
		batchWrite: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tally_group_commit_write_seconds", Help: "Time to hand each group commit to Badger, before fsync.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 18),
		}),
		batchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_group_commit_errors_total", Help: "Group commits that failed to persist.",
		}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_filtered_events_total", Help: "Events filtered as bots, logged and never counted, by reason: rate_limited (per-user or per-IP token bucket), denied (deny list).",
		}, []string{"reason"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_http_shed_total", Help: "Ingest requests shed with 503 or 429 and nothing counted, by the bound they hit: inflight_requests, inflight_bytes, client_inflight, commit_queue.",
		}, []string{"reason"}),
		adminDenied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_admin_auth_failures_total", Help: "Admin requests refused for a missing or wrong bearer token.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.inflight, m.ingested, m.batchSize, m.batchWaits, m.fsync, m.batchWrite, m.batchErrors,
		m.filtered, m.shed, m.adminDenied,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, f := range []store.Fate{store.FateCounted, store.FateDuplicate, store.FateRateLimited, store.FateDenied} {
		m.ingestedBy[f] = m.ingested.WithLabelValues(f.String())
	}
	for _, f := range []store.Fate{store.FateRateLimited, store.FateDenied} {
		m.filteredBy[f] = m.filtered.WithLabelValues(f.String())
	}
	for _, r := range []string{shedRequests, shedBytes, shedClient, shedCommitQueue} {
		m.shed.WithLabelValues(r)
	}
	return m
}

// requestLabels are the labels of one request's metrics.
type requestLabels struct {
	route, method string
	code          int
}

type requestChildren struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// observeRequest counts one answered request and its latency.
func (m *Metrics) observeRequest(route, method string, code int, seconds float64) {
	method = methodLabel(method)
	key := requestLabels{route, method, code}
	m.childMu.RLock()
	ch, ok := m.children[key]
	m.childMu.RUnlock()
	if !ok {
		ch = requestChildren{
			count:   m.requests.WithLabelValues(route, method, strconv.Itoa(code)),
			latency: m.latency.WithLabelValues(route, method),
		}
		m.childMu.Lock()
		if m.children == nil {
			m.children = make(map[requestLabels]requestChildren)
		}
		// Routes are templates and methods and codes few, so this stays small.
		m.children[key] = ch
		m.childMu.Unlock()
	}
	ch.count.Inc()
	ch.latency.Observe(seconds)
}

// methodLabel is method as a label value: a client may send any token as
// its method, and each distinct one would be a new series, so methods
// other than HTTP's own are counted as "other".
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "other"
}

// Batch implements region.Observer.
func (m *Metrics) Batch(st store.BatchStats) {
	if st.Err != nil {
		m.batchErrors.Inc()
		return
	}
	m.batchSize.Observe(float64(st.Mutations))
	m.batchWaits.Observe(float64(st.Tickets))
	if st.Mutations > 0 {
		m.fsync.Observe(st.Sync.Seconds())
		m.batchWrite.Observe(st.Write.Seconds())
	}
}

// Ingested implements region.Observer.
func (m *Metrics) Ingested(f store.Fate, n int) {
	var c prometheus.Counter
	if int(f) < len(m.fates) {
		c = m.ingestedBy[f]
		if fc := m.filteredBy[f]; fc != nil {
			fc.Add(float64(n))
		}
		m.fates[f].Add(uint64(n))
	}
	if c == nil { // a fate without a child made at start
		c = m.ingested.WithLabelValues(f.String())
	}
	c.Add(float64(n))
}

// ingestTotals returns the events ingested so far: counted, duplicate and
// rate limited.
func (m *Metrics) ingestTotals() (counted, duplicate, rateLimited uint64) {
	return m.fates[store.FateCounted].Load(), m.fates[store.FateDuplicate].Load(), m.fates[store.FateRateLimited].Load()
}

// registerNode adds gauges sampled from the node at scrape time.
func (m *Metrics) registerNode(n *region.Node, ready *readiness) {
	gauge := func(name, help string, f func(region.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(n.Stats()) })
	}
	id := n.Identity()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tally_node_info", Help: "Constant 1, labelled with the node's identity.",
		ConstLabels: prometheus.Labels{"region": n.Region(), "replica": id.Replica.String()},
	})
	info.Set(1)
	m.Registry.MustRegister(info, newClusterCollector(n),
		gauge("tally_counters_in_memory", "Counters (video, event) and their time buckets held in memory.", func(s region.Stats) float64 { return float64(s.Counters) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tally_counters_evicted_total",
			Help: "Counters evicted from memory since start, over --counter-cache: each is read back from disk on its next use.",
		}, func() float64 { return float64(n.CountersEvicted()) }),
		gauge("tally_claims_in_memory", "Dedup claim sets held in memory.", func(s region.Stats) float64 { return float64(s.Claims) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tally_claim_conflicts_lost_total",
			Help: "Claim conflicts this replica lost since start: another region counted the same (video, user, window) first, so this one took its view back.",
		}, func() float64 { return float64(n.Stats().Compensations) }),
		gauge("tally_rate_limit_buckets", "Rate-limit keys held in memory: token buckets, and first-seen records of keys seen once.", func(s region.Stats) float64 { return float64(s.RateBuckets) }),
		gauge("tally_badger_lsm_bytes", "Size of Badger's LSM tree on disk.", func(s region.Stats) float64 { return float64(s.StoreLSM) }),
		gauge("tally_badger_vlog_bytes", "Size of Badger's value log on disk.", func(s region.Stats) float64 { return float64(s.StoreValLog) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tally_expired_records_swept_total",
			Help: "Expired raw-event and claim-block records deleted from disk since start (records keyed by time, which compaction alone never reaches once they sit in the last level).",
		}, func() float64 { return float64(n.Stats().ExpiredSwept) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tally_ready", Help: "1 when GET /readyz answers 200 (state loaded, synced or alone, writes persist), else 0.",
		}, func() float64 {
			if ok, _ := ready.check(); ok {
				return 1
			}
			return 0
		}),
	)
}

// registerAdmission adds gauges of the ingest requests in flight.
func (m *Metrics) registerAdmission(a *admission) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tally_http_ingest_inflight_requests", Help: "Ingest requests admitted and not yet answered.",
		}, func() float64 { r, _ := a.inflight(); return float64(r) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tally_http_ingest_inflight_bytes", Help: "Estimated memory held by the ingest requests in flight (the shedding budget in use).",
		}, func() float64 { _, b := a.inflight(); return float64(b) }),
	)
}

// TransportStats are the cumulative counters of the replication transport
// (see replication/tcp.Stats).
type TransportStats struct {
	FramesSent, FramesReceived uint64
	BytesSent, BytesReceived   uint64
	Dropped                    uint64 // outbound frames dropped: queue full, circuit open, write failed
	DialFailures               uint64
	RejectedBadMAC             uint64 // inbound frames whose MAC did not verify (no secret, tampered)
	RejectedOversize           uint64 // inbound frames over the size limit
	RefusedConns               uint64 // inbound connections over the limit, or silent past the handshake timeout
}

// RegisterTransport exports the replication transport's counters, read from
// stats at scrape time. Call it at most once.
func (m *Metrics) RegisterTransport(stats func() TransportStats) {
	counter := func(name, help string, f func(TransportStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(stats())) })
	}
	m.Registry.MustRegister(
		counter("tally_replication_frames_sent_total", "Replication frames written to peers.", func(s TransportStats) uint64 { return s.FramesSent }),
		counter("tally_replication_frames_received_total", "Authenticated replication frames received.", func(s TransportStats) uint64 { return s.FramesReceived }),
		counter("tally_replication_frame_bytes_sent_total", "Bytes of replication frames written to peers.", func(s TransportStats) uint64 { return s.BytesSent }),
		counter("tally_replication_frame_bytes_received_total", "Bytes of authenticated replication frames received.", func(s TransportStats) uint64 { return s.BytesReceived }),
		counter("tally_replication_frames_dropped_total", "Outbound replication frames dropped (queue full, circuit open, write failed).", func(s TransportStats) uint64 { return s.Dropped }),
		counter("tally_replication_dial_failures_total", "Failed connection attempts to peers.", func(s TransportStats) uint64 { return s.DialFailures }),
		counter("tally_replication_connections_refused_total", "Inbound replication connections refused: over the connection limit, or no authenticated frame within the handshake timeout.", func(s TransportStats) uint64 { return s.RefusedConns }),
		&rejectedFrames{stats: stats, desc: prometheus.NewDesc("tally_replication_frames_rejected_total",
			"Inbound replication frames rejected, closing their connection, by reason: bad_mac (not signed with the cluster secret, or tampered), too_large.", []string{"reason"}, nil)},
	)
}

// rejectedFrames exports the rejected-frame counters under one name.
type rejectedFrames struct {
	stats func() TransportStats
	desc  *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (r *rejectedFrames) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

// Collect implements prometheus.Collector.
func (r *rejectedFrames) Collect(ch chan<- prometheus.Metric) {
	s := r.stats()
	ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(s.RejectedBadMAC), "bad_mac")
	ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(s.RejectedOversize), "too_large")
}
