package httpapi

import (
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

	requests    *prometheus.CounterVec   // by route, method, code
	latency     *prometheus.HistogramVec // by route, method
	inflight    prometheus.Gauge
	ingested    *prometheus.CounterVec // by fate
	batchSize   prometheus.Histogram
	batchWaits  prometheus.Histogram
	fsync       prometheus.Histogram
	batchWrite  prometheus.Histogram
	batchErrors prometheus.Counter

	// fates mirrors ingested, indexed by store.Fate, for the dashboard's
	// ingest rate (reading a Prometheus counter back is not its purpose).
	fates [store.FateRateLimited + 1]atomic.Uint64
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
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 18), // 25µs .. ~3.3s
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
	}
	reg.MustRegister(m.requests, m.latency, m.inflight, m.ingested, m.batchSize, m.batchWaits, m.fsync, m.batchWrite, m.batchErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, f := range []store.Fate{store.FateCounted, store.FateDuplicate, store.FateRateLimited} {
		m.ingested.WithLabelValues(f.String())
	}
	return m
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
func (m *Metrics) Ingested(f store.Fate) {
	m.ingested.WithLabelValues(f.String()).Inc()
	if int(f) < len(m.fates) {
		m.fates[f].Add(1)
	}
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
		gauge("tally_counters_in_memory", "Counters (video, event) held in memory.", func(s region.Stats) float64 { return float64(s.Counters) }),
		gauge("tally_claims_in_memory", "Dedup claim sets held in memory.", func(s region.Stats) float64 { return float64(s.Claims) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tally_claim_conflicts_lost_total",
			Help: "Claim conflicts this replica lost since start: another region counted the same (video, user, window) first, so this one took its view back.",
		}, func() float64 { return float64(n.Stats().Compensations) }),
		gauge("tally_rate_limit_buckets", "Rate-limit token buckets held in memory.", func(s region.Stats) float64 { return float64(s.RateBuckets) }),
		gauge("tally_badger_lsm_bytes", "Size of Badger's LSM tree on disk.", func(s region.Stats) float64 { return float64(s.StoreLSM) }),
		gauge("tally_badger_vlog_bytes", "Size of Badger's value log on disk.", func(s region.Stats) float64 { return float64(s.StoreValLog) }),
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
